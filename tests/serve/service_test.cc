// The cloud inference service (serve/) over the real transport, CURVE and the allow-list on
// tcp://127.0.0.1 port 0: completions and verifications answer exactly what the cloud model
// computes in this process, remote speculative decoding at temperature 0 is the cloud's greedy
// text, requests that are malformed, over a limit, late or from an unknown key are refused without
// changing what the service counts, and a device whose hand-off is not answered in time answers
// itself.
#include <zmq.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/threads.h"
#include "models/generate.h"
#include "models/gpt.h"
#include "models/tokenizer.h"
#include "route/handoff.h"
#include "route/speculative.h"
#include "serve/ask.h"
#include "serve/remote.h"
#include "serve/server.h"
#include "serve/service.h"
#include "tests/temp_dir.h"
#include "tests/wire/transport_test_util.h"

namespace tandem::serve {
namespace {

using std::chrono::milliseconds;
using wire::testing::CurveSetup;

class OneThread : public ::testing::Environment {
  void SetUp() override { SetComputeThreads(1); }
};
::testing::Environment* const kOneThread = ::testing::AddGlobalTestEnvironment(new OneThread);

constexpr int kVocab = 256, kContext = 64;

std::shared_ptr<Gpt> RandomModel(uint64_t seed, float noise) {
  auto model = std::make_shared<Gpt>(ModelConfig{kVocab, kContext, 32, 2, 2});
  model->InitWeights(seed);
  Rng rng(seed * 7 + 1);
  for (float& p : model->params()) p += noise * static_cast<float>(rng.Normal());
  return model;
}

// A device whose every completion is the hand-off marker: its logits ignore the input (ln_f
// weight 0) and favour the marker, then '\n' (what it says when the marker is banned).
std::shared_ptr<Gpt> HandOffDevice() {
  auto model = std::make_shared<Gpt>(ModelConfig{kVocab, kContext, 32, 2, 2});
  model->InitWeights(3);
  GptWeights& w = model->weights();
  const int C = 32;
  std::fill(w.param("ln_f.weight"), w.param("ln_f.weight") + C, 0.0f);
  std::fill(w.param("ln_f.bias"), w.param("ln_f.bias") + C, 0.0f);
  w.param("ln_f.bias")[0] = 10.0f;
  float* wte = w.param("wte.weight");  // (V,C)
  for (int v = 0; v < kVocab; ++v) wte[v * C] = 0.0f;
  wte[kHandOffToken * C] = 10.0f;
  wte['\n' * C] = 5.0f;
  return model;
}

std::vector<int32_t> PromptTokens(std::string_view text) {
  std::vector<int32_t> t = {ByteTokenizer::kEndOfText};
  ByteTokenizer::EncodeAppend(text, &t);
  return t;
}

class ServiceTest : public tandem::testing::TempDirTest {
 protected:
  void Start(ServiceOptions options = {}) {
    StatusOr<std::unique_ptr<wire::Server>> server = wire::Server::Bind(keys_.ServerOptions());
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    wire::Server* raw = server_.get();
    auto service = InferenceService::Create(
        cloud_->shared_weights(), std::move(options),
        [raw](const std::string& peer, wire::Message m) { return raw->Send(peer, std::move(m)); });
    ASSERT_TRUE(service.ok()) << service.status().ToString();
    service_ = std::move(*service);
    loop_ = std::thread([this] {
      Status s = ServeEvents(server_.get(), service_.get(), 100, 2000, &stop_);
      EXPECT_TRUE(s.ok()) << s.ToString();
    });
  }
  void TearDown() override {
    stop_ = 1;
    if (loop_.joinable()) loop_.join();
    service_.reset();
    server_.reset();
    TempDirTest::TearDown();
  }
  RemoteOptions Remote(const wire::CurveKeyPair& key) const {
    RemoteOptions o;
    o.transport = keys_.ClientOptions(server_->endpoint(), key);
    o.connect_timeout = milliseconds(5000);
    o.timeout = milliseconds(5000);
    return o;
  }
  std::unique_ptr<RemoteCloud> MustConnect(const wire::CurveKeyPair& key) {
    StatusOr<std::unique_ptr<RemoteCloud>> cloud = RemoteCloud::Connect(Remote(key));
    EXPECT_TRUE(cloud.ok()) << cloud.status().ToString();
    return cloud.ok() ? std::move(*cloud) : nullptr;
  }
  // A bare transport client that has joined: requests sent without waiting for their replies.
  std::unique_ptr<wire::Client> MustJoin(const wire::CurveKeyPair& key) {
    auto client = wire::Client::Connect(Remote(key).transport);
    EXPECT_TRUE(client.ok());
    if (!client.ok()) return nullptr;
    wire::Message hello;
    hello.body = wire::Hello{"test", {kServeCapability}};
    EXPECT_TRUE((*client)->Send(std::move(hello)).ok());
    auto welcome = wire::testing::WaitFor(**client, wire::TransportEvent::Kind::kMessage,
                                          milliseconds(5000));
    EXPECT_TRUE(welcome && std::holds_alternative<wire::Welcome>(welcome->message.body));
    return std::move(*client);
  }
  static void SendRequest(wire::Client& client, uint64_t id, wire::ServeRequest request) {
    wire::Message m;
    m.envelope.task_id = id;
    m.body = std::move(request);
    ASSERT_TRUE(client.Send(std::move(m)).ok());
  }
  // The answer to request `id` (a ServeReply or an Error), within 5 s. Answers to other
  // requests that arrive meanwhile are kept for their turn.
  std::optional<wire::Message> AnswerTo(wire::Client& client, uint64_t id) {
    const auto until = std::chrono::steady_clock::now() + milliseconds(5000);
    while (!answers_.count(id) && std::chrono::steady_clock::now() < until) {
      auto event = client.Receive(milliseconds(100));
      if (!event.ok()) return std::nullopt;
      if (*event && (*event)->kind == wire::TransportEvent::Kind::kMessage) {
        answers_[(*event)->message.envelope.task_id] = (*event)->message;
      }
    }
    auto it = answers_.find(id);
    if (it == answers_.end()) return std::nullopt;
    return it->second;
  }
  static CompleteRequest Completion(std::string_view prompt, int max_tokens, float temperature,
                                    uint64_t seed) {
    CompleteRequest r;
    r.prompt = PromptTokens(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.seed = seed;
    r.stop = '\n';
    return r;
  }

  CurveSetup keys_;
  std::shared_ptr<Gpt> cloud_ = RandomModel(11, 0.05f);
  std::unique_ptr<wire::Server> server_;
  std::unique_ptr<InferenceService> service_;
  std::atomic<int> stop_{0};
  std::thread loop_;
  std::map<uint64_t, wire::Message> answers_;
};

TEST_F(ServiceTest, CompletionRoundTripIsTheCloudsOwnDecoding) {
  Start();
  std::unique_ptr<RemoteCloud> remote = MustConnect(keys_.client0);
  ASSERT_NE(remote, nullptr);
  EXPECT_EQ(remote->info().vocab, kVocab);
  EXPECT_EQ(remote->info().context, kContext);
  for (float temperature : {0.0f, 1.0f}) {
    const CompleteRequest request = Completion("hello ", 20, temperature, 77);
    StatusOr<CompleteReply> reply = remote->Complete(request);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    Rng rng(77);
    const std::vector<int32_t> expected =
        DecodeLine(cloud_->shared_weights(), request.prompt, 20, request.sampling, rng);
    EXPECT_EQ(reply->tokens, expected) << "temperature " << temperature;
  }
  const ServiceStats s = service_->stats();
  EXPECT_EQ(s.served, 2u);  // the info request is not a call
  EXPECT_EQ(s.completions, 2u);
  EXPECT_EQ(s.refused, 0u);
  EXPECT_EQ(service_->peer_stats("client-0").served, 2u);  // the identity is the key's name
  EXPECT_EQ(service_->peer_stats("client-1").served, 0u);
}

TEST_F(ServiceTest, VerificationRoundTripMatchesALocalVerifier) {
  Start();
  std::unique_ptr<RemoteCloud> remote = MustConnect(keys_.client0);
  ASSERT_NE(remote, nullptr);
  VerifyRequest request;
  request.context = PromptTokens("the cat");
  request.draft = {'s', 'a', 't', ' '};
  request.q.assign(request.draft.size() * kVocab, 1.0f / kVocab);  // a uniform device
  request.vocab = kVocab;
  request.sampling.temperature = 1.0f;
  int agreed = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    request.seed = seed;
    StatusOr<VerifyReply> reply = remote->Verify(request);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    LocalVerifier local(cloud_->shared_weights(), request.sampling, 0);
    local.Reseed(request.sampling, seed);
    StatusOr<Verdict> expected = local.Verify(request.context, request.draft, request.q);
    ASSERT_TRUE(expected.ok());
    EXPECT_EQ(reply->accepted, expected->accepted) << "seed " << seed;
    EXPECT_EQ(reply->next, expected->next) << "seed " << seed;
    agreed += reply->accepted == expected->accepted && reply->next == expected->next;
  }
  EXPECT_EQ(agreed, 20);
  EXPECT_EQ(service_->stats().verifications, 20u);
}

TEST_F(ServiceTest, GreedyRemoteSpeculativeDecodingIsTheCloudsGreedyText) {
  Start();
  std::unique_ptr<RemoteCloud> remote = MustConnect(keys_.client0);
  ASSERT_NE(remote, nullptr);
  std::shared_ptr<Gpt> device = RandomModel(11, 0.02f);  // close to the cloud, not equal
  device->params()[0] += 0.5f;
  const std::vector<int32_t> prompt = PromptTokens("once upon ");
  Rng reference_rng(1);
  Generator cloud_alone(*cloud_);
  const std::vector<int32_t> greedy =
      cloud_alone.Generate(prompt, 40, SamplingConfig{0.0f, 0}, reference_rng);
  for (int gamma : {1, 4}) {
    SamplingOptions sampling;
    sampling.temperature = 0.0f;
    RemoteVerifier verifier(remote.get(), sampling, 5);
    SpeculativeDecoder decoder(device->shared_weights(), &verifier, {gamma, sampling});
    Rng rng(2);
    StatusOr<std::vector<int32_t>> out = decoder.Generate(prompt, 40, rng);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(*out, greedy) << "gamma " << gamma;
    EXPECT_EQ(decoder.stats().verifier_calls, static_cast<int64_t>(remote->stats().calls))
        << "one round trip per verification";
    if (gamma == 4) EXPECT_GT(decoder.stats().tokens_per_call(), 1.0);
    remote = MustConnect(keys_.client0);  // fresh counts
    ASSERT_NE(remote, nullptr);
  }
}

TEST_F(ServiceTest, BadRequestsAreRefusedAndChangeNothing) {
  Start();
  std::unique_ptr<RemoteCloud> remote = MustConnect(keys_.client0);
  ASSERT_NE(remote, nullptr);
  ASSERT_TRUE(remote->Complete(Completion("a", 2, 0.0f, 1)).ok());
  const ServiceStats before = service_->stats();

  VerifyRequest verify;
  verify.context = PromptTokens("abc");
  verify.draft = {'d', 'e'};
  verify.q.assign(2 * kVocab, 1.0f / kVocab);
  verify.vocab = kVocab;
  const wire::ServeRequest good_verify = EncodeRequest(verify, 0);
  const wire::ServeRequest good_complete = EncodeRequest(Completion("a", 4, 0.0f, 1), 0);
  std::vector<std::pair<std::string, wire::ServeRequest>> bad;
  {
    wire::ServeRequest r = good_complete;
    r.kind = "serve.translate";
    bad.emplace_back("unknown kind", r);
  }
  {
    wire::ServeRequest r = good_complete;
    r.params["max_tokens"] = std::string("four");
    bad.emplace_back("max_tokens a string", r);
  }
  {
    wire::ServeRequest r = good_complete;
    r.params["temperature"] = std::string("hot");
    bad.emplace_back("temperature a string", r);
  }
  {
    wire::ServeRequest r = good_complete;
    r.params.erase("seed");
    bad.emplace_back("no seed", r);
  }
  {
    wire::ServeRequest r = good_complete;
    r.params["extra"] = int64_t{1};
    bad.emplace_back("an unknown parameter", r);
  }
  {
    wire::ServeRequest r = good_complete;
    r.params["max_tokens"] = int64_t{kContext};  // prompt + max_tokens beyond the context
    bad.emplace_back("beyond the context", r);
  }
  {
    wire::ServeRequest r = good_complete;
    r.tensors[0] = wire::Tensor::Float32("prompt", {2}, std::vector<float>{1, 2});
    bad.emplace_back("prompt as f32", r);
  }
  {
    wire::ServeRequest r = good_complete;
    r.tensors[0] = wire::Tensor::Uint32("prompt", {2}, std::vector<uint32_t>{1, 256});
    bad.emplace_back("token outside the vocabulary", r);
  }
  {
    VerifyRequest v = verify;
    v.context.assign(kContext - 1, 'x');  // k = 2 beyond the context
    bad.emplace_back("draft beyond the context", EncodeRequest(v, 0));
  }
  {
    VerifyRequest v = verify;
    v.q[3] = 0.5f;  // row 0 no longer sums to 1
    bad.emplace_back("q not a distribution", EncodeRequest(v, 0));
  }
  {
    wire::ServeRequest r = good_verify;
    r.tensors.pop_back();
    bad.emplace_back("no q", r);
  }
  {
    wire::ServeRequest r = good_verify;
    r.tensors[2].shape = {1, 2 * kVocab};
    bad.emplace_back("q of the wrong shape", r);
  }
  for (auto& [name, request] : bad) {
    StatusOr<wire::ServeReply> reply = remote->Call(request);
    EXPECT_FALSE(reply.ok()) << name;
    EXPECT_EQ(remote->last_refusal(), wire::ErrorCode::kBadMessage) << name;
  }
  const ServiceStats after = service_->stats();
  EXPECT_EQ(after.served, before.served);
  EXPECT_EQ(after.accepted, before.accepted);
  EXPECT_EQ(after.refused, before.refused + bad.size());
  // The session and the service are as they were: a good request is served.
  ASSERT_TRUE(remote->Call(good_verify).ok());
  EXPECT_EQ(service_->stats().served, before.served + 1);
}

TEST_F(ServiceTest, MalformedFramesNeverReachTheService) {
  Start();
  // A raw ZeroMQ socket with an allowed key, so frames no tandem Client would send reach the
  // transport: a Hello to join, then a frame that is not msgpack, a ServeRequest cut short, and
  // one whose kind is an integer.
  void* ctx = zmq_ctx_new();
  void* socket = zmq_socket(ctx, ZMQ_DEALER);
  const int linger = 0, timeout_ms = 5000;
  zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(socket, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
  zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, keys_.server.public_key.data(), 40);
  zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, keys_.client0.public_key.data(), 40);
  zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, keys_.client0.secret_key.data(), 40);
  ASSERT_EQ(zmq_connect(socket, server_->endpoint().c_str()), 0);
  auto send = [&](const std::string& frame) {
    ASSERT_EQ(zmq_send(socket, frame.data(), frame.size(), 0), static_cast<int>(frame.size()));
  };
  auto receive = [&]() -> std::optional<wire::Message> {  // the next message but heartbeats
    static char buffer[65536];
    for (;;) {
      const int n = zmq_recv(socket, buffer, sizeof buffer, 0);
      if (n < 0) return std::nullopt;
      StatusOr<wire::Message> m = wire::DecodeMessage(std::string_view(buffer, n));
      if (!m.ok()) return std::nullopt;
      if (!std::holds_alternative<wire::Heartbeat>(m->body)) return *m;
    }
  };
  wire::Message hello;
  hello.envelope.sequence = 1;
  hello.body = wire::Hello{"raw", {kServeCapability}};
  send(*wire::EncodeMessage(hello));
  std::optional<wire::Message> welcome = receive();
  ASSERT_TRUE(welcome && std::holds_alternative<wire::Welcome>(welcome->body));
  wire::Message request;
  request.envelope.run_id = welcome->envelope.run_id;
  request.envelope.task_id = 9;
  request.envelope.sequence = 2;
  request.body = EncodeRequest(Completion("a", 2, 0.0f, 1), 0);
  const std::string good = *wire::EncodeMessage(request);
  std::string integer_kind = good;
  const size_t at = integer_kind.find("serve.complete");
  ASSERT_NE(at, std::string::npos);
  // The str header byte before "serve.complete" (fixstr, 14 bytes) becomes a positive fixint 7
  // followed by 14 bytes that no longer belong to any field.
  integer_kind[at - 1] = 0x07;
  const uint64_t rejected = server_->stats().rejected;
  for (const std::string& frame :
       {std::string("\xc1\xc1\xc1"), good.substr(0, good.size() - 3), integer_kind}) {
    send(frame);
    std::optional<wire::Message> answer = receive();
    ASSERT_TRUE(answer.has_value());
    const auto* error = std::get_if<wire::Error>(&answer->body);
    ASSERT_NE(error, nullptr);
    EXPECT_EQ(error->code, wire::ErrorCode::kBadMessage);
  }
  EXPECT_EQ(server_->stats().rejected, rejected + 3);
  EXPECT_EQ(service_->stats().received, 0u);
  // The session still works: the good request, sent now, is served.
  send(good);
  std::optional<wire::Message> reply = receive();
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(std::holds_alternative<wire::ServeReply>(reply->body));
  EXPECT_EQ(service_->stats().served, 1u);
  zmq_close(socket);
  zmq_ctx_term(ctx);
}

