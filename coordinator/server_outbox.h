// The round engine's Outbox over the coordinator's ZeroMQ transport (wire::Server).
#pragma once

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

}  // namespace tandem
