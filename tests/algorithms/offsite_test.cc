// offsite and fedbiot (algorithms/offsite, algorithms/fedbiot): the emulator is the LLM with its
// middle blocks dropped evenly (prune/plan.h EmulatorMap, tested in tests/prune); untouched adapters plugged back give the LLM bit for bit; a client
// trains the adapters alone, holds the emulator between rounds and refuses a task for a version it
// lacks, which the coordinator then sends again; averaged adapters plugged into the LLM lower its
// loss on the clients' data; fedbiot re-aligns the emulator before every round, lowering its
// distillation loss to the LLM, and sends each new version down. With LoRA adapters: untouched
// factors plugged back give the LLM bit for bit, a client's round changes only the factors,
// trained factors plugged back equal the LLM with them explicitly merged, far fewer floats move
// (the factor computed from the shapes), fedbiot+LoRA resumes bit for bit, and bad LoRA keys
// are refused when the config is read.
#include "algorithms/offsite/server.h"

#include <gtest/gtest.h>

#include "algorithms/offsite/emulator.h"
#include "algorithms/offsite/tasks.h"
#include "data/public_windows.h"
#include "distill/kd_terms.h"
#include "core/config.h"
#include "core/rng.h"
#include "tests/algorithms/halves_fixtures.h"

namespace tandem {
namespace {

using testing::Assign;
using testing::Copy;
using testing::Loss;
using testing::Micro;
using testing::SameBits;

// A four-block LLM: one adapter block at each end, two middle blocks of which the emulator keeps
// one.
ModelConfig FourBlocks() {
  ModelConfig c = Micro();
  c.n_layer = 4;
  return c;
}

std::string OffsiteConfigText(const std::string& section, const std::string& extra = "") {
  return "name = \"offsite\"\nseed = 5\n"
         "[client]\nlocal_steps = 4\nbatch = 4\nlr = 0.003\n"
         "[strategy]\nname = \"fedavg\"\n"
         "[" + section + "]\nbottom = 1\ntop = 1\nemulator_keep = 0.5\n" + extra +
         "[eval]\ntokens = 256\n";
}

class OffsiteTest : public testing::HalvesTest {
 protected:
  void Use(const std::string& section, const std::string& extra = "") {
    auto parsed = Config::Parse(OffsiteConfigText(section, extra));
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    config_ = std::make_unique<Config>(std::move(*parsed));
  }
  static ClientInfo Client(int k, const ServerAlgorithm& server) {
    return {"client-" + std::to_string(k), k, server.RequiredCapabilities()};
  }
  // One round with client-0 answering a delta of `delta` everywhere; the round's metrics.
  static std::map<std::string, double> RunRound(OffsiteServer& server, uint64_t round,
                                                float delta) {
    const ClientInfo a = Client(0, server);
    std::map<std::string, double> metrics;
    auto spec = server.BeginRound(round, {a});
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    if (!spec.ok()) return metrics;
    wire::TaskResult result;
    result.weight = 1.0;
    result.metrics["train_loss"] = 1.0;
    std::vector<float> d(spec->contribution->length, delta);
    result.tensors = {wire::Tensor::Float32("delta", {d.size()}, d)};
    EXPECT_TRUE(server.OnResult(a, result).ok());
    TaskReport report;
    report.assigned = report.responded = {a.name};
    EXPECT_TRUE(server.OnTaskClosed(report).ok());
    EXPECT_TRUE(server.EndRound(round, &metrics).ok());
    return metrics;
  }
};

TEST_F(OffsiteTest, UntouchedAdaptersPluggedBackGiveTheLlmBitForBit) {
  Use("offsite");
  auto made = Server("offsite", FourBlocks());
  ASSERT_TRUE(made);
  auto& server = dynamic_cast<OffsiteServer&>(*made);
  const std::vector<float> llm = Copy(server.llm().params());
  EXPECT_EQ(server.emulator().config().n_layer, 3);
  EXPECT_EQ(server.emulator_map().layers, (std::vector<int>{0, 2, 3}));
  // The emulator's blocks are the LLM's blocks it keeps, bit for bit.
  for (int child = 0; child < 3; ++child) {
    const int parent = server.emulator_map().layers[child];
    const float* e = server.emulator().param("h." + std::to_string(child) + ".mlp.c_fc.weight");
    const float* l = server.llm().param("h." + std::to_string(parent) + ".mlp.c_fc.weight");
    const size_t n = server.llm().layout().Find("h.0.mlp.c_fc.weight")->size;
    EXPECT_EQ(std::memcmp(e, l, n * sizeof(float)), 0) << "block " << child;
  }
  const ClientInfo a = Client(0, server), b = Client(1, server);
  auto spec = server.BeginRound(1, {a, b});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  const size_t adapters = spec->contribution->length;
  EXPECT_EQ(adapters, RangesSize(AdapterRanges(server.llm(), 1, 1)));
  for (const ClientInfo& c : {a, b}) {
    wire::TaskResult zero;
    zero.weight = 3.0;
    zero.metrics["train_loss"] = 2.0;
    std::vector<float> d(adapters, 0.0f);
    zero.tensors = {wire::Tensor::Float32("delta", {adapters}, d)};
    ASSERT_TRUE(server.OnResult(c, zero).ok());
  }
  TaskReport report;
  report.assigned = report.responded = {a.name, b.name};
  ASSERT_TRUE(server.OnTaskClosed(report).ok());
  EXPECT_TRUE(SameBits(Copy(server.llm().params()), llm));
}

TEST_F(OffsiteTest, AClientTrainsTheAdaptersAloneAndKeepsTheEmulator) {
  Use("offsite");
  auto made = Server("offsite", FourBlocks());
  auto& server = dynamic_cast<OffsiteServer&>(*made);
  const ClientInfo a = Client(0, server);
  auto spec = server.BeginRound(1, {a});
  ASSERT_TRUE(spec.ok());
  wire::TaskAssign first = Assign(*spec);
  server.Customize(a, &first);
  ASSERT_NE(FindTensor(first.tensors, "emulator"), nullptr) << "the first task carries it";
  auto context = Context(0, FourBlocks());
  auto handler = Handler("offsite", context.get());
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, first, &result).ok());
  ASSERT_EQ(result.tensors[0].NumElements(), spec->contribution->length);
  EXPECT_EQ(result.weight, static_cast<double>(context->data().train.size()));
  // The emulator's middle block did not train; its adapters did.
  Gpt& emulator = context->model("emulator " + server.emulator().config().ToString(), nullptr);
  const size_t n = emulator.layout().Find("h.1.attn.c_attn.weight")->size;
  EXPECT_EQ(std::memcmp(emulator.param("h.1.attn.c_attn.weight"),
                        server.emulator().param("h.1.attn.c_attn.weight"), n * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(emulator.param("h.0.attn.c_attn.weight"),
                        server.emulator().param("h.0.attn.c_attn.weight"), n * sizeof(float)), 0);
  ASSERT_TRUE(server.OnResult(a, result).ok());
  TaskReport report;
  report.assigned = report.responded = {a.name};
  ASSERT_TRUE(server.OnTaskClosed(report).ok());

  // Round 2: the same client is not sent the emulator again, and trains from what it holds.
  const ClientInfo b = Client(1, server);
  auto spec2 = server.BeginRound(2, {a, b});
  ASSERT_TRUE(spec2.ok());
  wire::TaskAssign to_a = Assign(*spec2), to_b = Assign(*spec2);
  server.Customize(a, &to_a);
  server.Customize(b, &to_b);
  EXPECT_EQ(FindTensor(to_a.tensors, "emulator"), nullptr);
  ASSERT_NE(FindTensor(to_b.tensors, "emulator"), nullptr);
  EXPECT_TRUE(handler->Run(2, to_a, &result).ok());
  // A client that lost its emulator (a restarted process) refuses a task without it...
  auto fresh_context = Context(0, FourBlocks());
  auto fresh = Handler("offsite", fresh_context.get());
  Status refused = fresh->Run(2, to_a, &result);
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition) << refused.ToString();
  // ...and the coordinator sends it again to whoever did not answer.
  report.assigned = {a.name, b.name};
  report.responded = {b.name};
  ASSERT_TRUE(server.OnResult(b, [&] {
                wire::TaskResult r;
                auto ctx = Context(1, FourBlocks());
                auto h = Handler("offsite", ctx.get());
                EXPECT_TRUE(h->Run(2, to_b, &r).ok());
                return r;
              }())
                  .ok());
  ASSERT_TRUE(server.OnTaskClosed(report).ok());
  auto spec3 = server.BeginRound(3, {a});
  ASSERT_TRUE(spec3.ok());
  wire::TaskAssign again = Assign(*spec3);
  server.Customize(a, &again);
  EXPECT_NE(FindTensor(again.tensors, "emulator"), nullptr);
}

