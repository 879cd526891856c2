// See bench/bench_models.h.
#include "bench/bench_models.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "data/arithmetic.h"
#include "data/batcher.h"
#include "models/gpt_checkpoint.h"
#include "models/tokenizer.h"
#include "train/local_trainer.h"

namespace tandem::bench {

std::vector<int> ParseList(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::atoi(item.c_str()));
  return out;
}

std::string ArithmeticText(size_t count, uint64_t seed) {
  std::string text;
  for (int level = 1; level <= 3; ++level) {
    auto ex = MakeArithmeticExamples(level, count / 3, seed + level);
    TANDEM_CHECK(ex.ok());
    for (const auto& e : *ex) text += e.prompt + e.answer + "\n";
  }
  return text;
}

std::unique_ptr<Gpt> TrainOnArithmetic(const std::string& preset, int steps, uint64_t seed) {
  auto config = ModelPreset(preset);
  TANDEM_CHECK(config.ok());
  auto model = std::make_unique<Gpt>(*config);
  model->InitWeights(seed);
  if (steps == 0) return model;
  auto batcher = Batcher::Create(TokenDataset(ByteTokenizer::Encode(ArithmeticText(30000, 1))),
                                 8, config->context);
  TANDEM_CHECK(batcher.ok());
  TextTerm term(*batcher);
  LocalTrainer trainer(model.get(), TrainerOptions{});
  Rng rng(seed);
  const auto t0 = Clock::now();
  auto report = trainer.Run({&term}, steps, 2e-3f, rng);
  TANDEM_CHECK(report.ok());
  std::printf("trained %s (%zu params) for %d steps in %.1f s: train loss %.3f\n", preset.c_str(),
              model->num_params(), steps, Seconds(t0, Clock::now()), report->Mean("train_loss"));
  return model;
}

bool LoadOrTrainPair(const std::string& cloud_path, const std::string& draft_path,
                     int train_steps, std::unique_ptr<Gpt>* cloud, std::unique_ptr<Gpt>* device) {
  if (cloud_path.empty() && draft_path.empty()) {
    *cloud = TrainOnArithmetic("slm-small", train_steps, 11);
    *device = TrainOnArithmetic("slm-micro", train_steps, 12);
    return true;
  }
  auto c = LoadGpt(cloud_path);
  auto d = LoadGpt(draft_path);
  if (!c.ok() || !d.ok()) {
    std::fprintf(stderr, "cannot load: %s\n",
                 (!c.ok() ? c.status() : d.status()).message().c_str());
    return false;
  }
  *cloud = std::move(*c);
  *device = std::move(*d);
  return true;
}

}  // namespace tandem::bench