TEST_F(ServiceTest, CallsOverTheClientsLimitAreRefused) {
  ServiceOptions options;
  options.max_calls_per_client = 2;
  Start(options);
  std::unique_ptr<RemoteCloud> a = MustConnect(keys_.client0);
  std::unique_ptr<RemoteCloud> b = MustConnect(keys_.client1);
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(a->Complete(Completion("x", 2, 0.0f, 1)).ok());
  EXPECT_TRUE(a->Complete(Completion("y", 2, 0.0f, 1)).ok());
  EXPECT_FALSE(a->Complete(Completion("z", 2, 0.0f, 1)).ok());
  EXPECT_EQ(a->last_refusal(), wire::ErrorCode::kRefused);
  EXPECT_EQ(service_->peer_stats("client-0").served, 2u);
  EXPECT_EQ(service_->peer_stats("client-0").accepted, 2u);
  EXPECT_EQ(service_->peer_stats("client-0").refused, 1u);
  // The limit is per client.
  EXPECT_TRUE(b->Complete(Completion("z", 2, 0.0f, 1)).ok());
  EXPECT_EQ(service_->stats().served, 3u);
}

TEST_F(ServiceTest, RequestsBeyondTheInflightLimitAreRefusedAtOnce) {
  std::atomic<bool> release{false};
  ServiceOptions options;
  options.max_inflight_per_client = 1;
  options.before_compute = [&] {
    const auto until = std::chrono::steady_clock::now() + milliseconds(5000);
    while (!release && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(milliseconds(5));
    }
  };
  Start(options);
  std::unique_ptr<wire::Client> client = MustJoin(keys_.client0);
  ASSERT_NE(client, nullptr);
  SendRequest(*client, 1, EncodeRequest(Completion("a", 3, 0.0f, 1), 0));
  SendRequest(*client, 2, EncodeRequest(Completion("b", 3, 0.0f, 1), 0));
  std::optional<wire::Message> second = AnswerTo(*client, 2);
  ASSERT_TRUE(second.has_value());
  const auto* error = std::get_if<wire::Error>(&second->body);
  ASSERT_NE(error, nullptr);
  EXPECT_EQ(error->code, wire::ErrorCode::kOverloaded);
  release = true;
  std::optional<wire::Message> first = AnswerTo(*client, 1);
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(std::holds_alternative<wire::ServeReply>(first->body));
  EXPECT_EQ(service_->stats().served, 1u);
  EXPECT_EQ(service_->stats().accepted, 1u);
}