TEST_F(OffsiteTest, PluggedBackAdaptersLowerTheLlmsLossOnTheClientsData) {
  Use("offsite", "");
  auto made = Server("offsite", FourBlocks());
  auto& server = dynamic_cast<OffsiteServer&>(*made);
  auto context0 = Context(0, FourBlocks()), context1 = Context(1, FourBlocks());
  std::vector<Record> both = context0->data().train;
  for (const Record& r : context1->data().train) both.push_back(r);
  const double before = Loss(server.llm(), both);
  // Handlers live as long as their client (they remember the emulator version they hold).
  auto handler0 = Handler("offsite", context0.get()), handler1 = Handler("offsite", context1.get());
  for (uint64_t round = 1; round <= 3; ++round) {
    const ClientInfo a = Client(0, server), b = Client(1, server);
    auto spec = server.BeginRound(round, {a, b});
    ASSERT_TRUE(spec.ok());
    TaskReport report;
    for (auto [client, handler] : {std::pair{a, handler0.get()}, std::pair{b, handler1.get()}}) {
      wire::TaskAssign task = Assign(*spec);
      server.Customize(client, &task);
      wire::TaskResult result;
      ASSERT_TRUE(handler->Run(round, task, &result).ok());
      ASSERT_TRUE(server.OnResult(client, result).ok());
      report.assigned.push_back(client.name);
      report.responded.push_back(client.name);
    }
    ASSERT_TRUE(server.OnTaskClosed(report).ok());
  }
  const double after = Loss(server.llm(), both);
  EXPECT_LT(after, before - 0.05) << "before " << before << ", after " << after;
}

