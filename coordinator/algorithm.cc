// What coordinator halves share; see coordinator/algorithm.h.
#include "coordinator/algorithm.h"

#include "models/gpt.h"
#include "models/gpt_checkpoint.h"

namespace tandem {

StatusOr<std::shared_ptr<Gpt>> SharedObjects::LoadModel(const std::string& key,
                                                        const std::string& path,
                                                        const std::string& trained_as) {
  auto it = models_.find(path);
  if (it == models_.end()) {
    StatusOr<std::unique_ptr<Gpt>> loaded = LoadGpt(path);
    if (!loaded.ok()) return loaded.status().WithContext(key);
    it = models_.emplace(path, std::shared_ptr<Gpt>(std::move(loaded).value())).first;
  }
  if (!trained_as.empty()) trained_[trained_as] = it->second;
  return it->second;
}

}  // namespace tandem
