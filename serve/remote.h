// A device's side of the cloud inference service: a session with `tandem serve` or a coordinator
// over the authenticated transport (wire::Client: CURVE with the client's own key, the service's
// allow-list), requests with ids and deadlines, and the replies matched to them. RemoteVerifier
// puts the service behind route/speculative.h's Verifier, so SpeculativeDecoder drafts on the
// device and verifies in the cloud.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "core/status.h"
#include "route/speculative.h"
#include "serve/schema.h"
#include "wire/transport_client.h"

namespace tandem::serve {

struct RemoteOptions {
  wire::TransportOptions transport;  // endpoint, CURVE keys (or the identity without CURVE)
  std::chrono::milliseconds connect_timeout{10000};  // Hello to Welcome, and the info request
  // How long Call waits for a reply before the device gives up on it (and answers itself); also
  // sent as the request's deadline, so the service does not compute an answer nobody awaits.
  std::chrono::milliseconds timeout{10000};
  // Added before each request is sent: a simulated network round trip (benchmarks).
  std::chrono::milliseconds injected_delay{0};
};

// Counts since Connect.
struct RemoteStats {
  uint64_t calls = 0;      // requests sent (info excluded)
  uint64_t replies = 0;    // answered with a ServeReply
  uint64_t refusals = 0;   // answered with an Error
  uint64_t timeouts = 0;   // no answer within the timeout
  double seconds = 0.0;    // summed wall time of the calls, the injected delay included
};

class RemoteCloud {
 public:
  // Connects, says Hello (capability serve.client), waits for the Welcome and asks the service
  // what it serves. Errors: no Welcome within connect_timeout (Unavailable: a wrong key or an
  // address nobody serves look alike to a CURVE client), the transport's errors.
  static StatusOr<std::unique_ptr<RemoteCloud>> Connect(RemoteOptions options);
  ~RemoteCloud();  // says Bye

  // One request and its reply. Errors: Unavailable when no reply came within the timeout or the
  // session was lost (timed_out() says which), FailedPrecondition carrying the service's Error
  // when it refused the request (last_refusal() holds its code). One thread at a time.
  StatusOr<wire::ServeReply> Call(wire::ServeRequest request);
  StatusOr<CompleteReply> Complete(const CompleteRequest& request);
  StatusOr<VerifyReply> Verify(const VerifyRequest& request);

  const InfoReply& info() const { return info_; }
  const RemoteStats& stats() const { return stats_; }
  wire::TransportStats transport_stats() const { return client_->stats(); }
  bool timed_out() const { return timed_out_; }
  std::optional<wire::ErrorCode> last_refusal() const { return last_refusal_; }
  void set_timeout(std::chrono::milliseconds timeout) { options_.timeout = timeout; }

 private:
  RemoteCloud(RemoteOptions options, std::unique_ptr<wire::Client> client);
  StatusOr<wire::ServeReply> Exchange(wire::ServeRequest request,
                                      std::chrono::milliseconds timeout);

  RemoteOptions options_;
  std::unique_ptr<wire::Client> client_;
  InfoReply info_;
  RemoteStats stats_;
  uint64_t next_id_ = 1;
  bool timed_out_ = false;
  std::optional<wire::ErrorCode> last_refusal_;
};

// The cloud side of speculative decoding over the service: Verify sends the context, the draft
// and its q rows with this verifier's sampling options and a seed drawn from its own stream, so a
// run is reproducible from `seed`. The service must outlive the verifier.
class RemoteVerifier : public Verifier {
 public:
  RemoteVerifier(RemoteCloud* cloud, SamplingOptions sampling, uint64_t seed);
  int vocab() const override { return cloud_->info().vocab; }
  int context_length() const override { return cloud_->info().context; }
  StatusOr<Verdict> Verify(std::span<const int32_t> context, std::span<const int32_t> draft,
                           std::span<const float> q) override;

 private:
  RemoteCloud* cloud_;
  SamplingOptions sampling_;
  Rng seeds_;
};

}  // namespace tandem::serve