TEST_F(OffsiteTest, FedBiOTRealignsTheEmulatorBeforeEveryRound) {
  Use("fedbiot", "server_steps = 4\nwindows = 4\nserver_batch = 2\nserver_lr = 0.003\n"
                 "proximal_mu = 0.1\n");
  auto made = Server("fedbiot", FourBlocks());
  ASSERT_TRUE(made);
  auto& server = dynamic_cast<OffsiteServer&>(*made);
  const std::vector<float> cut = Copy(server.emulator().params());
  const ClientInfo a = Client(0, server);
  for (uint64_t round = 1; round <= 2; ++round) {
    auto spec = server.BeginRound(round, {a});
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    EXPECT_EQ(server.emulator_version(), static_cast<int64_t>(round));
    auto task = OffsiteTrainTask::Decode(spec->params);
    ASSERT_TRUE(task.ok());
    EXPECT_EQ(task->proximal_mu, 0.1);
    wire::TaskAssign assign = Assign(*spec);
    server.Customize(a, &assign);
    EXPECT_NE(FindTensor(assign.tensors, "emulator"), nullptr) << "every new version goes down";
    std::map<std::string, double> metrics;
    wire::TaskResult zero;
    zero.weight = 1.0;
    zero.metrics["train_loss"] = 1.0;
    std::vector<float> d(spec->contribution->length, 0.0f);
    zero.tensors = {wire::Tensor::Float32("delta", {d.size()}, d)};
    ASSERT_TRUE(server.OnResult(a, zero).ok());
    TaskReport report;
    report.assigned = report.responded = {a.name};
    ASSERT_TRUE(server.OnTaskClosed(report).ok());
    ASSERT_TRUE(server.EndRound(round, &metrics).ok());
    ASSERT_TRUE(metrics.count("emulator_kd_loss_before") && metrics.count("emulator_kd_loss_after"));
    EXPECT_LT(metrics["emulator_kd_loss_after"], metrics["emulator_kd_loss_before"]);
    // The hidden-state term is on by default and falls too.
    ASSERT_TRUE(metrics.count("emulator_hidden_loss_before") &&
                metrics.count("emulator_hidden_loss_after"));
    EXPECT_GT(metrics["emulator_hidden_loss_before"], 0.0);
    EXPECT_LT(metrics["emulator_hidden_loss_after"], metrics["emulator_hidden_loss_before"]);
  }
  EXPECT_FALSE(SameBits(Copy(server.emulator().params()), cut));
}

