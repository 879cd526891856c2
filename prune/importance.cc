#include "prune/importance.h"

#include <cmath>

#include "core/rng.h"
#include "models/cross_entropy.h"
#include "models/gpt_workspace.h"

namespace tandem {
namespace {

using W = GptWeights;

ImportanceScores Zeros(const ModelConfig& c) {
  ImportanceScores s;
  for (int l = 0; l < c.n_layer; ++l) {
    s.heads.emplace_back(c.heads(l), 0.0);
    s.neurons.emplace_back(c.mlp_width(l), 0.0);
  }
  s.channels.assign(c.d_model, 0.0);
  s.blocks.assign(c.n_layer, 0.0);
  return s;
}

Status CheckCalibration(const CalibrationBatches& cal, const ModelConfig& c) {
  if (cal.batch < 1 || cal.context < 1 || cal.count() < 1 ||
      cal.tokens.size() != static_cast<size_t>(cal.count()) * cal.batch * cal.context ||
      cal.targets.size() != cal.tokens.size()) {
    return Status::InvalidArgument(
        "importance scores need calibration batches: at least one (batch, context) batch of "
        "tokens with as many targets");
  }
  if (cal.context > c.context) {
    return Status::InvalidArgument("calibration context " + std::to_string(cal.context) +
                                   " exceeds the model's context " + std::to_string(c.context));
  }
  for (size_t i = 0; i < cal.tokens.size(); ++i) {
    const int32_t t = cal.tokens[i], y = cal.targets[i];
    if (t < 0 || t >= c.vocab || (y != kIgnoreTarget && (y < 0 || y >= c.vocab))) {
      return Status::InvalidArgument("calibration token or target " + std::to_string(i) +
                                     " is outside the vocabulary [0, " +
                                     std::to_string(c.vocab) + ")");
    }
  }
  return Status::Ok();
}

// Minitron's activation scores and ShortGPT's block influence, from the activations each
// Forward leaves in the workspace.
ImportanceScores ActivationScores(std::shared_ptr<const GptWeights> weights,
                                  const CalibrationBatches& cal) {
  const ModelConfig& c = weights->config();
  GptWorkspace ws(weights);
  ImportanceScores s = Zeros(c);
  const int B = cal.batch, T = cal.context, N = B * T, C = c.d_model, HD = c.head_dim();
  for (int b = 0; b < cal.count(); ++b) {
    ws.Forward(cal.tokens.data() + static_cast<size_t>(b) * N, nullptr, B, T);
    for (int l = 0; l < c.n_layer; ++l) {
      const GptWorkspace::BlockActivations a = ws.block_activations(l);
      const int A = c.attn_width(l), M = c.mlp_width(l);
      for (int n = 0; n < N; ++n) {
        const float* atty = a.atty + static_cast<size_t>(n) * A;       // (A)
        const float* fch = a.fch_gelu + static_cast<size_t>(n) * M;    // (M)
        const float* ln1 = a.ln1 + static_cast<size_t>(n) * C;         // (C)
        const float* ln2 = a.ln2 + static_cast<size_t>(n) * C;         // (C)
        const float* in = a.input + static_cast<size_t>(n) * C;        // (C)
        const float* out = a.output + static_cast<size_t>(n) * C;      // (C)
        for (int i = 0; i < A; ++i) s.heads[l][i / HD] += std::fabs(atty[i]);
        for (int i = 0; i < M; ++i) s.neurons[l][i] += std::fabs(fch[i]);
        double dot = 0, nin = 0, nout = 0;
        for (int i = 0; i < C; ++i) {
          s.channels[i] += std::fabs(ln1[i]) + std::fabs(ln2[i]);
          dot += static_cast<double>(in[i]) * out[i];
          nin += static_cast<double>(in[i]) * in[i];
          nout += static_cast<double>(out[i]) * out[i];
        }
        const double denom = std::sqrt(nin * nout);
        s.blocks[l] += 1.0 - (denom > 0 ? dot / denom : 1.0);
      }
    }
  }
  const double tokens = static_cast<double>(cal.count()) * N;
  for (int l = 0; l < c.n_layer; ++l) {
    for (double& x : s.heads[l]) x /= tokens * HD;
    for (double& x : s.neurons[l]) x /= tokens;
    s.blocks[l] /= tokens;
  }
  for (double& x : s.channels) x /= tokens;
  return s;
}

// |w·g| per parameter, g the gradient of the mean loss over the calibration batches.
std::vector<double> TaylorValues(std::shared_ptr<const GptWeights> weights,
                                 const CalibrationBatches& cal) {
  GptWorkspace ws(weights);
  ws.set_trainable(Trainable::All(weights->layout()));
  ws.ZeroGrad();
  const size_t N = static_cast<size_t>(cal.batch) * cal.context;
  for (int b = 0; b < cal.count(); ++b) {
    ws.Forward(cal.tokens.data() + b * N, cal.targets.data() + b * N, cal.batch, cal.context);
    ws.Backward();
  }
  std::span<const float> w = weights->params();
  std::span<const float> g = ws.grads();
  std::vector<double> v(w.size());
  const double inv = 1.0 / cal.count();
  for (size_t i = 0; i < w.size(); ++i) v[i] = std::fabs(static_cast<double>(w[i]) * g[i] * inv);
  return v;
}

}  // namespace

StatusOr<ImportanceMethod> ParseImportanceMethod(const std::string& name) {
  if (name == "activation") return ImportanceMethod::kActivation;
  if (name == "taylor") return ImportanceMethod::kTaylor;
  if (name == "magnitude") return ImportanceMethod::kMagnitude;
  if (name == "random") return ImportanceMethod::kRandom;
  return Status::InvalidArgument("unknown importance method '" + name +
                                 "' (known: activation, taylor, magnitude, random)");
}

const char* ImportanceMethodName(ImportanceMethod method) {
  switch (method) {
    case ImportanceMethod::kActivation: return "activation";
    case ImportanceMethod::kTaylor: return "taylor";
    case ImportanceMethod::kMagnitude: return "magnitude";
    case ImportanceMethod::kRandom: return "random";
  }
  return "?";
}

bool ImportanceScores::Fits(const ModelConfig& c) const {
  if (static_cast<int>(heads.size()) != c.n_layer ||
      static_cast<int>(neurons.size()) != c.n_layer ||
      static_cast<int>(channels.size()) != c.d_model ||
      static_cast<int>(blocks.size()) != c.n_layer) {
    return false;
  }
  for (int l = 0; l < c.n_layer; ++l) {
    if (static_cast<int>(heads[l].size()) != c.heads(l) ||
        static_cast<int>(neurons[l].size()) != c.mlp_width(l)) {
      return false;
    }
  }
  return true;
}

ImportanceScores SumPerStructure(const GptWeights& weights, std::span<const double> value) {
  const ModelConfig& c = weights.config();
  TANDEM_CHECK(value.size() == weights.num_params());
  ImportanceScores s = Zeros(c);
  const int C = c.d_model, HD = c.head_dim();
  // A (rows, C) tensor whose columns are channels: wte, wpe.
  auto by_column = [&](size_t offset, size_t rows) {
    for (size_t r = 0; r < rows; ++r) {
      for (int j = 0; j < C; ++j) s.channels[j] += value[offset + r * C + j];
    }
  };
  auto by_channel = [&](size_t offset) {
    for (int j = 0; j < C; ++j) s.channels[j] += value[offset + j];
  };
  by_column(weights.wte_offset(), c.vocab);
  by_column(weights.wpe_offset(), c.context);
  by_channel(weights.lnf_w_offset());
  by_channel(weights.lnf_b_offset());
  for (int l = 0; l < c.n_layer; ++l) {
    const int A = c.attn_width(l), M = c.mlp_width(l);
    std::vector<double>& heads = s.heads[l];
    std::vector<double>& neurons = s.neurons[l];
    auto at = [&](int tensor) { return value.data() + weights.block_offset(l, tensor); };
    for (int t : {W::kLn1W, W::kLn1B, W::kLn2W, W::kLn2B, W::kProjB, W::kFcProjB}) {
      by_channel(weights.block_offset(l, t));
    }
    const double* qkv_w = at(W::kQkvW);  // (C,3A)
    for (int r = 0; r < C; ++r) {
      for (int col = 0; col < 3 * A; ++col) {
        const double v = qkv_w[static_cast<size_t>(r) * 3 * A + col];
        heads[(col % A) / HD] += v;
        s.channels[r] += v;
      }
    }
    const double* qkv_b = at(W::kQkvB);  // (3A)
    for (int col = 0; col < 3 * A; ++col) heads[(col % A) / HD] += qkv_b[col];
    const double* proj_w = at(W::kProjW);  // (A,C)
    for (int a = 0; a < A; ++a) {
      for (int j = 0; j < C; ++j) {
        const double v = proj_w[static_cast<size_t>(a) * C + j];
        heads[a / HD] += v;
        s.channels[j] += v;
      }
    }
    const double* fc_w = at(W::kFcW);  // (C,M)
    for (int r = 0; r < C; ++r) {
      for (int m = 0; m < M; ++m) {
        const double v = fc_w[static_cast<size_t>(r) * M + m];
        neurons[m] += v;
        s.channels[r] += v;
      }
    }
    const double* fc_b = at(W::kFcB);  // (M)
    for (int m = 0; m < M; ++m) neurons[m] += fc_b[m];
    const double* fcproj_w = at(W::kFcProjW);  // (M,C)
    for (int m = 0; m < M; ++m) {
      for (int j = 0; j < C; ++j) {
        const double v = fcproj_w[static_cast<size_t>(m) * C + j];
        neurons[m] += v;
        s.channels[j] += v;
      }
    }
    // The block's tensors are contiguous in the layout, from ln_1.weight to mlp.c_proj.bias.
    const size_t begin = weights.block_offset(l, W::kLn1W);
    const size_t end = weights.block_offset(l, W::kFcProjB) + c.d_model;
    for (size_t i = begin; i < end; ++i) s.blocks[l] += value[i];
  }
  return s;
}

StatusOr<ImportanceScores> ComputeImportance(std::shared_ptr<const GptWeights> weights,
                                             ImportanceMethod method,
                                             const CalibrationBatches& calibration,
                                             uint64_t seed) {
  TANDEM_CHECK(weights != nullptr);
  const ModelConfig& c = weights->config();
  if (weights->has_lora()) {
    return Status::FailedPrecondition(
        "importance scores need a model without LoRA adapters: merge them into the base first");
  }
  switch (method) {
    case ImportanceMethod::kActivation:
      TANDEM_RETURN_IF_ERROR(CheckCalibration(calibration, c));
      return ActivationScores(weights, calibration);
    case ImportanceMethod::kTaylor: {
      TANDEM_RETURN_IF_ERROR(CheckCalibration(calibration, c));
      const std::vector<double> v = TaylorValues(weights, calibration);
      return SumPerStructure(*weights, v);
    }
    case ImportanceMethod::kMagnitude: {
      std::span<const float> w = weights->params();
      std::vector<double> sq(w.size());
      for (size_t i = 0; i < w.size(); ++i) sq[i] = static_cast<double>(w[i]) * w[i];
      ImportanceScores s = SumPerStructure(*weights, sq);
      for (auto& layer : s.heads) for (double& x : layer) x = std::sqrt(x);
      for (auto& layer : s.neurons) for (double& x : layer) x = std::sqrt(x);
      for (double& x : s.channels) x = std::sqrt(x);
      for (double& x : s.blocks) x = std::sqrt(x);
      return s;
    }
    case ImportanceMethod::kRandom: {
      ImportanceScores s = Zeros(c);
      Rng rng(seed);
      for (auto& layer : s.heads) for (double& x : layer) x = rng.Uniform();
      for (auto& layer : s.neurons) for (double& x : layer) x = rng.Uniform();
      for (double& x : s.channels) x = rng.Uniform();
      for (double& x : s.blocks) x = rng.Uniform();
      return s;
    }
  }
  return Status::InvalidArgument("unknown importance method");
}

}  // namespace tandem
