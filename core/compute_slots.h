// Machine-wide compute slots: processes (and threads) of tandem that share a machine take one
// slot per compute thread before heavy work, so several clients on one machine never run more
// compute threads than it has cores. Slots are flock(2)ed files in a directory, so a process that
// dies releases its slots at once.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace tandem {

class ComputeSlots {
 public:
  // `slots` slot files in `dir` (created if missing). By default: AvailableCores() slots in
  // $TANDEM_SLOTS_DIR or /tmp/tandem-compute-slots.
  ComputeSlots(std::string dir, int slots);
  static ComputeSlots ForMachine();

  // Holds `count` slots until destroyed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept : fds_(std::move(other.fds_)) { other.fds_.clear(); }
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();

   private:
    friend class ComputeSlots;
    std::vector<int> fds_;
  };

  // Blocks until `count` slots are free at once (all or nothing, so two waiters never deadlock
  // holding part each). `count` is clamped to [1, slots()].
  StatusOr<Lease> Acquire(int count) const;

  int slots() const { return slots_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int slots_;
};

}  // namespace tandem