// fedbiot's re-alignment keeps its AdamW across rounds, in the checkpoint: a server restored
// after round 1 re-aligns in round 2 to the same bits as one that never stopped; a checkpoint
// without the optimiser is refused and changes nothing.
TEST_F(OffsiteTest, FedBiOTResumesItsAlignmentBitForBit) {
  Use("fedbiot", "server_steps = 3\nwindows = 4\nserver_batch = 2\nserver_lr = 0.003\n");
  auto round = [&](OffsiteServer& server, uint64_t r) { RunRound(server, r, 0.01f); };
  auto made = Server("fedbiot", FourBlocks());
  ASSERT_TRUE(made);
  auto& straight = dynamic_cast<OffsiteServer&>(*made);
  round(straight, 1);
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> metadata;
  straight.SaveState(&tensors, &metadata);
  ASSERT_TRUE(tensors.count("emulator_optimizer.adam_m"));
  round(straight, 2);

  auto again = Server("fedbiot", FourBlocks());
  ASSERT_TRUE(again);
  auto& resumed = dynamic_cast<OffsiteServer&>(*again);
  const std::vector<float> fresh = Copy(resumed.emulator().params());
  auto without = tensors;
  without.erase("emulator_optimizer.adam_v");
  EXPECT_FALSE(resumed.LoadState(without, metadata).ok());
  EXPECT_TRUE(SameBits(Copy(resumed.emulator().params()), fresh)) << "a refused load changed it";
  ASSERT_TRUE(resumed.LoadState(tensors, metadata).ok());
  round(resumed, 2);
  EXPECT_TRUE(SameBits(Copy(resumed.emulator().params()), Copy(straight.emulator().params())));
  EXPECT_TRUE(SameBits(Copy(resumed.llm().params()), Copy(straight.llm().params())));
}

// The hidden-state term pulls the emulator's middle toward the LLM's: after the same steps its
// normalized distance is smaller than with KD on logits alone, which does not report it.
// offsite distils its emulator once: the alignment's figures are in round 1's metrics only.
TEST_F(OffsiteTest, OffsiteReportsItsOneAlignmentInTheFirstRoundOnly) {
  Use("offsite", "server_steps = 2\nwindows = 4\nserver_batch = 2\n");
  auto made = Server("offsite", FourBlocks());
  ASSERT_TRUE(made);
  auto& server = dynamic_cast<OffsiteServer&>(*made);
  for (uint64_t round = 1; round <= 2; ++round) {
    std::map<std::string, double> metrics = RunRound(server, round, 0.0f);
    EXPECT_EQ(metrics.count("emulator_kd_loss_after"), round == 1 ? 1u : 0u) << "round " << round;
    EXPECT_EQ(metrics["emulator_version"], 1.0);
  }
}

