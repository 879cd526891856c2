// The inference service's batching (serve/service.h), driven in-process: concurrent requests of
// both kinds, advanced together in passes of up to serve.max_batch, get exactly the replies the
// same requests get one at a time and with max_batch = 1 — greedy and sampled completions of
// different lengths, verifications of different drafts — and a request whose deadline passes
// while it is in the batch is completed, not refused.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/rng.h"
#include "core/threads.h"
#include "models/gpt.h"
#include "models/tokenizer.h"
#include "serve/schema.h"
#include "serve/service.h"

namespace tandem::serve {
namespace {

using std::chrono::milliseconds;

constexpr int kVocab = 256, kContext = 64;

std::shared_ptr<Gpt> RandomModel() {
  auto model = std::make_shared<Gpt>(ModelConfig{kVocab, kContext, 32, 2, 2});
  model->InitWeights(11);
  Rng rng(78);
  for (float& p : model->params()) p += 0.05f * static_cast<float>(rng.Normal());
  return model;
}

// A request as the wire carries it, and who sends it.
struct Sent {
  std::string peer;
  uint64_t id;
  wire::ServeRequest request;
};

// Twelve requests from three clients (four each, the default in-flight limit): completions at
// temperature 0, 0.8 (top-k 20) and 1 with prompts of 1 to 9 tokens and 3 to 24 new tokens,
// some stopping at '\n'; verifications of drafts of 0 to 6 tokens after contexts of 2 to 19
// tokens, with device distributions q that are not uniform.
std::vector<Sent> MixedRequests() {
  std::vector<Sent> out;
  Rng rng(5);
  for (int i = 0; i < 12; ++i) {
    const std::string peer = "client-" + std::to_string(i % 3);
    const uint64_t id = 100 + i;
    if (i % 3 != 2) {
      CompleteRequest c;
      c.prompt.push_back(ByteTokenizer::kEndOfText);
      for (int t = 0; t < i % 9; ++t) c.prompt.push_back('a' + static_cast<int>(rng.Below(26)));
      c.max_tokens = 3 + (i * 7) % 22;
      c.sampling.temperature = i % 4 == 0 ? 0.0f : (i % 4 == 1 ? 0.8f : 1.0f);
      if (i % 4 == 1) c.sampling.top_k = 20;
      c.seed = 1000 + i;
      c.stop = i % 5 == 0 ? '\n' : -1;
      out.push_back({peer, id, EncodeRequest(c, 0)});
    } else {
      VerifyRequest v;
      const int len = 2 + (i * 5) % 18, gamma = i % 7;
      for (int t = 0; t < len; ++t) v.context.push_back(static_cast<int32_t>(rng.Below(kVocab)));
      for (int t = 0; t < gamma; ++t) v.draft.push_back(static_cast<int32_t>(rng.Below(kVocab)));
      v.vocab = kVocab;
      v.q.resize(static_cast<size_t>(gamma) * kVocab);
      for (int r = 0; r < gamma; ++r) {
        double sum = 0.0;
        for (int t = 0; t < kVocab; ++t) sum += v.q[r * kVocab + t] = 0.1f + rng.UniformF();
        for (int t = 0; t < kVocab; ++t) v.q[r * kVocab + t] /= static_cast<float>(sum);
      }
      v.sampling.temperature = i % 2 ? 1.0f : 0.0f;
      v.seed = 2000 + i;
      out.push_back({peer, id, EncodeRequest(v, 0)});
    }
  }
  return out;
}

// Collects the service's answers by request id.
class Answers {
 public:
  ReplySender sender() {
    return [this](const std::string& peer, wire::Message m) {
      std::lock_guard<std::mutex> lock(mu_);
      got_[m.envelope.task_id] = std::move(m);
      cv_.notify_all();
      return Status::Ok();
    };
  }
  // Waits up to 20 s for `n` answers in all.
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [&] { return got_.size() >= n; });
  }
  std::map<uint64_t, wire::Message> all() {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, wire::Message> got_;
};

wire::Message AsMessage(const Sent& s) {
  wire::Message m;
  m.envelope.task_id = s.id;
  m.body = s.request;
  return m;
}

// What a reply says, as text to compare: the tokens of a completion, the verdict of a
// verification, or the error.
std::string Describe(const wire::Message& m, const wire::ServeRequest& request) {
  if (const auto* e = std::get_if<wire::Error>(&m.body)) return "error: " + e->message;
  const auto& reply = std::get<wire::ServeReply>(m.body);
  if (request.kind == kCompleteKind) {
    StatusOr<CompleteReply> c = DecodeCompleteReply(reply, kVocab);
    if (!c.ok()) return "bad reply";
    std::string out = "tokens";
    for (int32_t t : c->tokens) out += " " + std::to_string(t);
    return out;
  }
  StatusOr<VerifyReply> v = DecodeVerifyReply(reply, kVocab, kContext);
  if (!v.ok()) return "bad reply";
  return "accepted " + std::to_string(v->accepted) + " next " + std::to_string(v->next);
}

class BatchingTest : public ::testing::Test {
 protected:
  void SetUp() override { SetComputeThreads(1); }

