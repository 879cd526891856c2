// RunningSum: the coordinator's exact, arrival-order-independent weighted sum of contributions
// (flat float vectors with a weight, see DESIGN.md "contributions"). Fixed-point with 2^-32
// resolution, added modulo 2^64, so a resumed run aggregates bit-for-bit like an uninterrupted one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/status.h"

namespace tandem {

// Fixed-point format of the running sum. 2^-32 resolution: a float32 delta of magnitude 1e-3 has
// an ulp near 1e-10, so quantizing w·x to 2.3e-10 costs at most ~1 float ulp for such deltas and
// nothing for larger ones, while leaving 31 integer bits for |Σ w·x| (int64 = 1 sign + 31 + 32).
// The mean's error is at most count·2^-33 / Σw, so weights given as example counts (>= 1) keep
// full precision; weights pre-normalized to sum to 1 over many clients lose some.
inline constexpr int kRunningSumFractionBits = 32;
// A single |w·x| (and a single weight) must be below this: 2^30 fixed-point units fit in 62 bits.
inline constexpr double kRunningSumMaxTerm = 1073741824.0;  // 2^30
// The final |Σ w·x| (and Σ w) must be below this to fit int64 after the wrap-around addition.
inline constexpr double kRunningSumMaxTotal = 2147483648.0;  // 2^31

// The checks every contribution passes before it touches aggregation state: values.size() ==
// length, every value finite, weight finite, >= 0 and < 2^30. InvalidArgument naming what failed
// (never the values themselves: raw updates are not logged or echoed).
Status ValidateContribution(std::span<const float> values, double weight, size_t length);

// Exact, order-independent weighted sum of equal-length float vectors. Not thread-safe.
//
// Each term w·x is computed in double (exactly reproducible: one product per term), rounded to
// the nearest multiple of 2^-32 (ties to even; Add() requires the default FPU rounding mode),
// and added as a uint64 modulo 2^64. Modular addition is associative and commutative, so the sum
// does not depend on arrival order; overflow of intermediate sums is harmless as long as the
// true final |Σ w·x| < 2^31 (the caller's requirement), because then the wrapped uint64 read as
// int64 is the exact sum. The weight sum is kept in the same fixed-point format.
//
// Wrap detection: RunningSum also keeps, exactly, B = Σ_contributions max_coordinate |w·x| (a
// scalar). When B >= 2^31 some coordinate may have wrapped, and Mean()/Sum() fail with OutOfRange
// instead of returning garbage. The check is conservative: contributions whose large coordinates
// cancel can fail it although every true sum is in range. Memory: 8 bytes per coordinate.
class RunningSum {
 public:
  explicit RunningSum(size_t length);

  // Folds w·values in. Rejects (InvalidArgument, state unchanged) a wrong length, a non-finite
  // value, a negative/non-finite weight or one >= 2^30, and any |w·x| >= 2^30.
  Status Add(std::span<const float> values, double weight);

  size_t count() const { return count_; }
  // Σ w of the accepted contributions, as the fixed-point sum read back (exact to 2^-32).
  double total_weight() const;
  size_t length() const { return sums_.size(); }

  // out[i] = float((double)(int64)sum_i / 2^32 / total_weight()). out.size() must be length().
  // FailedPrecondition when count() == 0 or the total weight is 0; OutOfRange when the wrap
  // bound (see above) or Σ w reaches 2^31.
  Status Mean(std::span<float> out) const;
  // out[i] = float(Σ w·x_i) with no division, for algorithms that divide by a fixed expected
  // weight. FailedPrecondition when count() == 0; OutOfRange as for Mean().
  Status Sum(std::span<float> out) const;

  // The mean, as Mean() computes it, written over the sum's own storage and returned as a view of
  // it: aggregation then needs no second model-sized buffer (the coordinator's peak is the sum,
  // one update and the model, not that plus the mean). Float i takes bytes [4i, 4i+4), which held
  // part of sum i/2, already read. The sum is spent: until Reset() only the returned span (valid
  // until Reset() or destruction) may be read; Add, Mean and Sum fail with FailedPrecondition.
  // Errors as Mean(), and then the sum is untouched.
  StatusOr<std::span<float>> MeanInPlace();

  // One contribution folded in piece by piece, in order, as its values arrive (a streamed
  // upload, docs/protocol.md "Streamed contributions"). Each value is quantized and added exactly
  // as Add() would, and the weight, bound and count when the last value is in, so the sum is
  // bit-identical to Add() of the whole vector. A fixed-point term cannot be taken out again
  // without its values: a part abandoned after some values were folded voids the sum.
  // Owned by the caller; must not outlive its RunningSum (nor cross its Reset()).
  class Part {
   public:
    // Folds the next values.size() values (offset is where they start, and must equal
    // folded()). Rejected (InvalidArgument, nothing folded, the part stays usable) when the
    // offset is not folded(), the values run past length(), one is not finite, or |w·x| >= 2^30.
    // FailedPrecondition after Finish() or Abandon().
    Status Add(size_t offset, std::span<const float> values);
    // All length() values are in: the contribution counts (count(), total_weight()).
    // FailedPrecondition (nothing changes) while values are missing.
    Status Finish();
    // Gives the part up. When values were folded, the sum is void (see voided()); otherwise
    // nothing changes. Idempotent; a finished part ignores it.
    void Abandon();
    size_t folded() const { return next_; }
    double weight() const { return weight_; }
    bool open() const { return !done_; }

   private:
    friend class RunningSum;
    Part(RunningSum* sum, double weight) : sum_(sum), weight_(weight) {}
    RunningSum* sum_;
    double weight_;
    size_t next_ = 0;       // values [0, next_) folded
    float max_abs_ = 0.0f;  // max |x| over them
    bool done_ = false;
  };
  // Starts a part of weight `weight` (checked as Add() checks it: InvalidArgument).
  // FailedPrecondition when the sum is spent or void.
  StatusOr<std::unique_ptr<Part>> StartPart(double weight);
  // Parts with folded values not yet finished: while any is open the sum holds part of a
  // contribution, and Mean, Sum and MeanInPlace fail with FailedPrecondition.
  size_t open_parts() const { return open_parts_; }
  // A part was abandoned after folding values: the sum is no longer the sum of whole
  // contributions. Mean, Sum, MeanInPlace, Add and StartPart fail with FailedPrecondition until
  // Reset().
  bool voided() const { return voided_; }

  // Back to no contributions; keeps the length and the allocation.
  void Reset();

 private:
  Status CheckReadable(std::span<float> out) const;

  std::vector<uint64_t> sums_;  // (length) fixed-point Σ w·x, modulo 2^64
  unsigned __int128 weight_sum_ = 0;  // fixed-point Σ w; cannot wrap (< 2^64 terms of < 2^62)
  unsigned __int128 bound_ = 0;       // fixed-point Σ max_i |w·x_i|, for wrap detection
  size_t count_ = 0;
  bool spent_ = false;  // MeanInPlace overwrote sums_
  size_t open_parts_ = 0;  // parts that folded values and are not finished
  bool voided_ = false;    // a part was abandoned after folding values
};

}  // namespace tandem