TEST_F(OffsiteTest, HiddenStateMatchingAlignsTheMiddlesOutput) {
  auto distance = [&](double hidden_weight) {
    Use("offsite", "server_steps = 6\nwindows = 4\nserver_batch = 2\nserver_lr = 0.003\n"
                   "hidden_weight = " + std::to_string(hidden_weight) + "\n");
    auto made = Server("offsite", FourBlocks());
    EXPECT_TRUE(made);
    auto& server = dynamic_cast<OffsiteServer&>(*made);
    EXPECT_TRUE(server.BeginRound(1, {Client(0, server)}).ok());
    // Measured the same way for both: a term of weight 1 on the aligned emulator.
    const TokenDataset text = TokenDataset::FromRecords(splits_.public_);
    auto windows = PublicWindows::Create(
        text, PublicWindows::Draw(text.size(), server.llm().config().context, 4, 9, 1),
        server.llm().config().context);
    EXPECT_TRUE(windows.ok());
    HiddenMatch match;
    match.layers = {{server.emulator().config().n_layer - 2, server.llm().config().n_layer - 2}};
    match.weight = 1.0f;
    DenseDistillTerm probe(*windows, &server.llm(), KdOptions{}, 2, match);
    double hidden = 0.0;
    probe.MeanLoss(server.emulator(), &hidden);
    return hidden;
  };
  const double with = distance(1.0), without = distance(0.0);
  EXPECT_LT(with, 0.8 * without) << "with " << with << ", without " << without;
}

// ---- LoRA adapters (<section>.adapters = "lora") -------------------------------------------

constexpr char kLora[] = "adapters = \"lora\"\nlora.rank = 2\nlora.alpha = 4.0\n";

// The LoRA factors' floats on the adapter blocks of `c` (bottom = top = 1), from the shapes:
// A (in,r) and B (r,out) of the four linears of each block.
size_t ExpectedLoraFloats(const ModelConfig& c, int rank) {
  size_t n = 0;
  for (int l : {0, c.n_layer - 1}) {
    const size_t C = c.d_model, A = c.attn_width(l), M = c.mlp_width(l);
    n += rank * ((C + 3 * A) + (A + C) + (C + M) + (M + C));
  }
  return n;
}

// The full adapters' floats: every tensor of the two adapter blocks.
size_t ExpectedBlockFloats(const ModelConfig& c) {
  size_t n = 0;
  for (int l : {0, c.n_layer - 1}) {
    const size_t C = c.d_model, A = c.attn_width(l), M = c.mlp_width(l);
    n += 4 * C + (C * 3 * A + 3 * A) + (A * C + C) + (C * M + M) + (M * C + C);
  }
  return n;
}

TEST_F(OffsiteTest, UntouchedLoraPluggedBackGivesTheLlmBitForBit) {
  Use("offsite", kLora);
  auto made = Server("offsite", FourBlocks());
  ASSERT_TRUE(made);
  auto& server = dynamic_cast<OffsiteServer&>(*made);
  const std::vector<float> llm = Copy(server.llm().params());
  const std::vector<float> emulator = Copy(server.emulator().params());
  ASSERT_TRUE(server.emulator().has_lora());
  EXPECT_EQ(server.emulator().lora_config().layers, (std::vector<int>{0, 2}));
  EXPECT_FALSE(server.llm().has_lora()) << "the LLM holds merged weights, no adapters";
  // Fresh factors: B = 0, so nothing changes when zero deltas come back.
  std::map<std::string, double> metrics = RunRound(server, 1, 0.0f);
  EXPECT_TRUE(SameBits(Copy(server.llm().params()), llm));
  EXPECT_TRUE(SameBits(Copy(server.emulator().params()), emulator));
  EXPECT_TRUE(metrics.count("val_loss"));
}

