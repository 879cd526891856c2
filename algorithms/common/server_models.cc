// Starting models; see algorithms/common/server_models.h.
#include "algorithms/common/server_models.h"

#include "models/gpt_checkpoint.h"

namespace tandem {

StatusOr<std::unique_ptr<Gpt>> StartingModel(const ServerContext& context) {
  if (!context.init_checkpoint.empty()) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model, LoadGpt(context.init_checkpoint));
    if (!(model->config() == context.model)) {
      return Status::InvalidArgument("model.init_checkpoint '" + context.init_checkpoint +
                                     "' holds " + model->config().ToString() +
                                     ", the config asks for " + context.model.ToString());
    }
    return model;
  }
  auto model = std::make_unique<Gpt>(context.model);
  model->InitWeights(context.seed);
  return model;
}

StatusOr<std::shared_ptr<Gpt>> LoadCloudModel(const ServerContext& context, const std::string& key,
                                              const std::string& path,
                                              const std::string& trained_as) {
  StatusOr<std::shared_ptr<Gpt>> model = context.shared->LoadModel(key, path, trained_as);
  if (!model.ok()) {
    return Status::InvalidArgument(key + ": " + model.status().message() +
                                   " (train one with `tandem train configs/llm-public.toml`)");
  }
  return model;
}

}  // namespace tandem
