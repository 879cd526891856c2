// Centralized training end to end on a small text file: the loss falls, checkpoints load, and a
// run interrupted and resumed ends bit-for-bit where an uninterrupted run ends.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "core/config.h"
#include "core/rng.h"
#include "models/gpt_checkpoint.h"
#include "train/evaluate.h"
#include "tests/temp_dir.h"
#include "train/trainer.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    // A corpus with structure to learn: repeated phrases with small variations.
    std::ofstream out(dir_ / "corpus.txt");
    Rng rng(1);
    const char* words[] = {"alpha", "beta", "gamma", "delta", "omega"};
    for (int p = 0; p < 300; ++p) {
      out << "the " << words[rng.Below(5)] << " sat on the " << words[rng.Below(5)] << ".\n\n";
    }
  }
  Config MakeConfig(const std::string& name, int steps) {
    std::string text = "name = \"" + name + "\"\nseed = 3\nout_dir = \"" + dir_.string() +
                       "\"\n[model]\npreset = \"slm-micro\"\n[data]\nsource = \"" +
                       (dir_ / "corpus.txt").string() +
                       "\"\nvalidation_fraction = 0.1\ntest_fraction = 0.1\n"
                       "[train]\nbatch = 4\nsteps = " + std::to_string(steps) +
                       "\nlr = 3e-3\nwarmup_steps = 5\neval_every = 20\ncheckpoint_every = 10\n";
    auto c = Config::Parse(text, "test.toml");
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return *c;
  }
};

TEST_F(TrainerTest, LossFallsAndCheckpointLoads) {
  auto result = RunTrain(MakeConfig("fall", 60), false);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_LT(result->final_val_loss, result->initial_val_loss - 1.0)
      << result->initial_val_loss << " -> " << result->final_val_loss;
  const fs::path run = dir_ / "fall";
  EXPECT_TRUE(fs::exists(run / "metrics.jsonl"));
  EXPECT_TRUE(fs::exists(run / "summary.json"));
  EXPECT_TRUE(fs::exists(run / "config.toml"));
  auto model = LoadGpt((run / "checkpoints" / "model.safetensors").string());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->config().d_model, 64);
}

TEST_F(TrainerTest, ResumedRunEqualsUninterruptedRun) {
  ASSERT_TRUE(RunTrain(MakeConfig("whole", 30), false).ok());
  Config first = MakeConfig("parts", 30);
  ASSERT_TRUE(first.ApplyOverride("train.stop_at_step=13").ok());
  auto partial = RunTrain(first, false);
  ASSERT_TRUE(partial.ok()) << partial.status().ToString();
  EXPECT_EQ(partial->steps, 13);
  auto rest = RunTrain(MakeConfig("parts", 30), /*resume=*/true);
  ASSERT_TRUE(rest.ok()) << rest.status().ToString();
  auto a = LoadGpt((dir_ / "whole" / "checkpoints" / "model.safetensors").string());
  auto b = LoadGpt((dir_ / "parts" / "checkpoints" / "model.safetensors").string());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ((*a)->params().size(), (*b)->params().size());
  EXPECT_EQ(std::memcmp((*a)->params().data(), (*b)->params().data(),
                        (*a)->params().size() * sizeof(float)), 0)
      << "resumed run differs from the uninterrupted one";
}

// A resumed run's summary is the uninterrupted run's: the starting loss of the first session and
// the seconds of all of them.
TEST_F(TrainerTest, ResumedSummaryKeepsInitialLossAndSumsSeconds) {
  auto whole = RunTrain(MakeConfig("whole", 20), false);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  Config first = MakeConfig("parts", 20);
  ASSERT_TRUE(first.ApplyOverride("train.stop_at_step=10").ok());
  auto partial = RunTrain(first, false);
  ASSERT_TRUE(partial.ok()) << partial.status().ToString();
  auto rest = RunTrain(MakeConfig("parts", 20), /*resume=*/true);
  ASSERT_TRUE(rest.ok()) << rest.status().ToString();
  EXPECT_EQ(rest->initial_val_loss, whole->initial_val_loss)
      << "the resumed run reports its resume point as the starting loss";
  EXPECT_GT(rest->seconds, partial->seconds) << "seconds of the first session were dropped";
  std::ifstream in(dir_ / "parts" / "summary.json");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("\"complete\": true"), std::string::npos) << text.str();
  // Nothing left to do: a second --resume says so and leaves the run as it is.
  auto again = RunTrain(MakeConfig("parts", 20), /*resume=*/true);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("is complete (20 of 20 steps)"), std::string::npos)
      << again.status().message();
}

