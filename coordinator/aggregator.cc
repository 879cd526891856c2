// RunningSum: fixed-point (2^-32) weighted sums added modulo 2^64; see aggregator.h for why.
#include "coordinator/aggregator.h"

#include <algorithm>
#include <bit>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace tandem {
namespace {

constexpr double kScale = 4294967296.0;  // 2^kRunningSumFractionBits
constexpr double kInvScale = 1.0 / kScale;
// kRunningSumMaxTotal in fixed-point units: 2^63, the first value int64 cannot hold.
constexpr unsigned __int128 kMaxTotalFixed = static_cast<unsigned __int128>(1) << 63;
static_assert(kRunningSumFractionBits == 32);

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// The nearest multiple of 2^-32 (ties to even), as an integer count of 2^-32 units. Requires
// |term| < 2^30, so the result fits in 62 bits. std::nearbyint compiles to one instruction where
// std::round is a libm call (3.5x slower over the whole Add); it follows the FPU rounding mode,
// which Add() checks is the default round-to-nearest, so every process quantizes alike.
int64_t Quantize(double term) { return static_cast<int64_t>(std::nearbyint(term * kScale)); }

// max |values[i]| as the bit pattern of a non-negative float, in one pass that vectorizes
// (integer max). Patterns of non-negative floats order like their values, and Inf and NaN sit
// above every finite one: the values are all finite iff the result is below kInfBits.
constexpr uint32_t kInfBits = 0x7F800000u;
uint32_t MaxAbsBits(std::span<const float> values) {
  uint32_t max_bits = 0;
  for (float v : values) max_bits = std::max(max_bits, std::bit_cast<uint32_t>(v) & 0x7FFFFFFFu);
  return max_bits;
}

// ValidateContribution, also returning max |values[i]|.
Status CheckContribution(std::span<const float> values, double weight, size_t length,
                         float* max_abs) {
  if (values.size() != length) {
    return Status::InvalidArgument("contribution has " + std::to_string(values.size()) +
                                   " values, expected " + std::to_string(length));
  }
  if (!std::isfinite(weight) || weight < 0.0) {
    return Status::InvalidArgument("contribution weight " + Num(weight) +
                                   " is not a finite number >= 0");
  }
  if (weight >= kRunningSumMaxTerm) {
    return Status::InvalidArgument("contribution weight " + Num(weight) +
                                   " is too large (must be below 2^30)");
  }
  const uint32_t max_bits = MaxAbsBits(values);
  if (max_bits >= kInfBits) {
    size_t i = 0;
    while (std::isfinite(values[i])) ++i;
    return Status::InvalidArgument("contribution value at index " + std::to_string(i) +
                                   " is not finite");
  }
  *max_abs = std::bit_cast<float>(max_bits);
  return Status::Ok();
}

}  // namespace

Status ValidateContribution(std::span<const float> values, double weight, size_t length) {
  float max_abs;
  return CheckContribution(values, weight, length, &max_abs);
}

RunningSum::RunningSum(size_t length) : sums_(length, 0) {}

Status RunningSum::Add(std::span<const float> values, double weight) {
  // Quantize() relies on it; nothing in tandem changes the rounding mode.
  TANDEM_CHECK(std::fegetround() == FE_TONEAREST);
  if (spent_) return Status::FailedPrecondition("running sum was spent by MeanInPlace; Reset it");
  if (voided_) return Status::FailedPrecondition("running sum is void (a streamed contribution failed)");
  // Every term is checked before any is added, so a rejection leaves the state untouched.
  float max_abs = 0.0f;
  TANDEM_RETURN_IF_ERROR(CheckContribution(values, weight, sums_.size(), &max_abs));
  // Rounding is monotone and weight >= 0, so this is max_i |weight·x_i| as computed below.
  const double max_term = weight * static_cast<double>(max_abs);
  if (!(max_term < kRunningSumMaxTerm)) {
    return Status::InvalidArgument("contribution has a weighted value |w*x| = " + Num(max_term) +
                                   ", at or above the running sum's limit 2^30");
  }
  const size_t n = sums_.size();
  uint64_t* sums = sums_.data();
  for (size_t i = 0; i < n; ++i) {
    // Wrap-around two's-complement addition: associative and commutative (see aggregator.h).
    sums[i] += static_cast<uint64_t>(Quantize(weight * static_cast<double>(values[i])));
  }
  // Rounding is monotone, so Quantize(max |w·x|) is the largest |quantized term|.
  bound_ += static_cast<uint64_t>(Quantize(max_term));
  weight_sum_ += static_cast<uint64_t>(Quantize(weight));
  ++count_;
  return Status::Ok();
}

double RunningSum::total_weight() const { return static_cast<double>(weight_sum_) * kInvScale; }

Status RunningSum::CheckReadable(std::span<float> out) const {
  if (spent_) return Status::FailedPrecondition("running sum was spent by MeanInPlace; Reset it");
  if (voided_) {
    return Status::FailedPrecondition("running sum is void: a streamed contribution failed after part of "
                           "it was folded in");
  }
  if (open_parts_ > 0) {
    return Status::FailedPrecondition("running sum holds " + std::to_string(open_parts_) +
                                      " contributions folded in part; finish or abandon them");
  }
  if (out.size() != sums_.size()) {
    return Status::InvalidArgument("running sum output has " + std::to_string(out.size()) +
                                   " values, expected " + std::to_string(sums_.size()));
  }
  if (count_ == 0) return Status::FailedPrecondition("running sum has no contributions");
  if (bound_ >= kMaxTotalFixed) {
    return Status::OutOfRange(
        "running sum may have overflowed: the " + std::to_string(count_) +
        " contributions' largest weighted values |w*x| add up to " +
        Num(static_cast<double>(bound_) * kInvScale) +
        ", the fixed-point sum holds |sum w*x| below 2^31 only; scale the weights or values down");
  }
  if (weight_sum_ >= kMaxTotalFixed) {
    return Status::OutOfRange("running sum's total weight " + Num(total_weight()) +
                              " is at or above 2^31; scale the weights down");
  }
  return Status::Ok();
}

