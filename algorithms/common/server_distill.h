// What the coordinator halves that train a model on the coordinator share (distill-up, fedmkt,
// fedcollm): their distillation settings, read from each algorithm's own section.
#pragma once

#include <string>

#include "core/status.h"

namespace tandem {

class Config;

// What the coordinator's own distillation steps read from their section (distill-up, fedmkt and
// fedcollm train a model on the coordinator against the round's public windows).
struct ServerDistillConfig {
  double temperature = 2.0;  // <section>.temperature
  double alpha = 0.5;        // <section>.alpha: weight of the trained model's CE on the public text
  int windows = 8;           // <section>.windows: public windows per round
  int server_steps = 8;      // <section>.server_steps: the coordinator's steps per round
  int server_batch = 4;      // <section>.server_batch: windows per step
  double server_lr = 3e-4;   // <section>.server_lr: the LLM's AdamW, fresh every round
};

// Reads the keys above into *out (its values are the defaults), checking their ranges:
// <section>.temperature, .alpha, .windows, .server_steps, .server_batch, .server_lr.
Status ReadServerDistillConfig(const Config& config, const std::string& section,
                               ServerDistillConfig* out);

}  // namespace tandem