// Stopped after its last checkpoint but before its summary (killed in between, or stopped at its
// last checkpoint on purpose): --resume finishes the run — evaluation and summary — and leaves
// the model as it was; a checkpoint beyond train.steps is refused.
TEST_F(TrainerTest, ResumeAtTheLastStepWithoutASummaryFinishesTheRun) {
  Config config = MakeConfig("cut", 20);
  ASSERT_TRUE(config.ApplyOverride("train.checkpoint_every=10").ok());
  auto whole = RunTrain(config, false);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  const fs::path run = dir_ / "cut";
  fs::remove(run / "summary.json");
  std::ifstream model_in(run / "checkpoints" / "model.safetensors", std::ios::binary);
  const std::string model((std::istreambuf_iterator<char>(model_in)), {});
  Config fewer = MakeConfig("cut", 10);
  auto refused = RunTrain(fewer, /*resume=*/true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("beyond train.steps = 10"), std::string::npos)
      << refused.status().message();
  auto finished = RunTrain(config, /*resume=*/true);
  ASSERT_TRUE(finished.ok()) << finished.status().ToString();
  EXPECT_TRUE(fs::exists(run / "summary.json"));
  EXPECT_EQ(finished->initial_val_loss, whole->initial_val_loss);
  EXPECT_EQ(finished->final_val_loss, whole->final_val_loss);
  std::ifstream after_in(run / "checkpoints" / "model.safetensors", std::ios::binary);
  const std::string after((std::istreambuf_iterator<char>(after_in)), {});
  EXPECT_EQ(after, model) << "finishing the run changed its model";
}

TEST_F(TrainerTest, SameNameIsRefusedUnlessOverwritten) {
  ASSERT_TRUE(RunTrain(MakeConfig("once", 10), false).ok());
  fs::create_directories(dir_ / "once" / "report");
  auto again = RunTrain(MakeConfig("once", 10), false);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("--overwrite"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir_ / "once" / "report"));
  auto over = RunTrain(MakeConfig("once", 10), false, nullptr, /*overwrite=*/true);
  ASSERT_TRUE(over.ok()) << over.status().ToString();
  EXPECT_FALSE(fs::exists(dir_ / "once" / "report")) << "an old report/ beside new metrics";
}

// A start that fails its checks leaves an earlier run of the same name as it was.
TEST_F(TrainerTest, FailedStartChangesNothingOfAnEarlierRun) {
  ASSERT_TRUE(RunTrain(MakeConfig("kept", 10), false).ok());
  std::ifstream in(dir_ / "kept" / "config.toml");
  std::stringstream before;
  before << in.rdbuf();
  Config bad = MakeConfig("kept", 10);
  // Data that is not there: found only after the config's keys have all been read.
  ASSERT_TRUE(bad.ApplyOverride("data.source=" + (dir_ / "missing.txt").string()).ok());
  EXPECT_FALSE(RunTrain(bad, /*resume=*/true).ok());
  std::ifstream again(dir_ / "kept" / "config.toml");
  std::stringstream after;
  after << again.rdbuf();
  EXPECT_EQ(before.str(), after.str());
}

TEST_F(TrainerTest, LoraTrainingMovesOnlyAdapters) {
  Config c = MakeConfig("lora", 20);
  ASSERT_TRUE(c.ApplyOverride("model.lora.rank=4").ok());
  auto result = RunTrain(c, false);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_LT(result->final_val_loss, result->initial_val_loss);
  EXPECT_TRUE(fs::exists(dir_ / "lora" / "checkpoints" / "lora.safetensors"));
  // The base is frozen: the saved base is, bit for bit, the initialisation (seed 3).
  auto saved = LoadGpt((dir_ / "lora" / "checkpoints" / "model.safetensors").string());
  ASSERT_TRUE(saved.ok()) << saved.status().ToString();
  auto preset = ModelPreset("slm-micro");
  ASSERT_TRUE(preset.ok());
  Gpt init(*preset);
  init.InitWeights(3);
  ASSERT_EQ((*saved)->params().size(), init.params().size());
  EXPECT_EQ(std::memcmp((*saved)->params().data(), init.params().data(),
                        init.params().size() * sizeof(float)), 0)
      << "LoRA training changed the frozen base";
}

TEST_F(TrainerTest, BadConfigsAreClearErrors) {
  Config typo = MakeConfig("typo", 10);
  ASSERT_TRUE(typo.ApplyOverride("train.stpes=5").ok());
  auto r = RunTrain(typo, false);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("train.stpes"), std::string::npos) << r.status().message();

  Config preset = MakeConfig("preset", 10);
  ASSERT_TRUE(preset.ApplyOverride("model.preset=gpt-huge").ok());
  r = RunTrain(preset, false);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("slm-tiny"), std::string::npos) << r.status().message();

  Config heads = MakeConfig("heads", 10);
  ASSERT_TRUE(heads.ApplyOverride("model.n_head=5").ok());
  r = RunTrain(heads, false);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("divisible"), std::string::npos) << r.status().message();

  Config data = MakeConfig("data", 10);
  ASSERT_TRUE(data.ApplyOverride("data.source=\"/no/such/corpus.jsonl\"").ok());
  EXPECT_FALSE(RunTrain(data, false).ok());
}

}  // namespace
}  // namespace tandem
