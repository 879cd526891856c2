// The round engine's Outbox over the coordinator's ZeroMQ transport (wire::Server).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/engine.h"
#include "wire/transport.h"

namespace tandem {

class ServerOutbox : public Outbox {
 public:
  explicit ServerOutbox(wire::Server* server) : server_(server) {}  // not owned
  Status Send(const std::string& peer, wire::Message message) override {
    return server_->Send(peer, std::move(message));
  }
  Status Broadcast(const std::vector<std::string>& peers, wire::Message message,
                   std::vector<std::string>* unreachable) override {
    return server_->Broadcast(peers, std::move(message), unreachable);
  }
  void AdvanceRound(uint64_t round) override { server_->AdvanceRound(round); }
  uint64_t BytesSent() const override { return server_->stats().bytes_sent; }
  uint64_t BytesReceived() const override { return server_->stats().bytes_received; }

 private:
  wire::Server* server_;
};

// Hands a streamed-contribution event (TransportOptions::stream_contributions) to the engine and,
// for an offer, its decision back to the transport. False for any other event kind.
inline bool DeliverUploadEvent(const wire::TransportEvent& event, RoundEngine* engine,
                               wire::Server* server) {
  switch (event.kind) {
    case wire::TransportEvent::Kind::kUploadOffered: {
      const bool stream = engine->OnUploadOffered(
          event.peer, UploadOffer{event.upload_id, event.round, event.task_id, event.weight,
                                  event.values_total});
      server->DecideUpload(event.peer, event.upload_id, stream);
      return true;
    }
    case wire::TransportEvent::Kind::kUploadValues: {
      // Whole little-endian float32 words (the transport cuts at word boundaries); a heap
      // string's bytes are float-aligned, a short one's may not be.
      const size_t n = event.values.size() / sizeof(float);
      static_assert(std::endian::native == std::endian::little);
      if (reinterpret_cast<uintptr_t>(event.values.data()) % alignof(float) == 0) {
        engine->OnUploadValues(event.peer, event.upload_id, event.value_offset,
                               {reinterpret_cast<const float*>(event.values.data()), n});
      } else {
        std::vector<float> copy(n);
        std::memcpy(copy.data(), event.values.data(), n * sizeof(float));
        engine->OnUploadValues(event.peer, event.upload_id, event.value_offset, copy);
      }
      return true;
    }
    case wire::TransportEvent::Kind::kUploadFailed:
      engine->OnUploadFailed(event.peer, event.upload_id, event.reason);
      return true;
    default:
      return false;
  }
}

}  // namespace tandem
