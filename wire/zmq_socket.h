// libzmq adapters shared by the transport's two sides and the ZAP handler: errno turned into a
// Status, socket options, the context, an eventfd that wakes a zmq_poll loop, zero-copy sends and
// received message parts (libzmq's C API, zmq.h). Internal to wire/: the public API is transport.h.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/sanitizers.h"
#include "core/status.h"
#include "wire/chunk.h"

namespace tandem::wire::detail {

Status ZmqError(const std::string& what);
Status SetOption(void* socket, int option, int value, const char* name);
Status SetOption(void* socket, int option, const std::string& value, const char* name);
Status SetMaxMessageSize(void* socket);
void CloseSocket(void*& socket);

// The ZeroMQ context a transport uses: the caller's, or its own.
class Context {
 public:
  explicit Context(void* shared) : ctx_(shared), owned_(shared == nullptr) {
    if (owned_) ctx_ = zmq_ctx_new();
  }
  ~Context() {
    if (owned_ && ctx_ != nullptr) zmq_ctx_term(ctx_);
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  void* get() const { return ctx_; }

 private:
  void* ctx_;
  bool owned_;
};

// Wakes an I/O thread blocked in zmq_poll: an eventfd polled next to the socket.
class WakeFd {
 public:
  WakeFd() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~WakeFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  WakeFd(const WakeFd&) = delete;
  WakeFd& operator=(const WakeFd&) = delete;
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void Signal() {
    const uint64_t one = 1;
    while (::write(fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
  }
  void Drain() {
    uint64_t value;
    while (::read(fd_, &value, sizeof(value)) < 0 && errno == EINTR) {
    }
  }

 private:
  int fd_;
};

// ZeroMQ hands a message from zmq_msg_send to the thread that receives it (zero-copy on inproc://)
// and a lent frame to the I/O thread that frees it through its own lock-free pipes. libzmq is not
// built with ThreadSanitizer, so in a TSan build tandem tells TSan about these hand-overs: a send
// releases the bytes and the lent frame, a receive and the free callback acquire them. Nothing in
// other builds.
#if defined(TANDEM_THREAD_SANITIZER)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
inline void ZmqHandOverRelease(const void* addr) { __tsan_release(const_cast<void*>(addr)); }
inline void ZmqHandOverAcquire(const void* addr) { __tsan_acquire(const_cast<void*>(addr)); }
#else
inline void ZmqHandOverRelease(const void*) {}
inline void ZmqHandOverAcquire(const void*) {}
#endif

// Sends `frame` zero-copy. Returns 0, or the errno with `frame` left intact.
int SendFrame(void* socket, Frame& frame, int flags);

// One received ZeroMQ message part.
class ZmqMessage {
 public:
  ZmqMessage() { zmq_msg_init(&msg_); }
  ~ZmqMessage() { zmq_msg_close(&msg_); }
  ZmqMessage(const ZmqMessage&) = delete;
  ZmqMessage& operator=(const ZmqMessage&) = delete;
  zmq_msg_t* get() { return &msg_; }
  std::string_view bytes() {
    const void* data = zmq_msg_data(&msg_);
    ZmqHandOverAcquire(data);
    return {static_cast<const char*>(data), zmq_msg_size(&msg_)};
  }
  bool more() { return zmq_msg_more(&msg_) != 0; }
  // The ZAP User-Id of the connection it came from (CURVE), or null.
  const char* user_id() { return zmq_msg_gets(&msg_, "User-Id"); }

 private:
  zmq_msg_t msg_;
};

}  // namespace tandem::wire::detail