Status RunningSum::Mean(std::span<float> out) const {
  TANDEM_RETURN_IF_ERROR(CheckReadable(out));
  if (weight_sum_ == 0) {
    return Status::FailedPrecondition("running sum's total weight is 0: the mean is undefined");
  }
  const double total = total_weight();
  for (size_t i = 0; i < sums_.size(); ++i) {
    out[i] = static_cast<float>(static_cast<double>(static_cast<int64_t>(sums_[i])) * kInvScale /
                                total);
  }
  return Status::Ok();
}

StatusOr<std::span<float>> RunningSum::MeanInPlace() {
  // CheckReadable wants an output of the right length; the view over sums_ is one.
  std::span<float> out(reinterpret_cast<float*>(sums_.data()), sums_.size());
  TANDEM_RETURN_IF_ERROR(CheckReadable(out));
  if (weight_sum_ == 0) {
    return Status::FailedPrecondition("running sum's total weight is 0: the mean is undefined");
  }
  const double total = total_weight();
  char* bytes = reinterpret_cast<char*>(sums_.data());
  for (size_t i = 0; i < sums_.size(); ++i) {
    const float v = static_cast<float>(static_cast<double>(static_cast<int64_t>(sums_[i])) *
                                       kInvScale / total);
    std::memcpy(bytes + i * sizeof(float), &v, sizeof(float));  // over sums_[i / 2], read already
  }
  spent_ = true;
  return out;
}

Status RunningSum::Sum(std::span<float> out) const {
  TANDEM_RETURN_IF_ERROR(CheckReadable(out));
  for (size_t i = 0; i < sums_.size(); ++i) {
    out[i] = static_cast<float>(static_cast<double>(static_cast<int64_t>(sums_[i])) * kInvScale);
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<RunningSum::Part>> RunningSum::StartPart(double weight) {
  if (spent_) return Status::FailedPrecondition("running sum was spent by MeanInPlace; Reset it");
  if (voided_) return Status::FailedPrecondition("running sum is void (a streamed contribution failed)");
  float unused;
  TANDEM_RETURN_IF_ERROR(CheckContribution({}, weight, 0, &unused));
  return std::unique_ptr<Part>(new Part(this, weight));
}

Status RunningSum::Part::Add(size_t offset, std::span<const float> values) {
  TANDEM_CHECK(std::fegetround() == FE_TONEAREST);
  if (done_) return Status::FailedPrecondition("streamed contribution already finished or abandoned");
  if (sum_->spent_ || sum_->voided_) {
    return Status::FailedPrecondition("running sum was spent or voided; the part cannot go on");
  }
  const size_t n = sum_->sums_.size();
  if (offset != next_) {
    return Status::InvalidArgument("contribution values at offset " + std::to_string(offset) +
                                   ", expected offset " + std::to_string(next_));
  }
  if (values.size() > n - next_) {
    return Status::InvalidArgument("contribution values [" + std::to_string(offset) + ", " +
                                   std::to_string(offset + values.size()) + ") run past its " +
                                   std::to_string(n) + " values");
  }
  // The same checks as Add, on this piece: nothing is folded unless all of it can be.
  float max_abs = 0.0f;
  TANDEM_RETURN_IF_ERROR(CheckContribution(values, weight_, values.size(), &max_abs));
  const double max_term = weight_ * static_cast<double>(max_abs);
  if (!(max_term < kRunningSumMaxTerm)) {
    return Status::InvalidArgument("contribution has a weighted value |w*x| = " + Num(max_term) +
                                   ", at or above the running sum's limit 2^30");
  }
  if (values.empty()) return Status::Ok();
  uint64_t* sums = sum_->sums_.data() + offset;
  for (size_t i = 0; i < values.size(); ++i) {
    sums[i] += static_cast<uint64_t>(Quantize(weight_ * static_cast<double>(values[i])));
  }
  if (next_ == 0) ++sum_->open_parts_;
  next_ += values.size();
  max_abs_ = std::max(max_abs_, max_abs);
  return Status::Ok();
}

Status RunningSum::Part::Finish() {
  if (done_) return Status::FailedPrecondition("streamed contribution already finished or abandoned");
  const size_t n = sum_->sums_.size();
  if (next_ != n) {
    return Status::FailedPrecondition("streamed contribution has " + std::to_string(next_) +
                                      " of its " + std::to_string(n) + " values");
  }
  if (sum_->voided_ || sum_->spent_) {
    return Status::FailedPrecondition("running sum was spent or voided; the part cannot finish");
  }
  // As in Add: the largest |quantized term| of the whole vector, and its weight.
  sum_->bound_ += static_cast<uint64_t>(Quantize(weight_ * static_cast<double>(max_abs_)));
  sum_->weight_sum_ += static_cast<uint64_t>(Quantize(weight_));
  ++sum_->count_;
  if (n > 0) --sum_->open_parts_;
  done_ = true;
  return Status::Ok();
}

void RunningSum::Part::Abandon() {
  if (done_) return;
  done_ = true;
  if (next_ > 0) {
    --sum_->open_parts_;
    sum_->voided_ = true;
  }
}

void RunningSum::Reset() {
  spent_ = false;
  voided_ = false;
  open_parts_ = 0;
  std::fill(sums_.begin(), sums_.end(), 0);
  weight_sum_ = 0;
  bound_ = 0;
  count_ = 0;
}

}  // namespace tandem
