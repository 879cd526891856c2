// An algorithm that lives only in this test: FedSGD (the baseline of McMahan et al. 2017). Every
// round each client computes one gradient of the global model on one batch of its own data and
// uploads it as a contribution; the coordinator averages the gradients and takes one SGD step.
// It is registered at run time and runs through the real engine, the real client session and
// the privacy pipeline (secure aggregation) over ipc:// — without a line of the coordinator or
// client runtimes knowing it. docs/algorithms.md walks through this file.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "algorithms/common/task_parts.h"
#include "algorithms/registry.h"
#include "client/client.h"
#include "client/task_params.h"
#include "coordinator/aggregator.h"
#include "coordinator/coordinator.h"
#include "core/config.h"
#include "core/rng.h"
#include "models/gpt_checkpoint.h"
#include "tests/temp_dir.h"
#include "train/data_setup.h"
#include "train/evaluate.h"

namespace tandem {
namespace {

// ---- The task schema: both halves encode and decode through it. --------------------------------

constexpr char kStepTask[] = "fedsgd.step";

// "fedsgd.step": the global model's weights (EncodeWeights), the batch and the seed that fixes
// it. The result is the contribution "grad", weighted by the client's examples.
struct StepTask {
  int64_t batch = 8;
  uint64_t seed = 1;

  void Encode(wire::Params* params) const {
    (*params)["batch"] = batch;
    (*params)["seed"] = static_cast<int64_t>(seed & 0x7FFFFFFFFFFFFFFFULL);
  }
  static StatusOr<StepTask> Decode(const wire::Params& params) {
    StepTask task;
    TANDEM_ASSIGN_OR_RETURN(task.batch, IntParam(params, "batch", 1, 1024));
    TANDEM_ASSIGN_OR_RETURN(int64_t seed, IntParam(params, "seed", 0, INT64_MAX));
    task.seed = static_cast<uint64_t>(seed);
    return task;
  }
};

// ---- The client half. ----------------------------------------------------------------------------

class FedSgdClient : public TaskHandler {
 public:
  explicit FedSgdClient(ClientContext* context) : context_(context) {}
  std::vector<std::string> Capabilities() const override { return {kStepTask}; }
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override {
    if (task.kind != kStepTask) return Status::InvalidArgument("unknown task " + task.kind);
    TANDEM_ASSIGN_OR_RETURN(StepTask step, StepTask::Decode(task.params));
    Gpt& model = context_->global();
    TANDEM_RETURN_IF_ERROR(DecodeWeightsInto(task, &model));
    const int B = static_cast<int>(step.batch), T = model.config().context;
    TANDEM_ASSIGN_OR_RETURN(Batcher batcher, Batcher::Create(context_->train_tokens(), B, T));
    std::vector<int32_t> tokens(static_cast<size_t>(B) * T), targets(tokens.size());
    Rng rng = Rng(step.seed).Fork((static_cast<uint64_t>(context_->index()) << 32) ^ round);
    batcher.Next(&rng, tokens.data(), targets.data());
    model.ZeroGrad();
    const double loss = model.Forward(tokens.data(), targets.data(), B, T);
    model.Backward();
    const auto g = model.grads();
    result->tensors = {wire::Tensor::Float32("grad", {g.size()}, g)};
    result->weight = static_cast<double>(context_->data().train.size());
    result->metrics = {{"train_loss", loss}};
    return Status::Ok();
  }

 private:
  ClientContext* context_;
};

// ---- The coordinator half. -----------------------------------------------------------------------

class FedSgdServer : public ServerAlgorithm {
 public:
  FedSgdServer(std::unique_ptr<Gpt> model, double lr, int64_t batch, uint64_t seed,
               std::vector<Record> validation)
      : model_(std::move(model)), lr_(lr), batch_(batch), seed_(seed),
        validation_(std::move(validation)), sum_(model_->params().size()) {}

