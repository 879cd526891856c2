// The client session loop; see client/session.h.
#include "client/session.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <set>

#include "core/logging.h"
#include "core/timer.h"
#include "wire/transport.h"

namespace tandem {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(100);

}  // namespace

StatusOr<SessionSummary> RunSession(wire::Client* link, TaskHandler* handler,
                                    const SessionOptions& options) {
  auto log = GetLogger("client");
  Stopwatch clock;
  SessionSummary summary;
  bool joined = false;
  // One Hello per connection: a second Hello on a live connection would start a new session on
  // the coordinator (a re-join) and cost the client its task. A Hello that gets no Welcome ends
  // with the transport reporting the coordinator silent; the session then reconnects after a
  // backoff that doubles up to hello_backoff_max_s.
  double backoff = options.hello_backoff_s;
  double reconnect_at = -1.0;     // >= 0: reconnect then
  // The coordinator went silent while this session was joined, and the link has not been replaced
  // since: if the coordinator is heard again on the same connection (this process was paused, or
  // the network stalled), the session it holds may still be ours.
  bool lost_while_joined = false;
  // Any sign that the old connection works again (the coordinator heard, a Welcome) makes a
  // pending reconnect stale: firing it later would drop whatever the session queued meanwhile,
  // such as the upload of the result of the task it ran after rejoining.
  auto cancel_reconnect = [&](const char* why) {
    if (reconnect_at < 0) return;
    reconnect_at = -1.0;
    log->info("reconnect cancelled: {}", why);
  };
  double last_hello = -1e9;
  double alone_since = 0.0;  // when the session last lost (or had not yet found) the coordinator
  std::set<uint64_t> cancelled;
  // Events taken from the transport ahead of their turn; they are handled before newer ones.
  std::deque<wire::TransportEvent> backlog;
  // A TaskCancel arrives behind its TaskAssign: the coordinator closed a task this client had not
  // answered, which may be running here or waiting behind another. Before and after running a
  // task, everything that has already arrived is taken into the backlog and its cancels noted,
  // so a dead task is not run and a dead result is not uploaded.
  auto note_cancels = [&]() -> Status {
    while (true) {
      TANDEM_ASSIGN_OR_RETURN(std::optional<wire::TransportEvent> next,
                              link->Receive(std::chrono::milliseconds(0)));
      if (!next) return Status::Ok();
      if (next->kind == wire::TransportEvent::Kind::kMessage &&
          std::holds_alternative<wire::TaskCancel>(next->message.body)) {
        cancelled.insert(next->message.envelope.task_id);
      }
      backlog.push_back(std::move(*next));
    }
  };

  auto send_hello = [&]() {
    wire::Message hello;
    hello.envelope.round = 0;
    hello.body = wire::Hello{options.agent, handler->Capabilities()};
    if (Status s = link->Send(std::move(hello)); !s.ok()) {
      log->warn("cannot send Hello: {}", s.message());
    }
    last_hello = clock.Seconds();
  };
  send_hello();

  while (true) {
    if (options.stop != nullptr && options.stop->load()) return summary;
    const double now = clock.Seconds();
    if (!joined && now - alone_since > options.give_up_s) {
      return Status::Unavailable("no coordinator for " +
                                 std::to_string(static_cast<int>(options.give_up_s)) +
                                 " s; giving up");
    }
    if (reconnect_at >= 0 && now >= reconnect_at) {
      reconnect_at = -1.0;
      lost_while_joined = false;
      TANDEM_RETURN_IF_ERROR(link->Reconnect());
      send_hello();
    }
    std::optional<wire::TransportEvent> event;
    if (!backlog.empty()) {
      event = std::move(backlog.front());
      backlog.pop_front();
    } else {
      TANDEM_ASSIGN_OR_RETURN(event, link->Receive(kPoll));
    }
    if (!event) continue;
    if (event->kind == wire::TransportEvent::Kind::kPeerLost) {
      // The transport reports the coordinator's Bye as the end of the peer, with the Bye.
      if (const auto* bye = std::get_if<wire::Bye>(&event->message.body)) {
        log->info("coordinator ended the run: {}", bye->reason);
        return summary;
      }
      // The give-up clock runs from when the coordinator was last there, not from this attempt.
      if (joined) {
        alone_since = clock.Seconds();
        backoff = options.hello_backoff_s;
        lost_while_joined = true;
      }
      joined = false;
      log->warn("coordinator silent; reconnecting in {:.2f} s", backoff);
      reconnect_at = clock.Seconds() + backoff;
      backoff = std::min(backoff * 2, options.hello_backoff_max_s);
      continue;
    }
    if (event->kind == wire::TransportEvent::Kind::kPeerJoined) {
      // The coordinator is heard again on the connection the session already has. If it still
      // holds this session it goes on as before (its heartbeats and tasks flow); if it dropped
      // the session it answers this side's heartbeats with kNotJoined and the session says Hello
      // on this connection. Either way there is nothing left to reconnect.
      cancel_reconnect("the coordinator is heard again on the same connection");
      if (lost_while_joined) {
        lost_while_joined = false;
        joined = true;
        backoff = options.hello_backoff_s;
        log->info("the coordinator is back; going on with the session");
      }
      continue;
    }
    if (event->kind != wire::TransportEvent::Kind::kMessage) continue;
    const wire::Message& m = event->message;
    if (const auto* welcome = std::get_if<wire::Welcome>(&m.body)) {
      cancel_reconnect("joined again");
      lost_while_joined = false;
      if (!joined) {
        joined = true;
        ++summary.joins;
        cancelled.clear();
        backoff = options.hello_backoff_s;
        log->info("joined the run as client {}", welcome->client_index);
        handler->OnWelcome(welcome->client_index);
      }
      continue;
    }
    if (const auto* error = std::get_if<wire::Error>(&m.body)) {
      if (error->code == wire::ErrorCode::kNotJoined) {
        // The coordinator restarted and does not know this session: join again (once per
        // backoff interval: every heartbeat of this side draws the same answer).
        if (joined) {
          log->info("coordinator does not know this session; joining again");
          alone_since = clock.Seconds();
        }
        joined = false;
        if (clock.Seconds() - last_hello >= backoff) {
          send_hello();
          backoff = std::min(backoff * 2, options.hello_backoff_max_s);
        }
      } else if (error->code == wire::ErrorCode::kRefused) {
        return Status::FailedPrecondition("coordinator refused this client: " + error->message);
      } else {
        log->warn("coordinator reports: {}", error->message);
      }
      continue;
    }
    if (std::holds_alternative<wire::Bye>(m.body)) {
      log->info("coordinator ended the run: {}", std::get<wire::Bye>(m.body).reason);
      return summary;
    }
    if (std::holds_alternative<wire::TaskCancel>(m.body)) {
      cancelled.insert(m.envelope.task_id);
      continue;
    }
    const auto* task = std::get_if<wire::TaskAssign>(&m.body);
    if (task == nullptr) continue;
    if (!joined) {
      log->warn("round {}: task {} before Welcome ignored", m.envelope.round, m.envelope.task_id);
      continue;
    }
    TANDEM_RETURN_IF_ERROR(note_cancels());
    if (cancelled.count(m.envelope.task_id)) {
      log->info("round {}: task {} ({}) was cancelled before it started", m.envelope.round,
                m.envelope.task_id, task->kind);
      continue;
    }
    wire::TaskResult result;
    Stopwatch task_clock;
    Status s = handler->Run(m.envelope.round, *task, &result);
    TANDEM_RETURN_IF_ERROR(note_cancels());
    if (cancelled.count(m.envelope.task_id)) {
      log->info("round {}: task {} ({}) was cancelled while it ran; its result is not sent",
                m.envelope.round, m.envelope.task_id, task->kind);
      continue;
    }
    wire::Message reply;
    reply.envelope.round = m.envelope.round;
    reply.envelope.task_id = m.envelope.task_id;
    if (s.ok()) {
      ++summary.tasks_done;
      reply.body = std::move(result);
      log->info("round {}: task {} ({}) done in {:.1f} s", m.envelope.round, m.envelope.task_id,
                task->kind, task_clock.Seconds());
    } else {
      ++summary.tasks_failed;
      log->warn("round {}: task {} ({}) failed: {}", m.envelope.round, m.envelope.task_id,
                task->kind, s.message());
      reply.body = wire::Error{wire::ErrorCode::kTaskFailed, s.message()};
    }
    if (Status sent = link->Send(std::move(reply)); !sent.ok()) {
      log->warn("round {}: result of task {} not sent: {}", m.envelope.round, m.envelope.task_id,
                sent.message());
    }
  }
}

}  // namespace tandem
