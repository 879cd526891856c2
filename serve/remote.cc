// The device's session with the inference service; see serve/remote.h.
#include "serve/remote.h"

#include <thread>

#include "core/timer.h"

namespace tandem::serve {

using Clock = std::chrono::steady_clock;

StatusOr<std::unique_ptr<RemoteCloud>> RemoteCloud::Connect(RemoteOptions options) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<wire::Client> client,
                          wire::Client::Connect(options.transport));
  wire::Message hello;
  hello.body = wire::Hello{"tandem/serve-client", {kServeCapability}};
  TANDEM_RETURN_IF_ERROR(client->Send(std::move(hello)));
  const auto until = Clock::now() + options.connect_timeout;
  bool welcomed = false;
  while (!welcomed && Clock::now() < until) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    TANDEM_ASSIGN_OR_RETURN(std::optional<wire::TransportEvent> event,
                            client->Receive(std::max(left, std::chrono::milliseconds(1))));
    if (!event || event->kind != wire::TransportEvent::Kind::kMessage) continue;
    if (std::holds_alternative<wire::Welcome>(event->message.body)) welcomed = true;
    if (const auto* e = std::get_if<wire::Error>(&event->message.body)) {
      return Status::FailedPrecondition("the service refused the session: " + e->message);
    }
  }
  if (!welcomed) {
    return Status::Unavailable("no Welcome from " + options.transport.endpoint + " within " +
                               std::to_string(options.connect_timeout.count()) +
                               " ms (is the service running, and are the keys right?)");
  }
  const auto connect_timeout = options.connect_timeout;
  std::unique_ptr<RemoteCloud> cloud(new RemoteCloud(std::move(options), std::move(client)));
  TANDEM_ASSIGN_OR_RETURN(wire::ServeReply info,
                          cloud->Exchange(EncodeInfoRequest(), connect_timeout));
  TANDEM_ASSIGN_OR_RETURN(cloud->info_, DecodeInfoReply(info));
  return cloud;
}

RemoteCloud::RemoteCloud(RemoteOptions options, std::unique_ptr<wire::Client> client)
    : options_(std::move(options)), client_(std::move(client)) {}

RemoteCloud::~RemoteCloud() {
  wire::Message bye;
  bye.body = wire::Bye{"done"};
  if (client_->Send(std::move(bye)).ok()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the I/O thread send it
  }
}

StatusOr<wire::ServeReply> RemoteCloud::Exchange(wire::ServeRequest request,
                                                 std::chrono::milliseconds timeout) {
  timed_out_ = false;
  last_refusal_.reset();
  const uint64_t id = next_id_++;
  wire::Message m;
  m.envelope.task_id = id;
  request.deadline_ms = static_cast<uint32_t>(timeout.count());
  m.body = std::move(request);
  TANDEM_RETURN_IF_ERROR(client_->Send(std::move(m)));
  const auto until = Clock::now() + timeout;
  for (;;) {
    const auto now = Clock::now();
    if (now >= until) break;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now);
    TANDEM_ASSIGN_OR_RETURN(std::optional<wire::TransportEvent> event,
                            client_->Receive(std::max(left, std::chrono::milliseconds(1))));
    if (!event) continue;
    if (event->kind == wire::TransportEvent::Kind::kPeerLost) {
      return Status::Unavailable("lost the session with the inference service");
    }
    if (event->kind != wire::TransportEvent::Kind::kMessage) continue;
    // A reply to an earlier request that timed out arrives late: not this one's.
    if (event->message.envelope.task_id != id) continue;
    if (auto* reply = std::get_if<wire::ServeReply>(&event->message.body)) {
      return std::move(*reply);
    }
    if (const auto* error = std::get_if<wire::Error>(&event->message.body)) {
      last_refusal_ = error->code;
      return Status::FailedPrecondition("the inference service refused request " +
                                        std::to_string(id) + ": " + error->message);
    }
  }
  timed_out_ = true;
  return Status::Unavailable("no reply from the inference service within " +
                             std::to_string(timeout.count()) + " ms");
}

StatusOr<wire::ServeReply> RemoteCloud::Call(wire::ServeRequest request) {
  Stopwatch watch;
  if (options_.injected_delay.count() > 0) std::this_thread::sleep_for(options_.injected_delay);
  ++stats_.calls;
  StatusOr<wire::ServeReply> reply = Exchange(std::move(request), options_.timeout);
  stats_.seconds += watch.Seconds();
  if (reply.ok()) {
    ++stats_.replies;
  } else if (timed_out_) {
    ++stats_.timeouts;
  } else if (last_refusal_) {
    ++stats_.refusals;
  }
  return reply;
}

StatusOr<CompleteReply> RemoteCloud::Complete(const CompleteRequest& request) {
  TANDEM_ASSIGN_OR_RETURN(wire::ServeReply reply, Call(EncodeRequest(request, 0)));
  return DecodeCompleteReply(reply, info_.vocab);
}

StatusOr<VerifyReply> RemoteCloud::Verify(const VerifyRequest& request) {
  TANDEM_ASSIGN_OR_RETURN(wire::ServeReply reply, Call(EncodeRequest(request, 0)));
  return DecodeVerifyReply(reply, info_.vocab, static_cast<int>(request.draft.size()));
}

RemoteVerifier::RemoteVerifier(RemoteCloud* cloud, SamplingOptions sampling, uint64_t seed)
    : cloud_(cloud), sampling_(sampling), seeds_(seed) {
  TANDEM_CHECK(sampling_.Validate().ok());
}

StatusOr<Verdict> RemoteVerifier::Verify(std::span<const int32_t> context,
                                         std::span<const int32_t> draft,
                                         std::span<const float> q) {
  // The same check the service applies, so a bad request fails here without a round trip.
  TANDEM_RETURN_IF_ERROR(ValidateDraft(context, draft, q, vocab(), context_length()));
  VerifyRequest request;
  request.context.assign(context.begin(), context.end());
  request.draft.assign(draft.begin(), draft.end());
  request.q.assign(q.begin(), q.end());
  request.vocab = vocab();
  request.sampling = sampling_;
  request.seed = seeds_.NextU64();
  TANDEM_ASSIGN_OR_RETURN(const VerifyReply reply, cloud_->Verify(request));
  return Verdict{reply.accepted, reply.next};
}

}  // namespace tandem::serve
