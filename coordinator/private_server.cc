#include "coordinator/private_server.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/logging.h"
#include "core/timer.h"
#include "privacy/dp.h"
#include "privacy/fixed_point.h"

namespace tandem {
namespace {

constexpr const char* kSecAggTensor = "secagg";
constexpr const char* kMaskedTensor = "masked";
constexpr const char* kUnclippedMetric = "privacy.unclipped";
// The range clients accept for a clip norm (client/private_handler.cc).
constexpr double kMinClipNorm = 1e-9, kMaxClipNorm = 1e9;

std::string Exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

const wire::Tensor* FindTensor(const wire::TaskResult& result, const std::string& name) {
  for (const auto& t : result.tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

StatusOr<std::span<const uint8_t>> SecAggBytes(const wire::TaskResult& result) {
  const wire::Tensor* t = FindTensor(result, kSecAggTensor);
  if (t == nullptr || t->dtype != wire::DType::kUint8) {
    return Status::InvalidArgument("result has no u8 tensor 'secagg'");
  }
  return t->AsBytes();
}

}  // namespace

StatusOr<std::unique_ptr<PrivateServer>> PrivateServer::Create(
    std::unique_ptr<ServerAlgorithm> inner, PrivateServerOptions options) {
  TANDEM_RETURN_IF_ERROR(privacy::ValidatePrivacyConfig(options.privacy, options.shape));
  std::unique_ptr<PrivateServer> server(new PrivateServer(std::move(inner), std::move(options)));
  const privacy::DpConfig& dp = server->dp_;
  if (dp.enabled) {
    if (dp.noise == "distributed" && !server->secagg_.enabled) {
      return Status::InvalidArgument(
          "privacy.dp.noise = \"distributed\" needs privacy.secagg: without it the coordinator "
          "sees each upload with only a share of the noise");
    }
    server->sigma_ = dp.noise_multiplier;
    if (dp.target_epsilon > 0.0) {
      TANDEM_ASSIGN_OR_RETURN(server->sigma_,
                              privacy::CalibrateSigma(server->sampling_rate(),
                                                      server->options_.shape.rounds, dp.delta,
                                                      dp.target_epsilon));
    }
    server->update_sigma_ = server->sigma_;
    if (dp.adaptive_clipping) {
      server->bit_sigma_ = privacy::EffectiveBitNoise(dp, server->options_.shape.cohort);
      StatusOr<double> z = privacy::UpdateNoiseMultiplier(server->sigma_, server->bit_sigma_);
      if (!z.ok()) {
        return Status::InvalidArgument("privacy.dp.bit_noise_multiplier: " + z.status().message());
      }
      server->update_sigma_ = *z;
    }
  }
  // The noise key and run id of a fresh start; LoadState replaces both with the checkpoint's.
  std::optional<privacy::SecureRng::Key> fixed = server->options_.noise_key;
  if (!fixed) {
    TANDEM_ASSIGN_OR_RETURN(std::optional<privacy::SecureRng::Key> master,
                            privacy::ExperimentNoiseKey());
    if (master) {
      GetLogger("coordinator")->warn("noise keys derived from {}: reproducible, and removable by "
                                     "whoever knows that key", privacy::kExperimentNoiseKeyVariable);
      TANDEM_ASSIGN_OR_RETURN(fixed, privacy::DeriveKey(*master, "coordinator"));
      OPENSSL_cleanse(master->data(), master->size());
    }
  }
  if (fixed) {
    server->noise_key_ = *fixed;
    TANDEM_ASSIGN_OR_RETURN(privacy::SecureRng::Key run,
                            privacy::DeriveKey(*fixed, "run " + std::to_string(server->options_.seed)));
    std::copy_n(run.begin(), server->noise_run_.bytes.size(), server->noise_run_.bytes.begin());
    OPENSSL_cleanse(fixed->data(), fixed->size());
  } else {
    TANDEM_ASSIGN_OR_RETURN(server->noise_key_, privacy::RandomKey());
    TANDEM_ASSIGN_OR_RETURN(server->noise_run_, privacy::NoiseRunId::Random());
  }
  return server;
}

PrivateServer::PrivateServer(std::unique_ptr<ServerAlgorithm> inner, PrivateServerOptions options)
    : inner_(std::move(inner)),
      options_(std::move(options)),
      dp_(options_.privacy.dp),
      secagg_(options_.privacy.secagg),
      clip_norm_(options_.privacy.dp.clip_norm) {}

PrivateServer::~PrivateServer() { OPENSSL_cleanse(noise_key_.data(), noise_key_.size()); }

std::vector<std::string> PrivateServer::RequiredCapabilities() const {
  std::vector<std::string> caps = inner_->RequiredCapabilities();
  caps.push_back("privacy");
  if (secagg_.enabled) {
    for (const char* kind : {kSecAggAdvertise, kSecAggShare, kSecAggMask, kSecAggUnmask}) {
      caps.push_back(kind);
    }
  }
  return caps;
}

double PrivateServer::sampling_rate() const {
  if (options_.shape.clients <= 0) return 1.0;
  return std::min(1.0, static_cast<double>(options_.shape.cohort) /
                           static_cast<double>(options_.shape.clients));
}

double PrivateServer::epsilon() const {
  if (!dp_.enabled) return std::nan("");
  StatusOr<privacy::PrivacySpent> spent = accountant_.Spent(dp_.delta);
  return spent.ok() ? spent->epsilon : std::nan("");
}

size_t PrivateServer::EncodedLength() const {
  return contribution_->length + 1 + (dp_.enabled && dp_.adaptive_clipping ? 1 : 0);
}

void PrivateServer::ResetRound() {
  stage_ = Stage::kInner;
  contribution_.reset();
  contribution_report_ = TaskReport{};
  sum_.reset();
  bits_ = 0.0;
  secagg_server_.reset();
  outgoing_.clear();
}

void PrivateServer::AddPipelineParams(TaskSpec* spec) const {
  wire::Params& p = spec->params;
  p["privacy.contribution"] = spec->contribution->tensor;
  p["privacy.length"] = static_cast<int64_t>(spec->contribution->length);
  p["privacy.dp"] = static_cast<int64_t>(dp_.enabled);
  p["privacy.secagg"] = static_cast<int64_t>(secagg_.enabled);
  p["privacy.run"] = noise_run_.ToHex();
  if (dp_.enabled) {
    p["privacy.clip_norm"] = clip_norm_;
    p["privacy.adaptive"] = static_cast<int64_t>(dp_.adaptive_clipping);
    if (dp_.noise == "distributed") {
      // Any min_results contributions together carry the full noise (DESIGN.md "Privacy").
      const int64_t k = std::max<int64_t>(1, options_.shape.min_results);
      p["privacy.noise_stddev"] = privacy::DistributedNoiseStddev(update_sigma_, clip_norm_, k);
      if (dp_.adaptive_clipping) {
        p["privacy.bit_noise_stddev"] = bit_sigma_ / std::sqrt(static_cast<double>(k));
      }
    }
  }
  if (secagg_.enabled) {
    p["privacy.modulus_bits"] = static_cast<int64_t>(secagg_.modulus_bits);
    p["privacy.fraction_bits"] = static_cast<int64_t>(secagg_.fraction_bits);
    p["privacy.clip_range"] = secagg_.clip_range;
  }
}

StatusOr<TaskSpec> PrivateServer::BeginRound(uint64_t round,
                                             const std::vector<ClientInfo>& cohort) {
  ResetRound();
  ResetRoundMetrics();
  round_ = round;
  TANDEM_ASSIGN_OR_RETURN(TaskSpec spec, inner_->BeginRound(round, cohort));
  TANDEM_RETURN_IF_ERROR(Prepare(&spec));
  return spec;
}

bool PrivateServer::CustomizesTasks() const {
  return stage_ == Stage::kAdvertise || stage_ == Stage::kShare || stage_ == Stage::kMask ||
         stage_ == Stage::kUnmask || inner_->CustomizesTasks();
}

void PrivateServer::Customize(const ClientInfo& client, wire::TaskAssign* assign) {
  if (stage_ == Stage::kInner || stage_ == Stage::kContribution) {
    inner_->Customize(client, assign);
    return;
  }
  assign->params["secagg.id"] = client.name;
  if (auto it = outgoing_.find(client.name); it != outgoing_.end()) {
    assign->tensors.push_back(wire::Tensor::Bytes(kSecAggTensor, it->second));
  }
}

TaskSpec PrivateServer::SecAggTask(const char* kind,
                                   const std::vector<std::string>& members) const {
  const privacy::SecAggParams& sp = secagg_server_->params();
  TaskSpec spec;
  spec.kind = kind;
  spec.params["secagg.run_id"] = static_cast<int64_t>(sp.run_id);
  spec.params["secagg.round"] = static_cast<int64_t>(sp.round);
  spec.params["secagg.threshold"] = static_cast<int64_t>(sp.threshold);
  spec.params["secagg.modulus_bits"] = static_cast<int64_t>(sp.modulus_bits);
  spec.params["secagg.length"] = static_cast<int64_t>(sp.length);
  spec.params["secagg.neighbours"] = static_cast<int64_t>(sp.neighbours);
  spec.params["secagg.graph_seed"] = static_cast<int64_t>(sp.graph_seed);
  spec.members = members;
  return spec;
}

Status PrivateServer::OnResult(const ClientInfo& client, const wire::TaskResult& result) {
  switch (stage_) {
    case Stage::kInner:
      return inner_->OnResult(client, result);
    case Stage::kContribution: {
      if (secagg_.enabled) {
        // The client keeps its encoded contribution for secagg.mask; it only says it is ready.
        if (!result.tensors.empty()) {
          return Status::InvalidArgument("a contribution under secure aggregation is uploaded "
                                         "masked, not with the training result");
        }
        return Status::Ok();
      }
      // DP without secure aggregation: the coordinator is trusted with clipped updates and adds
      // the noise itself; it still enforces the clip, on which the sensitivity rests.
      const wire::Tensor* t = FindTensor(result, contribution_->tensor);
      if (t == nullptr || t->dtype != wire::DType::kFloat32 ||
          t->NumElements() != contribution_->length) {
        return Status::InvalidArgument("result has no f32 tensor '" + contribution_->tensor +
                                       "' of " + std::to_string(contribution_->length) + " values");
      }
      const std::vector<float> values = t->ToFloat32();
      double norm2 = 0.0;
      for (float v : values) norm2 += static_cast<double>(v) * v;
      // Clients clip with a margin of 2^-22 for float rounding; the sensitivity is C to 1e-9.
      if (std::sqrt(norm2) > clip_norm_ * (1.0 + 1e-9)) {
        return Status::InvalidArgument("contribution norm " + Exact(std::sqrt(norm2)) +
                                       " exceeds the clip norm " + Exact(clip_norm_));
      }
      double bit = 0.0;
      if (dp_.adaptive_clipping) {
        auto it = result.metrics.find(kUnclippedMetric);
        if (it == result.metrics.end() || (it->second != 0.0 && it->second != 1.0)) {
          return Status::InvalidArgument("result lacks the 0/1 metric privacy.unclipped");
        }
        bit = it->second;
      }
      if (!sum_) sum_.emplace(contribution_->length);
      TANDEM_RETURN_IF_ERROR(sum_->Add(values, 1.0));
      bits_ += bit - 0.5;
      return Status::Ok();
    }
    case Stage::kAdvertise: {
      TANDEM_ASSIGN_OR_RETURN(auto bytes, SecAggBytes(result));
      TANDEM_ASSIGN_OR_RETURN(auto message, privacy::AdvertiseKeys::Parse(bytes));
      return secagg_server_->OnAdvertise(client.name, message);
    }
    case Stage::kShare: {
      TANDEM_ASSIGN_OR_RETURN(auto bytes, SecAggBytes(result));
      TANDEM_ASSIGN_OR_RETURN(auto message, privacy::ShareKeysMessage::Parse(bytes));
      return secagg_server_->OnShareKeys(client.name, message);
    }
    case Stage::kMask: {
      const wire::Tensor* t = FindTensor(result, kMaskedTensor);
      const wire::DType want =
          secagg_.modulus_bits > 32 ? wire::DType::kUint64 : wire::DType::kUint32;
      if (t == nullptr || t->dtype != want) {
        return Status::InvalidArgument(std::string("result has no ") +
                                       std::string(wire::DTypeName(want)) + " tensor 'masked'");
      }
      if (want == wire::DType::kUint64) return secagg_server_->OnMaskedInput(client.name, t->ToUint64());
      const std::vector<uint32_t> narrow = t->ToUint32();
      return secagg_server_->OnMaskedInput(client.name,
                                           std::vector<uint64_t>(narrow.begin(), narrow.end()));
    }
    case Stage::kUnmask: {
      TANDEM_ASSIGN_OR_RETURN(auto bytes, SecAggBytes(result));
      TANDEM_ASSIGN_OR_RETURN(auto message, privacy::UnmaskResponse::Parse(bytes));
      return secagg_server_->OnUnmask(client.name, message);
    }
  }
  return Status::Internal("unknown stage");
}

StatusOr<std::optional<TaskSpec>> PrivateServer::OnTaskClosed(const TaskReport& report) {
  auto log = GetLogger("coordinator");
  Stopwatch watch;
  switch (stage_) {
    case Stage::kInner: {
      TANDEM_ASSIGN_OR_RETURN(std::optional<TaskSpec> next, inner_->OnTaskClosed(report));
      if (next) TANDEM_RETURN_IF_ERROR(Prepare(&*next));
      return next;
    }
    case Stage::kContribution: {
      contribution_report_ = report;
      if (!secagg_.enabled) {
        if (!sum_ || sum_->count() == 0) {
          return Status::FailedPrecondition("no contribution arrived");
        }
        std::vector<float> sum(contribution_->length);
        TANDEM_RETURN_IF_ERROR(sum_->Sum(sum));
        std::vector<double> encoded(sum.begin(), sum.end());
        encoded.push_back(static_cast<double>(sum_->count()));  // weights are all 1 under DP
        if (dp_.adaptive_clipping) encoded.push_back(bits_);
        sum_.reset();
        return Deliver(std::move(encoded), report.responded);
      }
      privacy::SecAggParams sp;
      sp.run_id = options_.run_id;
      sp.round = round_;
      sp.threshold = secagg_.threshold;
      sp.modulus_bits = secagg_.modulus_bits;
      sp.length = EncodedLength();
      sp.neighbours = secagg_.neighbours;
      sp.graph_seed = options_.seed;
      if (static_cast<int>(report.responded.size()) < secagg_.threshold) {
        return Status::Unavailable("secure aggregation needs " +
                                   std::to_string(secagg_.threshold) + " contributions, " +
                                   std::to_string(report.responded.size()) + " are ready");
      }
      TANDEM_ASSIGN_OR_RETURN(privacy::SecAggServer server,
                              privacy::SecAggServer::Create(sp, report.responded));
      secagg_server_.emplace(std::move(server));
      stage_ = Stage::kAdvertise;
      secagg_s_ += watch.Seconds();
      return std::optional<TaskSpec>(SecAggTask(kSecAggAdvertise, report.responded));
    }
    case Stage::kAdvertise: {
      TANDEM_RETURN_IF_ERROR(secagg_server_->CloseAdvertise());
      outgoing_.clear();
      for (const auto& id : secagg_server_->advertised()) {
        TANDEM_ASSIGN_OR_RETURN(privacy::KeyList keys, secagg_server_->KeyListFor(id));
        outgoing_[id] = keys.Serialize();
      }
      stage_ = Stage::kShare;
      secagg_s_ += watch.Seconds();
      return std::optional<TaskSpec>(SecAggTask(kSecAggShare, secagg_server_->advertised()));
    }
    case Stage::kShare: {
      TANDEM_RETURN_IF_ERROR(secagg_server_->CloseShareKeys());
      outgoing_.clear();
      for (const auto& id : secagg_server_->share_senders()) {
        TANDEM_ASSIGN_OR_RETURN(privacy::MaskedInputRequest request,
                                secagg_server_->MaskedInputRequestFor(id));
        outgoing_[id] = request.Serialize();
      }
      stage_ = Stage::kMask;
      secagg_s_ += watch.Seconds();
      return std::optional<TaskSpec>(SecAggTask(kSecAggMask, secagg_server_->share_senders()));
    }
    case Stage::kMask: {
      TANDEM_RETURN_IF_ERROR(secagg_server_->CloseMaskedInput());
      outgoing_.clear();
      for (const auto& id : secagg_server_->survivors()) {
        TANDEM_ASSIGN_OR_RETURN(privacy::UnmaskRequest request,
                                secagg_server_->UnmaskRequestFor(id));
        outgoing_[id] = request.Serialize();
      }
      if (!secagg_server_->dropped().empty()) {
        log->info("round {}: {} clients dropped after sharing keys; their masks are recovered "
                  "from shares", round_, secagg_server_->dropped().size());
      }
      stage_ = Stage::kUnmask;
      secagg_s_ += watch.Seconds();
      return std::optional<TaskSpec>(SecAggTask(kSecAggUnmask, secagg_server_->survivors()));
    }
    case Stage::kUnmask: {
      TANDEM_ASSIGN_OR_RETURN(std::vector<uint64_t> ring, secagg_server_->Finish());
      const std::vector<std::string> survivors = secagg_server_->survivors();
      privacy::FixedPointFormat format{secagg_.modulus_bits, secagg_.fraction_bits,
                                       secagg_.clip_range};
      std::vector<double> encoded(ring.size());
      for (size_t i = 0; i < ring.size(); ++i) {
        encoded[i] = privacy::DecodeFixedPoint(ring[i], format);
      }
      secagg_server_.reset();
      outgoing_.clear();
      secagg_s_ += watch.Seconds();
      return Deliver(std::move(encoded), survivors);
    }
  }
  return Status::Internal("unknown stage");
}

StatusOr<std::optional<TaskSpec>> PrivateServer::Deliver(
    std::vector<double> sum, const std::vector<std::string>& contributors) {
  const size_t m = contribution_->length;
  Aggregate aggregate;
  aggregate.count = contributors.size();
  aggregate.mean.resize(m);
  double next_clip = clip_norm_, unclipped = -1.0;
  if (dp_.enabled) {
    // The noise goes on the sum; dividing by the expected cohort size, fixed in advance, keeps
    // the sensitivity of the mean at C / cohort whoever dropped (McMahan et al. 2018).
    const bool central = dp_.noise == "central";
    const double stddev = update_sigma_ * clip_norm_;
    const double denominator = static_cast<double>(options_.shape.cohort);
    // Central noise is a function of (key, run, round, the sum): a round redone after a restart
    // adds the same noise to the same sum, and independent noise to any other sum.
    std::optional<privacy::SecureRng> rng;
    if (central) {
      TANDEM_ASSIGN_OR_RETURN(privacy::Key32 digest, privacy::SumDigest(contributors, sum));
      TANDEM_ASSIGN_OR_RETURN(privacy::SecureRng stream,
                              privacy::CentralNoiseStream(noise_key_, noise_run_, round_, digest));
      rng.emplace(std::move(stream));
    }
    for (size_t i = 0; i < m; ++i) {
      const double noisy = sum[i] + (central ? stddev * rng->Normal() : 0.0);
      aggregate.mean[i] = static_cast<float>(noisy / denominator);
    }
    aggregate.total_weight = denominator;
    if (dp_.adaptive_clipping) {
      // Bits are uploaded centred (b − ½), so the count's sensitivity is ½ (Andrew et al. §3.1).
      const double noisy_bits = sum[m + 1] + (central ? bit_sigma_ * rng->Normal() : 0.0);
      unclipped = noisy_bits / denominator + 0.5;
      // Kept within a range clients accept, however noisy the bit count.
      next_clip = std::clamp(
          privacy::NextClipNorm(clip_norm_, unclipped, dp_.target_quantile, dp_.clip_lr),
          kMinClipNorm, kMaxClipNorm);
    }
  } else {
    const double weight = sum[m];
    if (!(weight > 0.0)) return Status::FailedPrecondition("the contributions' total weight is 0");
    for (size_t i = 0; i < m; ++i) aggregate.mean[i] = static_cast<float>(sum[i] / weight);
    aggregate.total_weight = weight;
  }
  for (float v : aggregate.mean) {
    if (!std::isfinite(v)) return Status::OutOfRange("the aggregate is not finite");
  }
  TANDEM_RETURN_IF_ERROR(inner_->OnAggregate(aggregate));
  // The round's release happened: only now do its numbers and the next clip norm count.
  survivors_ = contributors.size();
  if (dp_.enabled && dp_.adaptive_clipping) clipped_fraction_ = 1.0 - unclipped;
  clip_norm_ = next_clip;
  ++contributions_;
  TaskReport report = contribution_report_;
  report.responded = contributors;  // under secure aggregation, the survivors
  stage_ = Stage::kInner;
  contribution_.reset();
  TANDEM_ASSIGN_OR_RETURN(std::optional<TaskSpec> next, inner_->OnTaskClosed(report));
  if (next) TANDEM_RETURN_IF_ERROR(Prepare(&*next));
  return next;
}

Status PrivateServer::Prepare(TaskSpec* spec) {
  if (!spec->contribution) return Status::Ok();
  if (contributions_ > 0 && dp_.enabled) {
    // The accountant counts one release of the sampled Gaussian mechanism per round.
    return Status::FailedPrecondition(inner_->name() + " asks for a second protected contribution "
                                      "in one round; differential privacy accounts one per round");
  }
  contribution_ = spec->contribution;
  stage_ = Stage::kContribution;
  AddPipelineParams(spec);
  return Status::Ok();
}

void PrivateServer::AbortRound() {
  inner_->AbortRound();
  ResetRound();
  ResetRoundMetrics();
}

void PrivateServer::ResetRoundMetrics() {
  clipped_fraction_ = -1.0;
  round_clip_norm_ = clip_norm_;
  survivors_ = 0;
  secagg_s_ = 0.0;
  contributions_ = 0;
}

Status PrivateServer::EndRound(uint64_t round, std::map<std::string, double>* metrics) {
  return inner_->EndRound(round, metrics);
}

void PrivateServer::AddRoundMetrics(std::map<std::string, double>* metrics) {
  inner_->AddRoundMetrics(metrics);
  if (dp_.enabled) {
    // Every round that sampled a cohort is one step of the sampled Gaussian mechanism, released
    // or not: counting aborted rounds over-states ε, never under-states it.
    accountant_.Step(sampling_rate(), sigma_);
    (*metrics)["epsilon"] = epsilon();
    (*metrics)["delta"] = dp_.delta;
    (*metrics)["noise_multiplier"] = sigma_;
    (*metrics)["clip_norm"] = round_clip_norm_;
    if (clipped_fraction_ >= -0.5) (*metrics)["clipped_fraction"] = clipped_fraction_;
  }
  if (secagg_.enabled) {
    (*metrics)["secagg_survivors"] = static_cast<double>(survivors_);
    (*metrics)["secagg_s"] = secagg_s_;
  }
  ResetRoundMetrics();
}

std::optional<std::string> PrivateServer::StopBeforeRound(uint64_t round) {
  if (!dp_.enabled || dp_.epsilon_budget <= 0.0) return std::nullopt;
  privacy::RdpAccountant next = accountant_;
  next.Step(sampling_rate(), sigma_);
  StatusOr<privacy::PrivacySpent> spent = next.Spent(dp_.delta);
  if (spent.ok() && spent->epsilon <= dp_.epsilon_budget) return std::nullopt;
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "the privacy budget: round %llu would spend epsilon %.4g > "
                "privacy.dp.epsilon_budget %.4g (spent so far %.4g at delta %g)",
                static_cast<unsigned long long>(round), spent.ok() ? spent->epsilon : INFINITY,
                dp_.epsilon_budget, epsilon(), dp_.delta);
  return std::string(buf);
}

void PrivateServer::SaveState(std::map<std::string, std::vector<float>>* tensors,
                              std::map<std::string, std::string>* metadata) const {
  inner_->SaveState(tensors, metadata);
  (*metadata)["privacy.noise_run"] = noise_run_.ToHex();
  // The coordinator's own secret, beside the model it protects: a resumed run must add the noise
  // the uninterrupted one would have (docs/privacy.md, "Restarts").
  if (dp_.enabled && dp_.noise == "central") {
    (*metadata)["privacy.noise_key"] = privacy::KeyToHex(noise_key_);
  }
  if (dp_.enabled) {
    (*metadata)["privacy.accountant"] = accountant_.SaveState();
    if (dp_.adaptive_clipping) (*metadata)["privacy.clip_norm"] = Exact(clip_norm_);
  }
}

Status PrivateServer::LoadState(const std::map<std::string, std::vector<float>>& tensors,
                                const std::map<std::string, std::string>& metadata) {
  double clip = clip_norm_;
  privacy::RdpAccountant accountant = accountant_;
  if (dp_.enabled) {
    auto a = metadata.find("privacy.accountant");
    if (a == metadata.end()) {
      return Status::InvalidArgument(
          "the checkpoint has no privacy accountant: it is from a run without DP, and resuming "
          "it with DP on would under-state ε");
    }
    TANDEM_RETURN_IF_ERROR(accountant.LoadState(a->second));
  }
  // The adaptive clip norm continues where it was; a fixed one is the config's.
  if (dp_.enabled && dp_.adaptive_clipping) {
    auto c = metadata.find("privacy.clip_norm");
    if (c == metadata.end()) {
      return Status::InvalidArgument("the checkpoint has no adaptive clip norm");
    }
    char* end = nullptr;
    clip = std::strtod(c->second.c_str(), &end);
    if (end == c->second.c_str() || *end != '\0' || !(clip > 0.0) || !std::isfinite(clip)) {
      return Status::InvalidArgument("checkpoint: privacy.clip_norm '" + c->second +
                                     "' is not a positive number");
    }
  }
  // A checkpoint from before noise run ids keeps the fresh ones: its rounds are not redone.
  privacy::NoiseRunId run = noise_run_;
  if (auto r = metadata.find("privacy.noise_run"); r != metadata.end()) {
    StatusOr<privacy::NoiseRunId> parsed = privacy::NoiseRunId::FromHex(r->second);
    if (!parsed.ok()) return parsed.status().WithContext("checkpoint: privacy.noise_run");
    run = *parsed;
  }
  privacy::SecureRng::Key key = noise_key_;
  // A checkpoint that has noise run ids keeps central noise's key beside them: without it, a
  // round redone after the restart would be noised afresh, which ε does not count.
  if (dp_.enabled && dp_.noise == "central" &&
      metadata.count("privacy.noise_run") != metadata.count("privacy.noise_key")) {
    return Status::InvalidArgument(
        "the checkpoint has one of the noise run id and the central noise key without the other");
  }
  if (auto k = metadata.find("privacy.noise_key"); k != metadata.end()) {
    StatusOr<privacy::SecureRng::Key> parsed = privacy::KeyFromHex(k->second);
    if (!parsed.ok()) return parsed.status().WithContext("checkpoint: privacy.noise_key");
    key = *parsed;
  }
  TANDEM_RETURN_IF_ERROR(inner_->LoadState(tensors, metadata));
  accountant_ = std::move(accountant);
  clip_norm_ = clip;
  noise_run_ = run;
  noise_key_ = key;
  OPENSSL_cleanse(key.data(), key.size());
  return Status::Ok();
}

}  // namespace tandem
