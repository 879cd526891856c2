// flock(2)-based compute slots; see core/compute_slots.h.
#include "core/compute_slots.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "core/threads.h"

namespace tandem {

ComputeSlots::ComputeSlots(std::string dir, int slots)
    : dir_(std::move(dir)), slots_(std::max(1, slots)) {}

ComputeSlots ComputeSlots::ForMachine() {
  const char* env = std::getenv("TANDEM_SLOTS_DIR");
  return ComputeSlots(env != nullptr && *env ? env : "/tmp/tandem-compute-slots",
                      AvailableCores());
}

ComputeSlots::Lease& ComputeSlots::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    for (int fd : fds_) ::close(fd);
    fds_ = std::move(other.fds_);
    other.fds_.clear();
  }
  return *this;
}

ComputeSlots::Lease::~Lease() {
  for (int fd : fds_) ::close(fd);  // closing the descriptor releases its flock
}

StatusOr<ComputeSlots::Lease> ComputeSlots::Acquire(int count) const {
  count = std::clamp(count, 1, slots_);
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return Status::IoError("cannot create compute-slot directory '" + dir_ + "': " +
                                 ec.message());
  std::minstd_rand jitter(static_cast<unsigned>(::getpid()) ^
                          static_cast<unsigned>(std::hash<std::thread::id>{}(
                              std::this_thread::get_id())));
  while (true) {
    Lease lease;
    for (int k = 0; k < slots_ && static_cast<int>(lease.fds_.size()) < count; ++k) {
      const std::string path = dir_ + "/slot-" + std::to_string(k);
      int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0666);
      if (fd < 0) return Status::IoError("cannot open compute slot '" + path + "'");
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
        lease.fds_.push_back(fd);
      } else {
        ::close(fd);
      }
    }
    if (static_cast<int>(lease.fds_.size()) == count) return lease;
    // Release what was taken (the lease's destructor) and try again shortly.
    lease = Lease();
    std::this_thread::sleep_for(std::chrono::milliseconds(2 + jitter() % 8));
  }
}

}  // namespace tandem
