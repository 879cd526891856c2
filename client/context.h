// What the client runtime hands an algorithm's client half (DESIGN.md "Algorithms"): this
// client's data, its compute budget, and its models by role — the global model whose weights
// arrive with each task, its own model that never leaves it, and whatever other roles an
// algorithm needs (an emulator, adapters) — made on first use and kept across tasks and rounds.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "client/session.h"
#include "core/status.h"
#include "data/batcher.h"
#include "data/corpus.h"
#include "models/gpt.h"
#include "wire/transport_types.h"

namespace tandem {

class Config;

struct ClientData {
  std::vector<Record> train;       // this client's partition of the training split
  std::vector<Record> validation;  // this client's partition of the validation split
  std::vector<Record> public_;     // the public split, the same for every process
  std::vector<Record> all_validation;  // every client's held-out records (all private categories)
};

// The client's share of the run's data: the config's corpus split and partitioned exactly as
// every other process does, then partition `index` of federation.clients.
StatusOr<ClientData> LoadClientData(const Config& config, int index);

class ClientContext {
 public:
  // `own_init`: the weights this client's own model starts from (model.init_checkpoint, or its
  // federation.client_init_checkpoints entry); empty: a fresh initialisation on first use.
  ClientContext(int index, ModelConfig model, ClientData data, std::vector<float> own_init);

  int index() const { return index_; }                 // K of "client-K"
  const ModelConfig& model_config() const { return model_config_; }  // this client's architecture
  const ClientData& data() const { return data_; }
  const TokenDataset& train_tokens() const { return train_tokens_; }    // data().train, tokenized
  const TokenDataset& public_tokens() const { return public_tokens_; }  // data().public_

  // The global model: the architecture of model_config(); its weights are whatever the last task
  // loaded into it.
  Gpt& global();
  // This client's own model, which stays here between rounds. On first use it starts from the
  // own_init weights, or fresh from seed ^ (index << 20) without them.
  Gpt& own(uint64_t seed);
  bool has_own() const { return models_.count("own") > 0; }
  // Any other role: made by `make` on first use.
  Gpt& model(const std::string& role, const std::function<std::unique_ptr<Gpt>()>& make);

  // How this client reaches the coordinator (endpoint, keys or identity, ZeroMQ context), for a
  // half that opens a second session of its own — a device asking the coordinator's inference
  // service (serve/remote.h). Null when the runtime did not set it (a handler tested alone).
  const wire::TransportOptions* link() const { return link_ ? &*link_ : nullptr; }
  void set_link(wire::TransportOptions link) { link_ = std::move(link); }

 private:
  int index_;
  ModelConfig model_config_;
  ClientData data_;
  TokenDataset train_tokens_, public_tokens_;
  std::vector<float> own_init_;
  std::map<std::string, std::unique_ptr<Gpt>> models_;
  std::optional<wire::TransportOptions> link_;
};

// An algorithm's client half as the client runtime knows it; registered by name in
// algorithms/registry.h.
struct ClientPlugin {
  std::string name;
  // Builds the task handler over the client's context (borrowed; it outlives the handler).
  std::function<StatusOr<std::unique_ptr<TaskHandler>>(ClientContext*)> create;
};

}  // namespace tandem