TEST_F(OffsiteTest, ALoraRoundChangesOnlyTheFactors) {
  Use("fedbiot", std::string(kLora) + "server_steps = 0\nproximal_mu = 0.1\n");
  auto made = Server("fedbiot", FourBlocks());
  ASSERT_TRUE(made);
  auto& server = dynamic_cast<OffsiteServer&>(*made);
  const ClientInfo a = Client(0, server);
  auto spec = server.BeginRound(1, {a});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  auto task = OffsiteTrainTask::Decode(spec->params);
  ASSERT_TRUE(task.ok()) << task.status().ToString();
  ASSERT_TRUE(task->lora.has_value());
  EXPECT_EQ(task->lora->rank, 2);
  wire::TaskAssign assign = Assign(*spec);
  server.Customize(a, &assign);
  auto context = Context(0, FourBlocks());
  auto handler = Handler("fedbiot", context.get());
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, assign, &result).ok());
  ASSERT_EQ(result.tensors.size(), 1u);
  ASSERT_EQ(result.tensors[0].NumElements(), spec->contribution->length);
  Gpt& emulator = context->model("emulator " + server.emulator().config().ToString(), nullptr);
  ASSERT_TRUE(emulator.has_lora());
  // Every base weight — the adapter blocks' and the middle's — is the one sent, bit for bit.
  EXPECT_TRUE(SameBits(Copy(emulator.params()), Copy(server.emulator().params())));
  // The factors trained (B is no longer zero), and the upload is exactly their change.
  const std::vector<float> sent = Copy(server.emulator().lora_params());
  const std::vector<float> trained = Copy(emulator.lora_params());
  const std::vector<float> delta = result.tensors[0].ToFloat32();
  double moved = 0.0;
  for (size_t i = 0; i < sent.size(); ++i) {
    ASSERT_EQ(delta[i], trained[i] - sent[i]) << i;
    moved += std::abs(delta[i]);
  }
  EXPECT_GT(moved, 0.0);
  const TensorSpec* b = emulator.lora_layout().Find("h.2.mlp.c_fc.lora_B");
  ASSERT_NE(b, nullptr) << "the top adapter block carries factors";
  EXPECT_EQ(emulator.lora_layout().Find("h.1.mlp.c_fc.lora_B"), nullptr) << "the middle does not";
  bool nonzero = false;
  for (size_t i = 0; i < b->size; ++i) nonzero |= trained[b->offset + i] != 0.0f;
  EXPECT_TRUE(nonzero);

  // A task whose factors do not have the emulator's LoRA size is refused, the emulator untouched.
  wire::TaskAssign wrong = Assign(*spec);
  for (wire::Tensor& t : wrong.tensors) {
    if (t.name == "adapters") {
      std::vector<float> shorter(t.NumElements() - 1, 0.0f);
      t = wire::Tensor::Float32("adapters", {shorter.size()}, shorter);
    }
  }
  Status refused = handler->Run(1, wrong, &result);
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("LoRA"), std::string::npos) << refused.ToString();
  EXPECT_TRUE(SameBits(Copy(emulator.lora_params()), trained)) << "a refused task changed it";
}