  std::string name() const override { return "fedsgd"; }
  std::vector<std::string> RequiredCapabilities() const override { return {kStepTask}; }
  StatusOr<TaskSpec> BeginRound(uint64_t, const std::vector<ClientInfo>&) override {
    AbortRound();
    TaskSpec spec;
    spec.kind = kStepTask;
    StepTask{batch_, seed_}.Encode(&spec.params);
    EncodeWeights(*model_, &spec.params, &spec.tensors);
    spec.contribution = ContributionSpec{"grad", model_->params().size()};
    return spec;
  }
  // Without the privacy pipeline the results arrive one by one.
  Status OnResult(const ClientInfo&, const wire::TaskResult& result) override {
    const wire::Tensor* grad = FindTensor(result.tensors, "grad");
    if (grad == nullptr || grad->dtype != wire::DType::kFloat32 ||
        grad->NumElements() != sum_.length()) {
      return Status::InvalidArgument("expected a tensor 'grad' of the model's size");
    }
    return sum_.Add(grad->ToFloat32(), result.weight);
  }
  // With it, their weighted mean arrives at once.
  Status OnAggregate(const Aggregate& aggregate) override {
    mean_ = aggregate.mean;
    return Status::Ok();
  }
  StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport&) override {
    if (mean_.empty()) {
      mean_.resize(sum_.length());
      TANDEM_RETURN_IF_ERROR(sum_.Mean(mean_));
    }
    auto p = model_->params();
    for (size_t i = 0; i < p.size(); ++i) p[i] -= static_cast<float>(lr_) * mean_[i];
    return std::optional<TaskSpec>();
  }
  void AbortRound() override {
    sum_.Reset();
    mean_.clear();
  }
  Status EndRound(uint64_t, std::map<std::string, double>* metrics) override {
    TANDEM_ASSIGN_OR_RETURN(double loss, HeldOutLoss(*model_, validation_, 16, 8192));
    (*metrics)["val_loss"] = loss;
    return Status::Ok();
  }
  void SaveState(std::map<std::string, std::vector<float>>* tensors,
                 std::map<std::string, std::string>*) const override {
    (*tensors)["fedsgd.params"] = {model_->params().begin(), model_->params().end()};
  }
  Status LoadState(const std::map<std::string, std::vector<float>>& tensors,
                   const std::map<std::string, std::string>&) override {
    auto it = tensors.find("fedsgd.params");
    if (it == tensors.end() || it->second.size() != model_->params().size()) {
      return Status::Corruption("no fedsgd.params of the model's size");
    }
    std::copy(it->second.begin(), it->second.end(), model_->params().begin());
    return Status::Ok();
  }
  std::vector<RunModel> Models() const override { return {{"model", model_.get(), true, ""}}; }

