// SessionValidator: replayed and reordered sequence numbers, stale rounds, wrong runs and wrong
// directions are refused with a reason, and a refused message never changes the session.
#include <gtest/gtest.h>

#include <string>

#include "wire/message.h"
#include "wire/session.h"

namespace tandem::wire {
namespace {

constexpr uint64_t kRun = 0xABCDEF;

Message At(Body body, uint64_t round, uint64_t sequence, uint64_t run = kRun) {
  Message m;
  m.envelope.run_id = run;
  m.envelope.round = round;
  m.envelope.task_id = 1;
  m.envelope.sequence = sequence;
  m.body = std::move(body);
  return m;
}

bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

TEST(SessionValidatorTest, ReplayedAndReorderedSequencesAreRejected) {
  SessionValidator v(Role::kCoordinator, kRun);
  EXPECT_FALSE(v.last_sequence().has_value());
  ASSERT_TRUE(v.Accept(At(Heartbeat{}, 0, 1)).ok());
  ASSERT_TRUE(v.Accept(At(Heartbeat{}, 0, 5)).ok());
  Status replay = v.Accept(At(Heartbeat{}, 0, 5));
  ASSERT_FALSE(replay.ok());
  EXPECT_EQ(replay.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(replay, "replayed or out of order: sequence 5 after 5"));
  EXPECT_FALSE(v.Accept(At(Heartbeat{}, 0, 3)).ok());
  EXPECT_EQ(v.last_sequence(), 5u);
  EXPECT_TRUE(v.Accept(At(Heartbeat{}, 0, 6)).ok());  // gaps are fine (lost messages)
}

TEST(SessionValidatorTest, StaleRoundsAreRejected) {
  SessionValidator v(Role::kCoordinator, kRun);
  v.AdvanceRound(4);
  Status stale = v.Accept(At(TaskResult{}, 3, 1));
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(stale, "stale round 3 (current round 4)"));
  EXPECT_FALSE(v.last_sequence().has_value());  // the refused message left no trace
  ASSERT_TRUE(v.Accept(At(TaskResult{}, 4, 1)).ok());
  v.AdvanceRound(2);  // never lowers
  EXPECT_EQ(v.current_round(), 4u);
}

TEST(SessionValidatorTest, AcceptedRoundRaisesTheCurrentRound) {
  SessionValidator v(Role::kClient, kRun);
  ASSERT_TRUE(v.Accept(At(TaskAssign{"k", {}, {}, 0}, 7, 1)).ok());
  EXPECT_EQ(v.current_round(), 7u);
  EXPECT_FALSE(v.Accept(At(TaskCancel{"late"}, 6, 2)).ok());
  EXPECT_EQ(v.last_sequence(), 1u);  // the stale message did not consume sequence 2
  EXPECT_TRUE(v.Accept(At(TaskCancel{"now"}, 7, 2)).ok());
}

TEST(SessionValidatorTest, CheckDoesNotRecord) {
  SessionValidator v(Role::kCoordinator, kRun);
  ASSERT_TRUE(v.Check(At(Heartbeat{}, 9, 10)).ok());
  EXPECT_FALSE(v.last_sequence().has_value());
  EXPECT_EQ(v.current_round(), 0u);
}

TEST(SessionValidatorTest, WrongRunIsRejectedExceptAnUnjoinedHello) {
  SessionValidator v(Role::kCoordinator, kRun);
  Status s = v.Accept(At(Heartbeat{}, 0, 1, kRun + 1));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "for run"));
  EXPECT_TRUE(v.Accept(At(Hello{"a", {}}, 0, 1, 0)).ok());
  EXPECT_FALSE(v.Accept(At(Heartbeat{}, 0, 2, 0)).ok());  // only Hello may omit the run

  SessionValidator client(Role::kClient, 0);  // learns the run from its Welcome
  ASSERT_TRUE(client.Accept(At(Welcome{1, 100, 1000}, 0, 1)).ok());
  EXPECT_EQ(client.run_id(), kRun);
  EXPECT_FALSE(client.Accept(At(Heartbeat{}, 0, 2, kRun + 1)).ok());
}

TEST(SessionValidatorTest, MessagesForTheOtherSideAreRejected) {
  SessionValidator coordinator(Role::kCoordinator, kRun);
  Status s = coordinator.Accept(At(TaskAssign{"k", {}, {}, 0}, 0, 1));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "TaskAssign is never sent to a coordinator"));
  EXPECT_FALSE(coordinator.Accept(At(Welcome{1, 100, 1000}, 0, 1)).ok());
  EXPECT_FALSE(coordinator.Accept(At(TaskCancel{}, 0, 1)).ok());
  EXPECT_TRUE(coordinator.Accept(At(Bye{}, 0, 1)).ok());

  SessionValidator client(Role::kClient, kRun);
  EXPECT_FALSE(client.Accept(At(TaskResult{}, 0, 1)).ok());
  EXPECT_FALSE(client.Accept(At(Hello{}, 0, 1)).ok());
  EXPECT_TRUE(client.Accept(At(Error{ErrorCode::kStale, "x"}, 0, 1)).ok());
}

}  // namespace
}  // namespace tandem::wire
