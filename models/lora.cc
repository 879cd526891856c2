#include "models/lora.h"

#include <algorithm>
#include <cmath>

#include "core/config.h"
#include "models/tensor_map.h"

namespace tandem {

using detail::ConstMatMap;
using detail::MatMap;

Status LoraConfig::Validate() const {
  if (rank < 1 || rank > 4096) {
    return Status::InvalidArgument("lora rank must be in [1, 4096], got " + std::to_string(rank));
  }
  if (!(alpha > 0.0f) || !std::isfinite(alpha)) {
    return Status::InvalidArgument("lora alpha must be a finite number > 0");
  }
  static const std::vector<std::string> known = {"attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                 "mlp.c_proj"};
  if (targets.empty()) return Status::InvalidArgument("lora targets must not be empty");
  for (const auto& t : targets) {
    if (std::find(known.begin(), known.end(), t) == known.end()) {
      return Status::InvalidArgument("lora target '" + t +
                                     "' is not one of attn.c_attn, attn.c_proj, mlp.c_fc, "
                                     "mlp.c_proj");
    }
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || (i > 0 && layers[i] <= layers[i - 1])) {
      return Status::InvalidArgument("lora layers must be distinct non-negative block indices in "
                                     "ascending order");
    }
  }
  return Status::Ok();
}

bool LoraConfig::has_layer(int layer) const {
  return layers.empty() || std::binary_search(layers.begin(), layers.end(), layer);
}

StatusOr<LoraConfig> LoraConfigFromConfig(const Config& config, const std::string& prefix) {
  LoraConfig lora;
  TANDEM_ASSIGN_OR_RETURN(int64_t rank, config.GetInt(prefix + ".rank", lora.rank, 1, 4096));
  TANDEM_ASSIGN_OR_RETURN(double alpha, config.GetDouble(prefix + ".alpha", lora.alpha, 1e-6));
  TANDEM_ASSIGN_OR_RETURN(lora.targets, config.GetStringList(prefix + ".targets", lora.targets));
  lora.rank = static_cast<int>(rank);
  lora.alpha = static_cast<float>(alpha);
  Status s = lora.Validate();
  if (!s.ok()) return s.WithContext(config.source() + ": " + prefix);
  return lora;
}

void LoraForward(float* out, float* xa, const float* inp, const float* A, const float* B, int N,
                 int C, int r, int OC, float scale) {
  MatMap XA(xa, N, r);
  XA.noalias() = ConstMatMap(inp, N, C) * ConstMatMap(A, C, r);
  MatMap(out, N, OC).noalias() += scale * (XA * ConstMatMap(B, r, OC));
}

void LoraBackward(float* dinp, float* dA, float* dB, float* dxa, const float* dout,
                  const float* inp, const float* xa, const float* A, const float* B, int N, int C,
                  int r, int OC, float scale) {
  ConstMatMap dO(dout, N, OC);
  if (dB != nullptr) {
    MatMap(dB, r, OC).noalias() += scale * (ConstMatMap(xa, N, r).transpose() * dO);
  }
  MatMap dXA(dxa, N, r);
  dXA.noalias() = scale * (dO * ConstMatMap(B, r, OC).transpose());
  if (dA != nullptr) MatMap(dA, C, r).noalias() += ConstMatMap(inp, N, C).transpose() * dXA;
  if (dinp != nullptr) {
    MatMap(dinp, N, C).noalias() += dXA * ConstMatMap(A, C, r).transpose();
  }
}

void LoraMerge(float* w, const float* A, const float* B, int C, int r, int OC, float scale,
               float sign) {
  MatMap(w, C, OC).noalias() += (sign * scale) * (ConstMatMap(A, C, r) * ConstMatMap(B, r, OC));
}

}  // namespace tandem
