// libzmq adapters (see wire/zmq_socket.h): every libzmq failure becomes a Status naming what
// failed; frames are lent to ZeroMQ without copying and taken back when a send fails.
#include "wire/zmq_socket.h"

#include <utility>

namespace tandem::wire::detail {
namespace {

// A Frame lent to ZeroMQ without copying: ZeroMQ frees it when done, unless the send failed and
// the frame is taken back (for a retry).
struct LentFrame {
  Frame frame;
  bool zmq_owns = true;
};

void ReleaseLentFrame(void*, void* hint) {
  auto* lent = static_cast<LentFrame*>(hint);
  ZmqHandOverAcquire(lent);
  if (lent->zmq_owns) delete lent;
}

}  // namespace

Status ZmqError(const std::string& what) {
  const int err = zmq_errno();
  return Status::Unavailable(what + ": " + zmq_strerror(err));
}

Status SetOption(void* socket, int option, int value, const char* name) {
  if (zmq_setsockopt(socket, option, &value, sizeof(value)) != 0) {
    return ZmqError(std::string("cannot set ") + name);
  }
  return Status::Ok();
}

Status SetOption(void* socket, int option, const std::string& value, const char* name) {
  if (zmq_setsockopt(socket, option, value.data(), value.size()) != 0) {
    return ZmqError(std::string("cannot set ") + name);
  }
  return Status::Ok();
}

Status SetMaxMessageSize(void* socket) {
  const int64_t max = static_cast<int64_t>(kMaxFrameBytes);
  if (zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &max, sizeof(max)) != 0) {
    return ZmqError("cannot set ZMQ_MAXMSGSIZE");
  }
  return Status::Ok();
}

void CloseSocket(void*& socket) {
  if (socket == nullptr) return;
  int linger = 0;
  zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_close(socket);
  socket = nullptr;
}

// Sends `frame` zero-copy. Returns 0, or the errno with `frame` left intact.
int SendFrame(void* socket, Frame& frame, int flags) {
  auto* lent = new LentFrame{std::move(frame)};
  const std::string_view bytes = lent->frame.bytes();
  zmq_msg_t msg;
  zmq_msg_init_data(&msg, const_cast<char*>(bytes.data()), bytes.size(), &ReleaseLentFrame, lent);
  ZmqHandOverRelease(lent);
  ZmqHandOverRelease(bytes.data());
  if (zmq_msg_send(&msg, socket, flags) >= 0) return 0;
  const int err = zmq_errno();
  lent->zmq_owns = false;
  zmq_msg_close(&msg);  // calls ReleaseLentFrame, which now leaves `lent` to us
  frame = std::move(lent->frame);
  delete lent;
  return err;
}

}  // namespace tandem::wire::detail
