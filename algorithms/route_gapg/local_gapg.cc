// One client's GAPG steps; see algorithms/route_gapg/local_gapg.h.
#include "algorithms/route_gapg/local_gapg.h"

#include <algorithm>

#include "data/batcher.h"
#include "models/tokenizer.h"
#include "route/handoff.h"
#include "route/policy_gradient.h"
#include "train/local_trainer.h"

namespace tandem {
namespace {

// Zeroes every gradient outside the policy's range, as the last term of a step: the trainer's
// AdamW then moves nothing else (weight decay is off when the range is not every parameter).
class PolicyRangeOnly : public LossTerm {
 public:
  explicit PolicyRangeOnly(ParamRange range) : range_(range) {}
  std::string name() const override { return "policy_range"; }
  void Bind(std::span<const float>, std::span<float> grads) override { grads_ = grads; }
  StatusOr<TermLoss> Accumulate(Gpt&, int64_t, Rng&) override {
    std::fill(grads_.begin(), grads_.begin() + range_.begin, 0.0f);
    std::fill(grads_.begin() + range_.end, grads_.end(), 0.0f);
    return TermLoss{};
  }

 private:
  ParamRange range_;
  std::span<float> grads_;
};

// The warm start's records: the client's prompts drawn with repetition, a fraction of them
// answered with the hand-off marker instead (route_run's warm start, on this client's prompts).
std::vector<Record> WarmStartRecords(std::span<const ArithmeticExample> train, double fraction,
                                     Rng& rng) {
  const size_t n = std::max<size_t>(2000, train.size() * 20);
  std::vector<Record> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const ArithmeticExample& e = train[rng.Below(train.size())];
    Record r = e.ToRecord();
    if (rng.Uniform() < fraction) r.text = e.prompt + std::string(kHandOffCompletion);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

ParamRange RoutePolicyRange(const Gpt& model, const std::string& trainable) {
  if (trainable == "all") return {0, model.params().size()};
  const TensorSpec* wte = model.layout().Find("wte.weight");
  TANDEM_CHECK(wte != nullptr);
  const size_t C = static_cast<size_t>(model.config().d_model);
  const size_t begin = wte->offset + static_cast<size_t>(kHandOffToken) * C;
  return {begin, begin + C};
}

Rng RouteGapgRng(uint64_t seed, uint64_t round, int client) {
  return Rng(seed ^ 0x524F555445ull).Fork(round).Fork(static_cast<uint64_t>(client));
}

StatusOr<LocalGapgReport> RunLocalGapg(Gpt& model, std::span<const ArithmeticExample> train,
                                       const RouteGapgTrainTask& task, CloudOracle& oracle,
                                       Rng& rng) {
  if (train.empty()) return Status::InvalidArgument("route-gapg: no training prompts");
  const GapgRewards rewards{task.answer_correct, task.handoff_correct};
  TANDEM_RETURN_IF_ERROR(rewards.Validate());
  const ParamRange range = RoutePolicyRange(model, task.trainable);
  TrainerOptions options;
  options.adamw.weight_decay = task.trainable == "marker" ? 0.0f : 0.1f;
  LocalTrainer trainer(&model, options);
  PolicyRangeOnly range_only(range);
  auto terms = [&](LossTerm* term) {
    std::vector<LossTerm*> t = {term};
    if (task.trainable != "all") t.push_back(&range_only);
    return t;
  };
  LocalGapgReport report;

  if (task.warm_start_steps > 0) {
    Rng records_rng = rng.Fork(0x5741524Dull);
    TANDEM_ASSIGN_OR_RETURN(
        Batcher batcher,
        Batcher::Create(TokenDataset::FromRecords(
                            WarmStartRecords(train, task.warm_start_handoff_fraction, records_rng)),
                        task.warm_start_batch, model.config().context));
    TextTerm warm(std::move(batcher), "warm");
    for (int64_t s = 0; s < task.warm_start_steps; ++s) {
      TANDEM_ASSIGN_OR_RETURN(std::vector<TermLoss> losses,
                              trainer.Step(terms(&warm), static_cast<float>(task.warm_start_lr),
                                           rng));
      report.warm_loss = losses[0].loss;
    }
  }

  SamplingOptions sampling;
  sampling.temperature = static_cast<float>(task.temperature);
  // The prompts the steps draw from: the filter's kept set (every training prompt without the
  // filter, or when it keeps none).
  std::vector<ArithmeticExample> kept(train.begin(), train.end());
  if (task.rho >= 0.0) {
    std::vector<PromptOutcome> outcomes;
    for (const auto& ex : train) {
      Rollout ro;
      ro.prompt = {ByteTokenizer::kEndOfText};
      ByteTokenizer::EncodeAppend(ex.prompt, &ro.prompt);
      for (int i = 0; i < task.group_size; ++i) {
        ro.completions.push_back(
            DecodeLine(model.shared_weights(), ro.prompt, task.max_tokens, sampling, rng));
      }
      outcomes.push_back({LocalCorrect(ro, ex), task.group_size});
    }
    TANDEM_ASSIGN_OR_RETURN(PromptFilterResult f,
                            AdaptivePromptFilter(train, outcomes, task.rho, oracle));
    report.kept_mixed = static_cast<int64_t>(f.mixed.size());
    report.kept_cloud_only = static_cast<int64_t>(f.cloud_only.size());
    if (!f.mixed.empty() || !f.cloud_only.empty()) {
      kept.clear();
      for (size_t i : f.Kept()) kept.push_back(train[i]);
    }
  }

  // The round's completions go through the cap in the order they are sampled.
  HandOffCap cap({task.budget, -1});
  double reward_sum = 0.0;
  int64_t handoffs = 0, local_correct = 0;
  RolloutSource source = [&](Gpt& m, int64_t, Rng& r) -> StatusOr<std::vector<Rollout>> {
    std::vector<Rollout> out;
    for (int p = 0; p < task.prompts_per_step; ++p) {
      const ArithmeticExample& ex = kept[r.Below(kept.size())];
      Rollout ro;
      ro.prompt = {ByteTokenizer::kEndOfText};
      ByteTokenizer::EncodeAppend(ex.prompt, &ro.prompt);
      if (static_cast<int>(ro.prompt.size()) + task.max_tokens > m.config().context) {
        return Status::InvalidArgument("route-gapg: prompt \"" + ex.prompt + "\" and " +
                                       std::to_string(task.max_tokens) +
                                       " new tokens do not fit the device's context");
      }
      for (int i = 0; i < task.group_size; ++i) {
        ro.completions.push_back(
            DecodeLine(m.shared_weights(), ro.prompt, task.max_tokens, sampling, r));
        const ParsedCompletion parsed =
            ParseCompletion(ByteTokenizer::Decode(ro.completions.back()));
        double reward = 0.0;
        const RouteDecision decision = cap.Decide(parsed);
        if (decision == RouteDecision::kHandOffRefused) {
          ++report.refused_handoffs;
        } else {
          TANDEM_ASSIGN_OR_RETURN(reward, GapgReward(parsed, ex, oracle, rewards));
        }
        handoffs += parsed.kind == CompletionKind::kHandOff;
        local_correct +=
            parsed.kind == CompletionKind::kAnswer && ExactMatch(parsed.answer, ex.answer);
        reward_sum += reward;
        ++report.completions;
        ro.rewards.push_back(reward);
      }
      out.push_back(std::move(ro));
    }
    return out;
  };
  PolicyGradientOptions pg_options;
  pg_options.mode = task.mode == "grpo" ? AdvantageMode::kGrpo : AdvantageMode::kGapg;
  PolicyGradientTerm pg(source, pg_options, 1.0f, task.mode);
  double loss_sum = 0.0;
  for (int64_t s = 0; s < task.local_steps; ++s) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<TermLoss> losses,
                            trainer.Step(terms(&pg), static_cast<float>(task.lr), rng));
    loss_sum += losses[0].loss;
  }
  report.steps = task.local_steps;
  if (report.completions > 0) {
    const double n = static_cast<double>(report.completions);
    report.mean_reward = reward_sum / n;
    report.handoff_rate = static_cast<double>(handoffs) / n;
    report.local_correct_rate = static_cast<double>(local_correct) / n;
  }
  if (task.local_steps > 0) report.pg_loss = loss_sum / static_cast<double>(task.local_steps);
  return report;
}

}  // namespace tandem