  // Every request of MixedRequests() submitted at once, the worker held at its first request
  // until all are queued, so that the batch fills; returns the answers described, by id.
  std::map<uint64_t, std::string> AllAtOnce(int max_batch, ServiceStats* stats) {
    const std::vector<Sent> requests = MixedRequests();
    std::atomic<bool> all_sent{false};
    ServiceOptions options;
    options.max_batch = max_batch;
    options.before_compute = [&] {
      const auto until = std::chrono::steady_clock::now() + milliseconds(5000);
      while (!all_sent && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(milliseconds(1));
      }
    };
    Answers answers;
    auto service = InferenceService::Create(model_->shared_weights(), options, answers.sender());
    EXPECT_TRUE(service.ok());
    for (const Sent& s : requests) (*service)->Submit(s.peer, AsMessage(s));
    all_sent = true;
    EXPECT_TRUE(answers.WaitFor(requests.size()));
    *stats = (*service)->stats();
    return Described(answers.all(), requests);
  }

  // The same requests, each sent after the previous one's answer.
  std::map<uint64_t, std::string> OneAtATime() {
    const std::vector<Sent> requests = MixedRequests();
    Answers answers;
    auto service = InferenceService::Create(model_->shared_weights(), {}, answers.sender());
    EXPECT_TRUE(service.ok());
    for (size_t i = 0; i < requests.size(); ++i) {
      (*service)->Submit(requests[i].peer, AsMessage(requests[i]));
      EXPECT_TRUE(answers.WaitFor(i + 1));
    }
    EXPECT_EQ((*service)->stats().max_batched, 1u);
    return Described(answers.all(), requests);
  }

  static std::map<uint64_t, std::string> Described(const std::map<uint64_t, wire::Message>& got,
                                                   const std::vector<Sent>& requests) {
    std::map<uint64_t, std::string> out;
    for (const Sent& s : requests) {
      auto it = got.find(s.id);
      out[s.id] = it == got.end() ? "no answer" : Describe(it->second, s.request);
    }
    return out;
  }

