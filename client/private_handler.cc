#include "client/private_handler.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>

#include "client/task_params.h"
#include "core/logging.h"
#include "privacy/dp.h"
#include "privacy/fixed_point.h"

namespace tandem {
namespace {

constexpr const char* kAdvertise = "secagg.advertise";
constexpr const char* kShare = "secagg.share";
constexpr const char* kMask = "secagg.mask";
constexpr const char* kUnmask = "secagg.unmask";

wire::Tensor* FindTensor(wire::TaskResult* result, const std::string& name) {
  for (auto& t : result->tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

StatusOr<std::span<const uint8_t>> Payload(const wire::TaskAssign& task) {
  for (const auto& t : task.tensors) {
    if (t.name == "secagg" && t.dtype == wire::DType::kUint8) return t.AsBytes();
  }
  return Status::InvalidArgument(task.kind + ": no u8 tensor 'secagg'");
}

StatusOr<privacy::SecAggParams> SecAggParamsOf(const wire::Params& p) {
  privacy::SecAggParams sp;
  TANDEM_ASSIGN_OR_RETURN(int64_t run, IntParam(p, "secagg.run_id", INT64_MIN, INT64_MAX));
  TANDEM_ASSIGN_OR_RETURN(int64_t round, IntParam(p, "secagg.round", 0, INT64_MAX));
  TANDEM_ASSIGN_OR_RETURN(int64_t t, IntParam(p, "secagg.threshold", 2, 65536));
  TANDEM_ASSIGN_OR_RETURN(int64_t bits, IntParam(p, "secagg.modulus_bits", 8, 64));
  TANDEM_ASSIGN_OR_RETURN(int64_t length,
                          IntParam(p, "secagg.length", 1, privacy::kSecAggMaxLength));
  TANDEM_ASSIGN_OR_RETURN(int64_t k, IntParam(p, "secagg.neighbours", 0, 65536));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, IntParam(p, "secagg.graph_seed", INT64_MIN, INT64_MAX));
  sp.run_id = static_cast<uint64_t>(run);
  sp.round = static_cast<uint64_t>(round);
  sp.threshold = static_cast<int>(t);
  sp.modulus_bits = static_cast<int>(bits);
  sp.length = static_cast<size_t>(length);
  sp.neighbours = static_cast<int>(k);
  sp.graph_seed = static_cast<uint64_t>(seed);
  return sp;
}

wire::Tensor BytesTensor(const privacy::Bytes& bytes) { return wire::Tensor::Bytes("secagg", bytes); }

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

void PutDouble(std::string* out, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  PutU64(out, bits);
}

void PutNames(std::string* out, std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  PutU64(out, names.size());
  for (const auto& n : names) {
    PutU64(out, n.size());
    *out += n;
  }
}

StatusOr<privacy::Key32> Digest(const std::string& bytes) {
  return privacy::Sha256(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

}  // namespace

PrivateTaskHandler::PrivateTaskHandler(TaskHandler* inner,
                                       std::optional<privacy::SecureRng::Key> noise_key)
    : inner_(inner), noise_key_(noise_key) {}

PrivateTaskHandler::~PrivateTaskHandler() {
  if (noise_key_) OPENSSL_cleanse(noise_key_->data(), noise_key_->size());
}

void PrivateTaskHandler::OnWelcome(uint32_t client_index) {
  client_index_ = client_index;
  inner_->OnWelcome(client_index);
}

StatusOr<privacy::SecureRng::Key> PrivateTaskHandler::NoiseKey() {
  if (noise_key_) return *noise_key_;
  TANDEM_ASSIGN_OR_RETURN(std::optional<privacy::SecureRng::Key> master,
                          privacy::ExperimentNoiseKey());
  if (master) {
    GetLogger("client")->warn("client {}: noise derived from {}: reproducible, and removable by "
                              "whoever knows that key", client_index_,
                              privacy::kExperimentNoiseKeyVariable);
    TANDEM_ASSIGN_OR_RETURN(noise_key_,
                            privacy::DeriveKey(*master, "client " + std::to_string(client_index_)));
    OPENSSL_cleanse(master->data(), master->size());
  } else {
    TANDEM_ASSIGN_OR_RETURN(noise_key_, privacy::RandomKey());
  }
  return *noise_key_;
}

Status PrivateTaskHandler::CheckOnce(std::deque<Seen>* seen, Seen entry, const std::string& what) {
  for (const Seen& s : *seen) {
    if (s.run == entry.run && s.round == entry.round && s.slot == entry.slot) {
      if (CRYPTO_memcmp(s.digest.data(), entry.digest.data(), entry.digest.size()) == 0) {
        return Status::Ok();  // a replay of exactly what was released: nothing new
      }
      return Status::FailedPrecondition(
          "round " + std::to_string(entry.round) + ": refused to " + what +
          " a second time with different inputs (a replayed round after a coordinator restart "
          "that differs from the first execution); releasing both would reveal more than one "
          "noised contribution (docs/privacy.md, \"Restarts\")");
    }
  }
  seen->push_back(std::move(entry));
  while (seen->size() > kSeenRounds) seen->pop_front();
  return Status::Ok();
}

std::vector<std::string> PrivateTaskHandler::Capabilities() const {
  std::vector<std::string> caps = inner_->Capabilities();
  caps.push_back("privacy");
  for (const char* kind : {kAdvertise, kShare, kMask, kUnmask}) caps.push_back(kind);
  return caps;
}

Status PrivateTaskHandler::Run(uint64_t round, const wire::TaskAssign& task,
                               wire::TaskResult* result) {
  if (round != round_) {
    // A new round: whatever an unfinished one left is dropped, keys and contribution alike.
    round_ = round;
    pending_.reset();
    secagg_.reset();
    contribution_run_.reset();
  }
  if (task.kind.rfind("secagg.", 0) == 0) return RunSecAgg(round, task, result);
  TANDEM_RETURN_IF_ERROR(inner_->Run(round, task, result));
  if (task.params.count("privacy.contribution")) return Protect(round, task, result);
  return Status::Ok();
}

Status PrivateTaskHandler::Protect(uint64_t round, const wire::TaskAssign& task,
                                   wire::TaskResult* result) {
  const wire::Params& p = task.params;
  TANDEM_ASSIGN_OR_RETURN(std::string name, StringParam(p, "privacy.contribution"));
  TANDEM_ASSIGN_OR_RETURN(int64_t length, IntParam(p, "privacy.length", 1, INT64_MAX));
  TANDEM_ASSIGN_OR_RETURN(int64_t dp, IntParam(p, "privacy.dp", 0, 1));
  TANDEM_ASSIGN_OR_RETURN(int64_t secagg, IntParam(p, "privacy.secagg", 0, 1));
  TANDEM_ASSIGN_OR_RETURN(std::string run_hex, StringParam(p, "privacy.run"));
  TANDEM_ASSIGN_OR_RETURN(privacy::NoiseRunId run, privacy::NoiseRunId::FromHex(run_hex));
  wire::Tensor* tensor = FindTensor(result, name);
  if (tensor == nullptr || tensor->dtype != wire::DType::kFloat32 ||
      tensor->NumElements() != static_cast<uint64_t>(length)) {
    return Status::Internal("the result has no f32 tensor '" + name + "' of " +
                            std::to_string(length) + " values to protect");
  }
  std::vector<float> values = tensor->ToFloat32();
  double weight = result->weight;
  bool adaptive = false;
  double unclipped = 1.0;
  if (dp) {
    TANDEM_ASSIGN_OR_RETURN(double clip, RealParam(p, "privacy.clip_norm", 1e-12, 1e12));
    TANDEM_ASSIGN_OR_RETURN(int64_t a, IntParam(p, "privacy.adaptive", 0, 1));
    adaptive = a != 0;
    TANDEM_ASSIGN_OR_RETURN(privacy::ClipResult clipped, privacy::ClipL2(values, clip));
    unclipped = clipped.clipped ? 0.0 : 1.0;
    weight = 1.0;  // every client counts alike, or the sensitivity would depend on its data
    if (p.count("privacy.noise_stddev")) {
      TANDEM_ASSIGN_OR_RETURN(double stddev, RealParam(p, "privacy.noise_stddev", 0.0, 1e12));
      double bit_stddev = 0.0;
      if (adaptive) {
        TANDEM_ASSIGN_OR_RETURN(bit_stddev, RealParam(p, "privacy.bit_noise_stddev", 0.0, 1e12));
      }
      // The noise is a function of (key, run, round, task): a replayed round gets the same noise,
      // so it must also be the same update, or the difference of the two would be noise-free.
      const std::string slot = task.kind + "/" + name;
      std::string released;
      PutU64(&released, values.size());
      for (float v : values) PutDouble(&released, v);
      PutDouble(&released, unclipped);
      PutDouble(&released, stddev);
      PutDouble(&released, bit_stddev);
      TANDEM_ASSIGN_OR_RETURN(privacy::Key32 digest, Digest(released));
      TANDEM_RETURN_IF_ERROR(CheckOnce(&noised_, {run, round, slot, digest}, "noise the update"));
      TANDEM_ASSIGN_OR_RETURN(privacy::SecureRng::Key key, NoiseKey());
      TANDEM_ASSIGN_OR_RETURN(privacy::SecureRng rng,
                              privacy::ClientNoiseStream(key, run, round, slot));
      OPENSSL_cleanse(key.data(), key.size());
      privacy::AddGaussianNoise(values, stddev, rng);
      if (adaptive) unclipped += bit_stddev * rng.Normal();
    }
  }
  // Only compute time travels in the clear: a client's own training loss is not protected.
  wire::Metrics metrics;
  if (auto it = result->metrics.find("compute_s"); it != result->metrics.end()) {
    metrics["compute_s"] = it->second;
  }
  if (!secagg) {
    *tensor = wire::Tensor::Float32(name, tensor->shape, values);
    result->weight = weight;
    if (adaptive) metrics["privacy.unclipped"] = unclipped;
    result->metrics = std::move(metrics);
    return Status::Ok();
  }
  TANDEM_ASSIGN_OR_RETURN(int64_t bits, IntParam(p, "privacy.modulus_bits", 8, 64));
  TANDEM_ASSIGN_OR_RETURN(int64_t frac, IntParam(p, "privacy.fraction_bits", 0, bits - 1));
  TANDEM_ASSIGN_OR_RETURN(double range, RealParam(p, "privacy.clip_range", 1e-12, 1e300));
  const privacy::FixedPointFormat format{static_cast<int>(bits), static_cast<int>(frac), range};
  TANDEM_RETURN_IF_ERROR(privacy::ValidateFixedPoint(format, 1));
  if (!(weight <= range)) {
    return Status::OutOfRange("weight " + std::to_string(weight) +
                              " exceeds privacy.secagg.clip_range " + std::to_string(range) +
                              ": the weighted mean would be wrong; raise clip_range");
  }
  // [w·x, w, (bit − ½)]: the weight and the adaptive-clipping bit ride in the same masked sum.
  std::vector<uint64_t> encoded(values.size() + 1 + (adaptive ? 1 : 0));
  const size_t clamped =
      privacy::EncodeFixedPoint(values, weight, format, std::span(encoded).first(values.size()));
  if (clamped > 0) {
    if (!dp) {
      // Without DP nothing bounds w·x but clip_range; a clamped mean would be silently wrong.
      return Status::OutOfRange(std::to_string(clamped) + " weighted values exceed ±" +
                                std::to_string(range) +
                                " (privacy.secagg.clip_range); raise it or lower the weights");
    }
    // Under DP the values are clipped to C and only noise can reach the range: clamping is
    // post-processing, and costs no privacy.
    GetLogger("client")->warn("round {}: {} noised coordinates beyond ±{} were clamped for secure "
                              "aggregation (privacy.secagg.clip_range)", round, clamped, range);
  }
  encoded[values.size()] = privacy::EncodeFixedPointScalar(weight, format);
  if (adaptive) encoded[values.size() + 1] = privacy::EncodeFixedPointScalar(unclipped - 0.5, format);
  pending_ = std::move(encoded);
  contribution_run_ = run;
  modulus_bits_ = static_cast<int>(bits);
  result->tensors.clear();
  result->weight = 0.0;
  result->metrics = std::move(metrics);
  return Status::Ok();
}

Status PrivateTaskHandler::RunSecAgg(uint64_t round, const wire::TaskAssign& task,
                                     wire::TaskResult* result) {
  result->tensors.clear();
  result->weight = 0.0;
  result->metrics.clear();
  if (task.kind == kAdvertise) {
    if (!pending_) return Status::FailedPrecondition("no contribution is waiting to be masked");
    TANDEM_ASSIGN_OR_RETURN(privacy::SecAggParams params, SecAggParamsOf(task.params));
    if (params.round != round) return Status::InvalidArgument("secagg.round is not this round");
    if (params.length != pending_->size()) {
      return Status::InvalidArgument("secagg.length " + std::to_string(params.length) +
                                     " is not the contribution's " +
                                     std::to_string(pending_->size()));
    }
    if (params.modulus_bits != modulus_bits_) {
      return Status::InvalidArgument("secagg.modulus_bits differs from the contribution's");
    }
    TANDEM_ASSIGN_OR_RETURN(std::string id, StringParam(task.params, "secagg.id"));
    TANDEM_ASSIGN_OR_RETURN(privacy::SecAggClient client,
                            privacy::SecAggClient::Create(params, id));
    TANDEM_ASSIGN_OR_RETURN(privacy::AdvertiseKeys keys, client.Advertise());
    secagg_.emplace(std::move(client));
    result->tensors.push_back(BytesTensor(keys.Serialize()));
    return Status::Ok();
  }
  if (!secagg_) return Status::FailedPrecondition(task.kind + " before secagg.advertise");
  TANDEM_ASSIGN_OR_RETURN(std::span<const uint8_t> payload, Payload(task));
  if (task.kind == kShare) {
    TANDEM_ASSIGN_OR_RETURN(privacy::KeyList keys, privacy::KeyList::Parse(payload));
    TANDEM_ASSIGN_OR_RETURN(privacy::ShareKeysMessage shares, secagg_->ShareKeys(keys));
    result->tensors.push_back(BytesTensor(shares.Serialize()));
    return Status::Ok();
  }
  if (task.kind == kMask) {
    if (!pending_) return Status::FailedPrecondition("no contribution is waiting to be masked");
    TANDEM_ASSIGN_OR_RETURN(privacy::MaskedInputRequest request,
                            privacy::MaskedInputRequest::Parse(payload));
    std::vector<uint64_t> masked = *pending_;
    TANDEM_RETURN_IF_ERROR(secagg_->MaskInput(request, masked));
    // Masked once: a second mask against other peers would leak it. The clear copy is wiped.
    std::fill(pending_->begin(), pending_->end(), 0);
    asm volatile("" : : "r"(pending_->data()) : "memory");
    pending_.reset();
    if (modulus_bits_ > 32) {
      result->tensors.push_back(wire::Tensor::Uint64("masked", {masked.size()}, masked));
    } else {
      const std::vector<uint32_t> narrow(masked.begin(), masked.end());
      result->tensors.push_back(wire::Tensor::Uint32("masked", {narrow.size()}, narrow));
    }
    return Status::Ok();
  }
  if (task.kind == kUnmask) {
    TANDEM_ASSIGN_OR_RETURN(privacy::UnmaskRequest request, privacy::UnmaskRequest::Parse(payload));
    // This round's masked input is the same in a replay (same update, same noise): helping to
    // unmask it into a second sum over other survivors would let the two sums be differenced
    // down to fewer contributions than the noise was sized for. So one split per round, ever.
    if (!contribution_run_) {
      return Status::FailedPrecondition("secagg.unmask without a contribution this round");
    }
    std::string split;
    PutNames(&split, request.survivors);
    PutNames(&split, request.dropped);
    TANDEM_ASSIGN_OR_RETURN(privacy::Key32 digest, Digest(split));
    TANDEM_RETURN_IF_ERROR(CheckOnce(&unmasked_, {*contribution_run_, round, "unmask", digest},
                                     "unmask the contribution"));
    TANDEM_ASSIGN_OR_RETURN(privacy::UnmaskResponse response, secagg_->Unmask(request));
    result->tensors.push_back(BytesTensor(response.Serialize()));
    return Status::Ok();
  }
  return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
}

}  // namespace tandem
