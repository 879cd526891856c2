// Where a coordinator half's model starts: the context's init checkpoint (checked against the
// architecture the clients run) or fresh weights from the run's seed.
#pragma once

#include <memory>

#include "coordinator/algorithm.h"
#include "models/gpt.h"

namespace tandem {

StatusOr<std::unique_ptr<Gpt>> StartingModel(const ServerContext& context);

// The cloud LLM at `path`, named by config key `key`, through the run's shared models (loaded
// once however many halves ask; `trained_as`: see SharedObjects::LoadModel); the error says
// how to make one.
StatusOr<std::shared_ptr<Gpt>> LoadCloudModel(const ServerContext& context, const std::string& key,
                                              const std::string& path,
                                              const std::string& trained_as = "");

}  // namespace tandem