  std::shared_ptr<Gpt> model_ = RandomModel();
};

TEST_F(BatchingTest, ConcurrentRequestsGetTheRepliesOfOneAtATime) {
  const std::map<uint64_t, std::string> alone = OneAtATime();
  ServiceStats batched_stats, serial_stats;
  const std::map<uint64_t, std::string> batched = AllAtOnce(8, &batched_stats);
  const std::map<uint64_t, std::string> serial = AllAtOnce(1, &serial_stats);
  int completions = 0, sampled_tokens = 0;
  for (const auto& [id, text] : alone) {
    EXPECT_EQ(text.rfind("error", 0), std::string::npos) << id << ": " << text;
    EXPECT_EQ(batched.at(id), text) << "request " << id << " batched";
    EXPECT_EQ(serial.at(id), text) << "request " << id << " with max_batch 1";
    completions += text.rfind("tokens", 0) == 0;
    sampled_tokens += static_cast<int>(std::count(text.begin(), text.end(), ' '));
  }
  EXPECT_EQ(completions, 8);
  EXPECT_GT(sampled_tokens, 40);
  // The batch did fill: eight requests shared passes, and fewer passes served them all.
  EXPECT_EQ(batched_stats.served, 12u);
  EXPECT_EQ(batched_stats.max_batched, 8u);
  EXPECT_EQ(serial_stats.max_batched, 1u);
  EXPECT_LT(batched_stats.passes, serial_stats.passes);
  EXPECT_EQ(batched_stats.completions, 8u);
  EXPECT_EQ(batched_stats.verifications, 4u);
}

// A device verifying its text again and again (each context the last one plus the accepted
// tokens and the next) finds its tokens cached and feeds only the new ones; every verdict is the
// one a service that never saw the earlier requests gives.
TEST_F(BatchingTest, AContinuingVerificationReusesTheCacheAndAnswersAsFresh) {
  Answers answers;
  auto service = InferenceService::Create(model_->shared_weights(), {}, answers.sender());
  ASSERT_TRUE(service.ok());
  Rng rng(9);
  VerifyRequest v;
  v.context = {ByteTokenizer::kEndOfText, 'o', 'n', 'c', 'e', ' '};
  v.vocab = kVocab;
  v.sampling.temperature = 1.0f;
  size_t reused = 0;
  for (uint64_t id = 1; id <= 6; ++id) {
    v.draft.clear();
    for (int t = 0; t < 4; ++t) v.draft.push_back(static_cast<int32_t>(rng.Below(kVocab)));
    v.q.assign(4 * kVocab, 1.0f / kVocab);
    v.seed = id;
    (*service)->Submit("client-0", AsMessage({"client-0", id, EncodeRequest(v, 0)}));
    ASSERT_TRUE(answers.WaitFor(id));
    const std::string got = Describe(answers.all().at(id), EncodeRequest(v, 0));
    // The same request to a service that has computed nothing before.
    Answers fresh_answers;
    auto fresh = InferenceService::Create(model_->shared_weights(), {}, fresh_answers.sender());
    ASSERT_TRUE(fresh.ok());
    (*fresh)->Submit("client-0", AsMessage({"client-0", id, EncodeRequest(v, 0)}));
    ASSERT_TRUE(fresh_answers.WaitFor(1));
    EXPECT_EQ(got, Describe(fresh_answers.all().at(id), EncodeRequest(v, 0))) << "request " << id;
    if (id > 1) reused += v.context.size() - 1;
    // The device's next context: this one, the accepted tokens and the next.
    StatusOr<VerifyReply> verdict = DecodeVerifyReply(
        std::get<wire::ServeReply>(answers.all().at(id).body), kVocab, 4);
    ASSERT_TRUE(verdict.ok());
    v.context.insert(v.context.end(), v.draft.begin(), v.draft.begin() + verdict->accepted);
    v.context.push_back(verdict->next);
  }
  // Every request after the first found all of its context but the last token cached.
  EXPECT_EQ((*service)->stats().reused_tokens, reused);
}

// A completion whose deadline (100 ms) passes while it is in the batch — it has joined, and the
// worker is held 400 ms admitting a second request — is completed and answered; only waiting in
// the queue past its deadline makes a request late.
TEST_F(BatchingTest, ADeadlineThatPassesInTheBatchStillGetsItsReply) {
  std::atomic<int> admitted{0};
  std::atomic<bool> both_sent{false};
  ServiceOptions options;
  options.before_compute = [&] {
    if (admitted++ == 0) {  // the first waits for the second to be queued
      const auto until = std::chrono::steady_clock::now() + milliseconds(5000);
      while (!both_sent && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(milliseconds(1));
      }
    } else {
      std::this_thread::sleep_for(milliseconds(400));
    }
  };
  Answers answers;
  auto service = InferenceService::Create(model_->shared_weights(), options, answers.sender());
  ASSERT_TRUE(service.ok());
  CompleteRequest c;
  c.prompt = {ByteTokenizer::kEndOfText, 'h', 'i'};
  c.max_tokens = 40;
  c.sampling.temperature = 1.0f;
  c.seed = 3;
  (*service)->Submit("client-0", AsMessage({"client-0", 1, EncodeRequest(c, 100)}));
  (*service)->Submit("client-1", AsMessage({"client-1", 2, EncodeRequest(c, 5000)}));
  both_sent = true;
  ASSERT_TRUE(answers.WaitFor(2));
  const std::map<uint64_t, wire::Message> got = answers.all();
  for (uint64_t id : {1, 2}) {
    const auto* reply = std::get_if<wire::ServeReply>(&got.at(id).body);
    ASSERT_NE(reply, nullptr) << "request " << id;
    StatusOr<CompleteReply> tokens = DecodeCompleteReply(*reply, kVocab);
    ASSERT_TRUE(tokens.ok());
    EXPECT_EQ(tokens->tokens.size(), 40u);
  }
  // The first was in the batch for the 400 ms the second took to join.
  EXPECT_GT(ReplyMillis(std::get<wire::ServeReply>(got.at(1).body), "compute_ms"), 300.0);
  const ServiceStats s = (*service)->stats();
  EXPECT_EQ(s.late, 0u);
  EXPECT_EQ(s.served, 2u);
  EXPECT_EQ(s.max_batched, 2u);
}

}  // namespace
}  // namespace tandem::serve