 private:
  std::unique_ptr<Gpt> model_;
  double lr_;
  int64_t batch_;
  uint64_t seed_;
  std::vector<Record> validation_;
  RunningSum sum_;
  std::vector<float> mean_;
};

// ---- Its registration: a name, its traits, its own config section, both halves. -----------------

Algorithm FedSgd() {
  Algorithm a;
  a.name = "fedsgd";
  a.summary = "one gradient per client a round, averaged; one SGD step on the coordinator";
  a.server.name = a.name;
  a.server.traits = [](const Config&) -> StatusOr<AlgorithmTraits> {
    return AlgorithmTraits{.averages_weights = true};
  };
  a.server.create = [](const ServerContext& context)
      -> StatusOr<std::unique_ptr<ServerAlgorithm>> {
    TANDEM_ASSIGN_OR_RETURN(double lr, context.config->GetDouble("fedsgd.lr", 0.5, 1e-6, 100.0));
    TANDEM_ASSIGN_OR_RETURN(int64_t batch, context.config->GetInt("fedsgd.batch", 8, 1, 1024));
    auto model = std::make_unique<Gpt>(context.model);
    model->InitWeights(context.seed);
    return std::unique_ptr<ServerAlgorithm>(std::make_unique<FedSgdServer>(
        std::move(model), lr, batch, context.seed, context.splits->validation));
  };
  a.client.name = a.name;
  a.client.create = [](ClientContext* context) -> StatusOr<std::unique_ptr<TaskHandler>> {
    return std::unique_ptr<TaskHandler>(std::make_unique<FedSgdClient>(context));
  };
  return a;
}

constexpr int kClients = 3;
constexpr int kRounds = 2;

std::string ConfigText(const std::string& out_dir) {
  return "name = \"fedsgd\"\nseed = 5\nout_dir = \"" + out_dir + "\"\n"
         "[model]\npreset = \"slm-micro\"\n"
         "[data]\nsource = \"fortunes\"\nvalidation_fraction = 0.05\ntest_fraction = 0.05\n"
         "[federation]\nclients = 3\ntransport = \"ipc\"\nrounds = 2\nround_deadline_s = 120\n"
         "heartbeat_ms = 200\npeer_timeout_ms = 5000\nwait_for_clients_s = 60\n"
         "[algorithm]\nname = \"fedsgd\"\n"
         "[fedsgd]\nlr = 0.5\nbatch = 4\n"
         "[privacy.secagg]\nenabled = true\nthreshold = 2\n";
}

class FedSgdTest : public testing::TempDirTest {};

TEST_F(FedSgdTest, RunsThroughTheRealEngineWithSecureAggregation) {
  ASSERT_TRUE(RegisterAlgorithm(FedSgd()).ok());
  EXPECT_FALSE(RegisterAlgorithm(FedSgd()).ok()) << "a name is registered once";
  auto parsed = Config::Parse(ConfigText(Path("runs")));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  const Config config = *parsed;
  auto algorithm = AlgorithmOf(config);
  ASSERT_TRUE(algorithm.ok()) << algorithm.status().ToString();

  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  std::vector<Status> client_status(kClients, Status::Ok());
  CoordinatorOptions options;
  options.on_bound = [&](const std::string& endpoint) {
    for (int k = 0; k < kClients; ++k) {
      clients.emplace_back([&, k, endpoint] {
        ClientOptions o;
        o.index = k;
        o.connect = endpoint;
        o.threads = 1;
        o.use_compute_slots = false;
        o.stop = &stop;
        client_status[k] = RunClient(config, (*algorithm)->client, o).status();
      });
    }
    return Status::Ok();
  };
  StatusOr<CoordinatorResult> result = RunCoordinator(config, (*algorithm)->server, options);
  stop = true;
  for (auto& t : clients) t.join();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  for (const Status& s : client_status) EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(result->rounds, static_cast<uint64_t>(kRounds));
  EXPECT_EQ(result->aborted_rounds, 0u);
  EXPECT_LT(result->final_val_loss, result->initial_val_loss - 0.05);

  // Every round ran secure aggregation's four steps.
  std::ifstream metrics(result->run_dir + "/metrics.jsonl");
  std::string line;
  int masked_rounds = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["round"].get<int>() > 0 && j.contains("bytes_up.secagg.mask")) ++masked_rounds;
  }
  EXPECT_EQ(masked_rounds, kRounds);

  // The model is what the algorithm says, computed here without the runtimes: each round the
  // examples-weighted mean of the clients' gradients, one step of lr. Secure aggregation's ring
  // is exact to 2^-32, so the two agree to float rounding.
  auto data = DataConfigFromConfig(config);
  ASSERT_TRUE(data.ok());
  Gpt expected(*ModelPreset("slm-micro"));
  expected.InitWeights(5);
  std::vector<std::unique_ptr<ClientContext>> contexts;
  for (int k = 0; k < kClients; ++k) {
    auto client_data = LoadClientData(config, k);
    ASSERT_TRUE(client_data.ok());
    contexts.push_back(std::make_unique<ClientContext>(k, expected.config(), *client_data,
                                                       std::vector<float>{}));
  }
  for (uint64_t round = 1; round <= kRounds; ++round) {
    TaskSpec spec;
    spec.kind = kStepTask;
    StepTask{4, 5}.Encode(&spec.params);
    EncodeWeights(expected, &spec.params, &spec.tensors);
    std::vector<double> sum(expected.params().size(), 0.0);
    double weights = 0.0;
    for (int k = 0; k < kClients; ++k) {
      FedSgdClient client(contexts[k].get());
      wire::TaskResult r;
      ASSERT_TRUE(client.Run(round, {spec.kind, spec.params, spec.tensors, 0}, &r).ok());
      const std::vector<float> g = r.tensors[0].ToFloat32();
      for (size_t i = 0; i < g.size(); ++i) sum[i] += r.weight * g[i];
      weights += r.weight;
    }
    auto p = expected.params();
    for (size_t i = 0; i < p.size(); ++i) p[i] -= 0.5f * static_cast<float>(sum[i] / weights);
  }
  auto trained = LoadGpt(result->run_dir + "/checkpoints/model.safetensors");
  ASSERT_TRUE(trained.ok()) << trained.status().ToString();
  double max_diff = 0.0, moved = 0.0;
  Gpt start(expected.config());
  start.InitWeights(5);
  for (size_t i = 0; i < expected.params().size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(double((*trained)->params()[i]) - expected.params()[i]));
    moved = std::max(moved, std::fabs(double(expected.params()[i]) - start.params()[i]));
  }
  EXPECT_GT(moved, 1e-3) << "the steps changed nothing";
  EXPECT_LT(max_diff, 1e-6) << "the run's model is not the one FedSGD defines";
}

}  // namespace
}  // namespace tandem