TEST_F(ServiceTest, ARequestPastItsDeadlineIsRefusedUncomputed) {
  std::atomic<int> computed{0};
  ServiceOptions options;
  options.max_calls_per_client = 2;
  options.before_compute = [&] {
    if (computed++ == 0) std::this_thread::sleep_for(milliseconds(400));  // a slow first request
  };
  Start(options);
  std::unique_ptr<wire::Client> client = MustJoin(keys_.client0);
  ASSERT_NE(client, nullptr);
  SendRequest(*client, 1, EncodeRequest(Completion("a", 3, 0.0f, 1), 5000));
  SendRequest(*client, 2, EncodeRequest(Completion("b", 3, 0.0f, 1), 50));  // waits 400 ms
  std::optional<wire::Message> late = AnswerTo(*client, 2);
  ASSERT_TRUE(late.has_value());
  const auto* error = std::get_if<wire::Error>(&late->body);
  ASSERT_NE(error, nullptr);
  EXPECT_EQ(error->code, wire::ErrorCode::kStale);
  std::optional<wire::Message> first = AnswerTo(*client, 1);
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(std::holds_alternative<wire::ServeReply>(first->body));
  const ServiceStats s = service_->stats();
  EXPECT_EQ(s.served, 1u);
  EXPECT_EQ(s.late, 1u);
  EXPECT_EQ(computed.load(), 1) << "the late request was never computed";
  // The late request gave its call back: with two calls allowed, one more is served, and only
  // the one after it is over the limit.
  SendRequest(*client, 3, EncodeRequest(Completion("c", 3, 0.0f, 1), 5000));
  std::optional<wire::Message> third = AnswerTo(*client, 3);
  ASSERT_TRUE(third.has_value());
  EXPECT_TRUE(std::holds_alternative<wire::ServeReply>(third->body));
  SendRequest(*client, 4, EncodeRequest(Completion("d", 3, 0.0f, 1), 5000));
  std::optional<wire::Message> fourth = AnswerTo(*client, 4);
  ASSERT_TRUE(fourth.has_value());
  const auto* over = std::get_if<wire::Error>(&fourth->body);
  ASSERT_NE(over, nullptr);
  EXPECT_EQ(over->code, wire::ErrorCode::kRefused);
}