TEST_F(OffsiteTest, PluggedBackLoraEqualsTheExplicitlyMergedLlm) {
  Use("offsite", kLora);
  auto made = Server("offsite", FourBlocks());
  ASSERT_TRUE(made);
  auto& server = dynamic_cast<OffsiteServer&>(*made);
  Gpt original(server.llm());
  // A client trains the factors for a round; the coordinator plugs the average back.
  auto context = Context(0, FourBlocks());
  auto handler = Handler("offsite", context.get());
  const ClientInfo a = Client(0, server);
  auto spec = server.BeginRound(1, {a});
  ASSERT_TRUE(spec.ok());
  wire::TaskAssign assign = Assign(*spec);
  server.Customize(a, &assign);
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, assign, &result).ok());
  ASSERT_TRUE(server.OnResult(a, result).ok());
  TaskReport report;
  report.assigned = report.responded = {a.name};
  ASSERT_TRUE(server.OnTaskClosed(report).ok());
  EXPECT_FALSE(SameBits(Copy(server.llm().params()), Copy(original.params())));

  // The same factors on the LLM's own adapter blocks (0 and 3), by the model's LoRA path.
  LoraConfig lora = server.emulator().lora_config();
  lora.layers = {0, 3};
  Gpt adapted(original);
  ASSERT_TRUE(adapted.EnableLora(lora, 1).ok());
  ASSERT_EQ(adapted.lora_params().size(), server.emulator().lora_params().size());
  std::copy(server.emulator().lora_params().begin(), server.emulator().lora_params().end(),
            adapted.lora_params().begin());
  const ModelConfig c = FourBlocks();
  Rng rng(3);
  std::vector<int32_t> tokens(2 * c.context);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng.Below(c.vocab));
  const size_t n = tokens.size() * c.vocab;
  server.llm().Forward(tokens.data(), nullptr, 2, c.context);
  const std::vector<float> plugged(server.llm().logits(), server.llm().logits() + n);
  // Unmerged: the adapters computed beside the base weights, an independent path.
  adapted.Forward(tokens.data(), nullptr, 2, c.context);
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(adapted.logits()[i] - plugged[i])));
  }
  EXPECT_LT(worst, 1e-4);
  // Merged explicitly: the very weights the coordinator plugged in.
  adapted.MergeLora();
  EXPECT_TRUE(SameBits(Copy(adapted.params()), Copy(server.llm().params())));
  adapted.Forward(tokens.data(), nullptr, 2, c.context);
  EXPECT_TRUE(SameBits(std::vector<float>(adapted.logits(), adapted.logits() + n), plugged));
}

TEST_F(OffsiteTest, LoraMovesFewerFloatsByTheFactorOfTheShapes) {
  const ModelConfig c = FourBlocks();
  auto adapters_down = [&](const std::string& extra, size_t* contribution) -> size_t {
    Use("offsite", extra);
    auto made = Server("offsite", c);
    EXPECT_TRUE(made);
    if (!made) return 0;
    auto spec = made->BeginRound(1, {Client(0, *made)});
    EXPECT_TRUE(spec.ok());
    if (!spec.ok()) return 0;
    *contribution = spec->contribution->length;
    const wire::Tensor* t = FindTensor(spec->tensors, "adapters");
    EXPECT_NE(t, nullptr);
    return t == nullptr ? 0 : t->data.size();  // bytes of the tensor every round sends down
  };
  size_t full_up = 0, lora_up = 0;
  const size_t full_down = adapters_down("", &full_up);
  const size_t lora_down = adapters_down(kLora, &lora_up);
  EXPECT_EQ(full_up, ExpectedBlockFloats(c));
  EXPECT_EQ(lora_up, ExpectedLoraFloats(c, 2));
  EXPECT_EQ(full_down, 4 * full_up);
  EXPECT_EQ(lora_down, 4 * lora_up);
  const double factor = static_cast<double>(ExpectedBlockFloats(c)) / ExpectedLoraFloats(c, 2);
  EXPECT_GT(factor, 2.0);
  EXPECT_DOUBLE_EQ(static_cast<double>(full_down) / lora_down, factor);
}

