// Small models and corpora shared by the distillation algorithms' tests.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "data/corpus.h"
#include "models/model_config.h"

namespace tandem::testing {

inline ModelConfig Micro() {
  auto c = ModelPreset("slm-micro");
  EXPECT_TRUE(c.ok());
  return *c;
}

// `n` short records of one category, distinct enough to make a token stream of a few contexts.
inline std::vector<Record> Corpus(const std::string& category, int n) {
  std::vector<Record> out;
  for (int i = 0; i < n; ++i) {
    out.push_back({"Record " + std::to_string(i) + " of " + category +
                       ": the quick brown fox jumps over the lazy dog.\n",
                   category});
  }
  return out;
}

}  // namespace tandem::testing
