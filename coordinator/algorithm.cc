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

StatusOr<std::string> SavedValue(const std::map<std::string, std::string>& metadata,
                                 const std::string& key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) return Status::Corruption("checkpoint lacks " + key);
  return it->second;
}

Status ExpectSavedValue(const std::map<std::string, std::string>& metadata, const std::string& key,
                        const std::string& expected, const std::string& what) {
  auto it = metadata.find(key);
  if (it != metadata.end() && it->second == expected) return Status::Ok();
  return Status::FailedPrecondition("checkpoint holds " + what + " " +
                                    (it == metadata.end() ? std::string("?") : it->second) +
                                    ", the config asks for " + expected);
}

StatusOr<const std::vector<float>*> SavedTensor(
    const std::map<std::string, std::vector<float>>& tensors, const std::string& name,
    size_t size) {
  auto it = tensors.find(name);
  if (it == tensors.end() || it->second.size() != size) {
    return Status::Corruption("checkpoint lacks " + name + " of " + std::to_string(size) +
                              " values");
  }
  return &it->second;
}

}  // namespace tandem
