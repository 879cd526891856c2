// Seeded train / validation / test / public splits (see split.h).

#include "data/split.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/rng.h"
#include "data/shuffle.h"

namespace tandem {
namespace {

Status CheckFraction(const char* name, double f) {
  if (!(f >= 0.0 && f <= 1.0)) {
    return Status::InvalidArgument(std::string("split ") + name + " = " + std::to_string(f) +
                                   " must be in [0, 1]");
  }
  return Status::Ok();
}

}  // namespace

Status ValidateSplitSpec(const SplitSpec& spec) {
  TANDEM_RETURN_IF_ERROR(CheckFraction("public_fraction", spec.public_fraction));
  TANDEM_RETURN_IF_ERROR(CheckFraction("validation_fraction", spec.validation_fraction));
  TANDEM_RETURN_IF_ERROR(CheckFraction("test_fraction", spec.test_fraction));
  const double sum = spec.public_fraction + spec.validation_fraction + spec.test_fraction;
  if (sum > 1.0 + 1e-9) {
    return Status::InvalidArgument("split fractions public + validation + test = " +
                                   std::to_string(sum) + " exceed 1; train gets what is left");
  }
  return Status::Ok();
}

StatusOr<SplitIndices> SplitRecordIndices(const std::vector<Record>& records,
                                          const SplitSpec& spec, uint64_t seed) {
  TANDEM_RETURN_IF_ERROR(ValidateSplitSpec(spec));
  const std::set<std::string> public_cats(spec.public_categories.begin(),
                                          spec.public_categories.end());
  if (!public_cats.empty()) {
    const std::vector<std::string> present = Categories(records);
    for (const std::string& c : public_cats) {
      if (!std::binary_search(present.begin(), present.end(), c)) {
        std::string list;
        for (size_t i = 0; i < present.size() && i < 40; ++i) list += (i ? ", " : "") + present[i];
        if (present.size() > 40) list += ", ...";
        return Status::InvalidArgument("public category '" + c +
                                       "' is not in the corpus; its categories are: " + list);
      }
    }
  }

  SplitIndices out;
  std::vector<size_t> rest;
  for (size_t i = 0; i < records.size(); ++i) {
    (public_cats.count(records[i].category) ? out.public_ : rest).push_back(i);
  }
  Rng rng(seed);
  detail::Shuffle(&rest, &rng);
  const double n = static_cast<double>(rest.size());
  auto count = [&](double f) { return static_cast<size_t>(std::llround(f * n)); };
  size_t pos = 0;
  auto take = [&](size_t k, std::vector<size_t>* dst) {
    k = std::min(k, rest.size() - pos);
    dst->insert(dst->end(), rest.begin() + pos, rest.begin() + pos + k);
    pos += k;
  };
  take(count(spec.public_fraction), &out.public_);
  take(count(spec.validation_fraction), &out.validation);
  take(count(spec.test_fraction), &out.test);
  take(rest.size() - pos, &out.train);
  for (auto* v : {&out.train, &out.validation, &out.test, &out.public_}) {
    std::sort(v->begin(), v->end());
  }
  return out;
}

StatusOr<DatasetSplits> SplitRecords(const std::vector<Record>& records, const SplitSpec& spec,
                                     uint64_t seed) {
  TANDEM_ASSIGN_OR_RETURN(SplitIndices idx, SplitRecordIndices(records, spec, seed));
  DatasetSplits out;
  out.train = SelectRecords(records, idx.train);
  out.validation = SelectRecords(records, idx.validation);
  out.test = SelectRecords(records, idx.test);
  out.public_ = SelectRecords(records, idx.public_);
  return out;
}

}  // namespace tandem