// fedbiot with LoRA: two rounds with the re-alignment (factors in both models) and the factors
// averaged; a server restored after round 1 ends round 2 with the same bits.
TEST_F(OffsiteTest, FedBiOTWithLoraResumesBitForBit) {
  Use("fedbiot", std::string(kLora) +
                     "server_steps = 4\nwindows = 4\nserver_batch = 2\nserver_lr = 0.003\n");
  auto round = [&](OffsiteServer& server, uint64_t r) { RunRound(server, r, 0.01f); };
  auto made = Server("fedbiot", FourBlocks());
  ASSERT_TRUE(made);
  auto& straight = dynamic_cast<OffsiteServer&>(*made);
  const std::vector<float> llm0 = Copy(straight.llm().params());
  const std::vector<float> cut = Copy(straight.emulator().params());
  std::map<std::string, double> first = RunRound(straight, 1, 0.01f);
  // The middle re-aligned with the factors in: its distillation loss fell, and it moved.
  ASSERT_TRUE(first.count("emulator_kd_loss_after"));
  EXPECT_LT(first["emulator_kd_loss_after"], first["emulator_kd_loss_before"]);
  EXPECT_FALSE(SameBits(Copy(straight.emulator().params()), cut));
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> metadata;
  straight.SaveState(&tensors, &metadata);
  ASSERT_TRUE(tensors.count("adapters.lora") && tensors.count("llm.adapter_base"));
  round(straight, 2);
  EXPECT_EQ(straight.emulator_version(), 2);
  EXPECT_FALSE(SameBits(Copy(straight.llm().params()), llm0));

  auto again = Server("fedbiot", FourBlocks());
  ASSERT_TRUE(again);
  auto& resumed = dynamic_cast<OffsiteServer&>(*again);
  // A checkpoint of full adapters, or of other factors, is refused and changes nothing.
  const std::vector<float> fresh = Copy(resumed.llm().params());
  auto full = metadata;
  full["adapters"] = "full";
  EXPECT_FALSE(resumed.LoadState(tensors, full).ok());
  auto other = metadata;
  other["adapters.lora"] = "rank=3";
  EXPECT_FALSE(resumed.LoadState(tensors, other).ok());
  for (const char* name : {"adapters.lora", "llm.adapter_base"}) {
    auto without = tensors;
    without.erase(name);
    EXPECT_FALSE(resumed.LoadState(without, metadata).ok()) << "no " << name << " accepted";
    without = tensors;
    without[name].pop_back();
    EXPECT_FALSE(resumed.LoadState(without, metadata).ok()) << "a short " << name << " accepted";
  }
  auto unnamed = metadata;
  unnamed.erase("adapters");
  EXPECT_FALSE(resumed.LoadState(tensors, unnamed).ok()) << "a LoRA checkpoint read as full";
  EXPECT_TRUE(SameBits(Copy(resumed.llm().params()), fresh)) << "a refused load changed it";
  ASSERT_TRUE(resumed.LoadState(tensors, metadata).ok());
  round(resumed, 2);
  EXPECT_TRUE(SameBits(Copy(resumed.llm().params()), Copy(straight.llm().params())));
  EXPECT_TRUE(SameBits(Copy(resumed.emulator().params()), Copy(straight.emulator().params())));
  EXPECT_TRUE(SameBits(Copy(resumed.emulator().lora_params()),
                       Copy(straight.emulator().lora_params())));
}

TEST_F(OffsiteTest, BadLoraKeysAreRefusedWhenTheConfigIsRead) {
  auto error = [](const std::string& section, const std::string& extra) {
    auto parsed = Config::Parse(OffsiteConfigText(section, extra));
    EXPECT_TRUE(parsed.ok());
    auto c = OffsiteServerConfigFromConfig(*parsed, section);
    return c.ok() ? std::string() : c.status().ToString();
  };
  EXPECT_EQ(error("offsite", kLora), "");
  EXPECT_EQ(error("fedbiot", "adapters = \"lora\"\n"), "") << "defaults: rank 8, every linear";
  std::string e = error("offsite", "adapters = \"lora\"\nlora.rank = 0\n");
  EXPECT_NE(e.find("offsite.lora.rank"), std::string::npos) << e;
  e = error("fedbiot", "adapters = \"lora\"\nlora.targets = [\"attn.c_attn\", \"lm_head\"]\n");
  EXPECT_NE(e.find("lm_head"), std::string::npos) << e;
  e = error("offsite", "lora.rank = 4\n");
  EXPECT_NE(e.find("offsite.adapters"), std::string::npos) << e;
  e = error("offsite", "adapters = \"full\"\nlora.alpha = 8.0\n");
  EXPECT_NE(e.find("\"full\""), std::string::npos) << e;
  e = error("offsite", "adapters = \"qlora\"\n");
  EXPECT_NE(e.find("offsite.adapters"), std::string::npos) << e;
}

}  // namespace
}  // namespace tandem