TEST_F(ServiceTest, UnauthenticatedClientsGetNowhere) {
  Start();
  RemoteOptions stranger = Remote(keys_.stranger);  // a key not on the allow-list
  stranger.connect_timeout = milliseconds(1500);
  StatusOr<std::unique_ptr<RemoteCloud>> refused = RemoteCloud::Connect(stranger);
  EXPECT_FALSE(refused.ok());
  RemoteOptions wrong_server = Remote(keys_.client0);  // expects another server's key
  wrong_server.transport.server_public_key = keys_.client1.public_key;
  wrong_server.connect_timeout = milliseconds(1500);
  StatusOr<std::unique_ptr<RemoteCloud>> misled = RemoteCloud::Connect(wrong_server);
  EXPECT_FALSE(misled.ok());
  EXPECT_EQ(service_->stats().received, 0u);
  EXPECT_TRUE(server_->peers().empty());
  EXPECT_EQ(server_->stats().frames_received, 0u);
}

TEST_F(ServiceTest, HandOffsGoToTheCloudAndADeviceWithoutAReplyAnswersItself) {
  std::atomic<int> delay_ms{0};
  ServiceOptions options;
  options.before_compute = [&] { std::this_thread::sleep_for(milliseconds(delay_ms.load())); };
  Start(options);
  std::shared_ptr<Gpt> device = HandOffDevice();
  std::unique_ptr<RemoteCloud> remote = MustConnect(keys_.client0);
  ASSERT_NE(remote, nullptr);
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  Rng rng(1);
  // Within the budget, the cloud answers: its own greedy line.
  HandOffCap everything(HandOffBudget{1.0, -1});
  StatusOr<AskResult> cloud = AskOne(device->shared_weights(), "12+30=", 8, greedy, rng,
                                     everything, remote.get());
  ASSERT_TRUE(cloud.ok()) << cloud.status().ToString();
  EXPECT_EQ(cloud->who, Answerer::kCloud);
  EXPECT_EQ(ParseCompletion(cloud->completion).kind, CompletionKind::kHandOff);
  Rng unused(0);
  const std::string cloud_line = ParseCompletion(ByteTokenizer::Decode(DecodeLine(
      cloud_->shared_weights(), PromptTokens("12+30="), 8, greedy, unused))).answer;
  EXPECT_EQ(cloud->answer, cloud_line);
  EXPECT_EQ(service_->stats().served, 1u);
  // Over the budget: the device answers without the marker; the service is not asked.
  HandOffCap nothing(HandOffBudget{0.0, -1});
  const uint64_t received = service_->stats().received;
  StatusOr<AskResult> capped =
      AskOne(device->shared_weights(), "12+30=", 8, greedy, rng, nothing, remote.get());
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->who, Answerer::kDeviceAfterCap);
  EXPECT_EQ(capped->answer, "");  // with the marker banned, this device says '\n' at once
  EXPECT_EQ(service_->stats().received, received);
  // The service is slow: the device gives up after its timeout and answers itself.
  delay_ms = 1500;
  remote->set_timeout(milliseconds(200));
  StatusOr<AskResult> timed_out =
      AskOne(device->shared_weights(), "12+30=", 8, greedy, rng, everything, remote.get());
  ASSERT_TRUE(timed_out.ok());
  EXPECT_EQ(timed_out->who, Answerer::kDeviceAfterTimeout);
  EXPECT_EQ(timed_out->answer, "");
  EXPECT_LT(timed_out->seconds, 1.0);
  EXPECT_TRUE(remote->timed_out());
  EXPECT_EQ(remote->stats().timeouts, 1u);
}

}  // namespace
}  // namespace tandem::serve
