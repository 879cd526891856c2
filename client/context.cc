// The client's context; see client/context.h.
#include "client/context.h"

#include <set>

#include "core/config.h"
#include "data/partition.h"
#include "train/data_setup.h"

namespace tandem {

StatusOr<ClientData> LoadClientData(const Config& config, int index) {
  TANDEM_ASSIGN_OR_RETURN(DataConfig data, DataConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(int64_t clients, config.GetInt("federation.clients", 4, 1, 100'000));
  if (index < 0 || index >= clients) {
    return Status::InvalidArgument("client id " + std::to_string(index) + " is outside 0.." +
                                   std::to_string(clients - 1) + " (federation.clients = " +
                                   std::to_string(clients) + ")");
  }
  // The same reader the coordinator validates the key with at start.
  TANDEM_ASSIGN_OR_RETURN(PartitionSpec spec, PartitionSpecFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(DatasetSplits splits, LoadSplits(data));
  std::vector<std::vector<size_t>> parts;
  if (data.cross_lingual()) {
    // One language per client, partitioned among that language's clients.
    TANDEM_ASSIGN_OR_RETURN(parts, PartitionCrossLingual(data, splits.train, spec, clients));
  } else {
    TANDEM_ASSIGN_OR_RETURN(parts, PartitionRecords(splits.train, spec,
                                                    static_cast<int>(clients), data.seed));
  }
  ClientData out;
  out.public_ = splits.public_;
  out.all_validation = splits.validation;
  for (size_t i : parts[index]) out.train.push_back(splits.train[i]);
  if (spec.kind == PartitionKind::kByCategory) {
    // Held-out records of the client's own categories.
    std::set<std::string> mine;
    for (const auto& r : out.train) mine.insert(r.category);
    for (const auto& r : splits.validation) {
      if (mine.count(r.category)) out.validation.push_back(r);
    }
  } else if (!splits.validation.empty()) {
    auto val_parts = PartitionRecords(splits.validation, spec, static_cast<int>(clients),
                                      data.seed + 1);
    if (val_parts.ok()) {
      for (size_t i : (*val_parts)[index]) out.validation.push_back(splits.validation[i]);
    }
  }
  if (out.train.empty()) {
    return Status::FailedPrecondition("client " + std::to_string(index) +
                                      " got no training records from partition " + spec.ToString());
  }
  return out;
}

ClientContext::ClientContext(int index, ModelConfig model, ClientData data,
                             std::vector<float> own_init)
    : index_(index), model_config_(model), data_(std::move(data)),
      train_tokens_(TokenDataset::FromRecords(data_.train)),
      public_tokens_(TokenDataset::FromRecords(data_.public_)), own_init_(std::move(own_init)) {}

Gpt& ClientContext::model(const std::string& role,
                          const std::function<std::unique_ptr<Gpt>()>& make) {
  auto it = models_.find(role);
  if (it == models_.end()) it = models_.emplace(role, make()).first;
  return *it->second;
}

Gpt& ClientContext::global() {
  return model("global", [&] { return std::make_unique<Gpt>(model_config_); });
}

Gpt& ClientContext::own(uint64_t seed) {
  return model("own", [&] {
    auto m = std::make_unique<Gpt>(model_config_);
    if (!own_init_.empty()) {
      std::copy(own_init_.begin(), own_init_.end(), m->params().begin());
    } else {
      m->InitWeights(seed ^ (static_cast<uint64_t>(index_) << 20));
    }
    return m;
  });
}

}  // namespace tandem
