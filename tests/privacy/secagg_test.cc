// Tests of privacy/secagg and privacy/secagg_graph: whole rounds in-process with clients dropping
// at every step, a server that lies to clients, replayed, reordered and corrupted messages, too
// few survivors, SecAgg+ over a sparse graph, and strict parsing of every message.
#include "privacy/secagg.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "privacy/secagg_graph.h"

namespace tandem::privacy {
namespace {

// Every message crosses a byte boundary in these tests, as it would on the wire.
template <typename M>
M Wire(const M& m) {
  auto parsed = M::Parse(m.Serialize());
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_TRUE(*parsed == m);
  return *parsed;
}

uint64_t Mask(int bits) { return bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1; }

SecAggParams Params(int threshold, int modulus_bits = 64, size_t length = 257,
                    int neighbours = 0) {
  SecAggParams p;
  p.run_id = 77;
  p.round = 5;
  p.threshold = threshold;
  p.modulus_bits = modulus_bits;
  p.length = length;
  p.neighbours = neighbours;
  p.graph_seed = 1234;
  return p;
}

// Which clients (by index) go silent at each step.
struct Drops {
  std::set<int> before_advertise;  // never advertise
  std::set<int> after_advertise;   // advertise, never share keys
  std::set<int> after_share;       // share keys, never send a masked input
  std::set<int> after_mask;        // mask, never answer the unmask request
};

// One round: n clients named client-00.. with random inputs, a server, and drivers for each step
// that carry every message through Serialize/Parse.
class Harness {
 public:
  Harness(const SecAggParams& params, int n, uint64_t seed = 1) : params_(params) {
    Rng rng(seed);
    for (int i = 0; i < n; ++i) {
      char name[32];
      std::snprintf(name, sizeof(name), "client-%02d", i);
      ids_.push_back(name);
      auto c = SecAggClient::Create(params, name);
      EXPECT_TRUE(c.ok()) << c.status().ToString();
      clients_.push_back(std::move(*c));
      std::vector<uint64_t> x(params.length);
      for (auto& v : x) v = rng.NextU64() & Mask(params.modulus_bits);
      inputs_.push_back(std::move(x));
    }
    auto s = SecAggServer::Create(params, ids_);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    server_.emplace(std::move(*s));
  }

  SecAggServer& server() { return *server_; }
  SecAggClient& client(int i) { return clients_[i]; }
  const std::string& id(int i) const { return ids_[i]; }
  int Index(const std::string& id) const {
    return static_cast<int>(std::find(ids_.begin(), ids_.end(), id) - ids_.begin());
  }
  const std::vector<uint64_t>& input(int i) const { return inputs_[i]; }

  void Advertise(const std::set<int>& drop = {}) {
    for (int i = 0; i < static_cast<int>(ids_.size()); ++i) {
      if (drop.count(i)) continue;
      auto m = clients_[i].Advertise();
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      ASSERT_TRUE(server_->OnAdvertise(ids_[i], Wire(*m)).ok());
    }
  }
  void ShareKeys(const std::set<int>& drop = {}) {
    for (const auto& id : server_->advertised()) {
      const int i = Index(id);
      if (drop.count(i)) continue;
      auto list = server_->KeyListFor(id);
      ASSERT_TRUE(list.ok()) << list.status().ToString();
      auto m = clients_[i].ShareKeys(Wire(*list));
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      Status st = server_->OnShareKeys(id, Wire(*m));
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
  }
  void MaskInputs(const std::set<int>& drop = {}) {
    for (const auto& id : server_->share_senders()) {
      const int i = Index(id);
      if (drop.count(i)) continue;
      auto request = server_->MaskedInputRequestFor(id);
      ASSERT_TRUE(request.ok()) << request.status().ToString();
      std::vector<uint64_t> y = inputs_[i];
      Status st = clients_[i].MaskInput(Wire(*request), y);
      ASSERT_TRUE(st.ok()) << st.ToString();
      st = server_->OnMaskedInput(id, y);
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
  }
  void Unmask(const std::set<int>& drop = {}) {
    for (const auto& id : server_->survivors()) {
      const int i = Index(id);
      if (drop.count(i)) continue;
      auto request = server_->UnmaskRequestFor(id);
      ASSERT_TRUE(request.ok()) << request.status().ToString();
      auto response = clients_[i].Unmask(Wire(*request));
      ASSERT_TRUE(response.ok()) << response.status().ToString();
      Status st = server_->OnUnmask(id, Wire(*response));
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
  }

  // The whole round; the first failing close (or Finish) is returned.
  StatusOr<std::vector<uint64_t>> Run(const Drops& d = {}) {
    Advertise(d.before_advertise);
    TANDEM_RETURN_IF_ERROR(server_->CloseAdvertise());
    ShareKeys(d.after_advertise);
    TANDEM_RETURN_IF_ERROR(server_->CloseShareKeys());
    MaskInputs(d.after_share);
    TANDEM_RETURN_IF_ERROR(server_->CloseMaskedInput());
    Unmask(d.after_mask);
    return server_->Finish();
  }

  // sum over the server's survivors (U3) of their inputs mod 2^k.
  std::vector<uint64_t> ExpectedSum() const {
    std::vector<uint64_t> sum(params_.length, 0);
    for (const auto& id : server_->survivors()) {
      const auto& x = inputs_[Index(id)];
      for (size_t j = 0; j < sum.size(); ++j) sum[j] = (sum[j] + x[j]) & Mask(params_.modulus_bits);
    }
    return sum;
  }

 private:
  SecAggParams params_;
  std::vector<std::string> ids_;
  std::vector<SecAggClient> clients_;
  std::optional<SecAggServer> server_;
  std::vector<std::vector<uint64_t>> inputs_;
};

std::set<int> Range(int from, int to) {
  std::set<int> s;
  for (int i = from; i < to; ++i) s.insert(i);
  return s;
}

// ---- Graph. ----

TEST(SecAggGraphTest, CompleteGraph) {
  SecAggGraph g(6, 0, 1);
  EXPECT_TRUE(g.complete());
  for (uint32_t i = 0; i < 6; ++i) {
    auto n = g.Neighbours(i);
    EXPECT_EQ(n.size(), 5u);
    EXPECT_EQ(std::count(n.begin(), n.end(), i), 0);
    EXPECT_TRUE(std::is_sorted(n.begin(), n.end()));
  }
  // k >= n - 1 is the complete graph too.
  EXPECT_TRUE(SecAggGraph(6, 5, 1).complete());
  EXPECT_TRUE(SecAggGraph(6, 9, 1).complete());
}

TEST(SecAggGraphTest, HararyGraphIsRegularSymmetricAndSeeded) {
  for (uint32_t n : {9u, 10u, 50u, 101u}) {
    for (int k : {2, 3, 4, 7, 8}) {
      if (static_cast<uint32_t>(k) >= n - 1) continue;  // complete
      SecAggGraph g(n, k, 42);
      ASSERT_FALSE(g.complete());
      for (uint32_t i = 0; i < n; ++i) {
        auto nb = g.Neighbours(i);
        const size_t want = (k % 2 == 1 && n % 2 == 1) ? k + 1 : k;
        EXPECT_EQ(nb.size(), want) << "n=" << n << " k=" << k << " node " << i;
        EXPECT_TRUE(std::is_sorted(nb.begin(), nb.end()));
        EXPECT_EQ(std::adjacent_find(nb.begin(), nb.end()), nb.end());
        for (uint32_t j : nb) {
          EXPECT_NE(j, i);
          EXPECT_TRUE(g.Adjacent(j, i)) << "asymmetric edge " << i << "-" << j;
        }
      }
    }
  }
  // Same inputs, same graph; another seed, another graph.
  SecAggGraph a(50, 8, 7), b(50, 8, 7), c(50, 8, 8);
  bool same = true, differs = false;
  for (uint32_t i = 0; i < 50; ++i) {
    auto na = a.Neighbours(i), nb = b.Neighbours(i), nc = c.Neighbours(i);
    same = same && std::equal(na.begin(), na.end(), nb.begin(), nb.end());
    differs = differs || !std::equal(na.begin(), na.end(), nc.begin(), nc.end());
  }
  EXPECT_TRUE(same);
  EXPECT_TRUE(differs);
}

// ---- Parameters. ----

TEST(SecAggParamsTest, Validation) {
  // Refused for the reason named (a check that fails for another reason would hide this one).
  auto refused_for = [](const Status& s, const std::string& why) {
    return !s.ok() && s.code() == StatusCode::kInvalidArgument &&
           s.message().find(why) != std::string::npos;
  };
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(1), 5), "must be at least 2"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(6), 5), "exceeds the cohort of 5"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(2), 1), "cohort of 1 clients"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(3, 7), 5), "modulus_bits 7"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(3, 64, 0), 5), "secagg length 0"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(6, 64, 10, 4), 50), "neighbours + 1 = 5"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(3, 64, 10, -1), 50), "neighbours -1"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(3), kSecAggMaxCompleteGraph + 1),
                          "complete graph"));
  EXPECT_TRUE(ValidateSecAggParams(Params(3), 5).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(1), 5).ok());     // one share reveals the secret
  EXPECT_FALSE(ValidateSecAggParams(Params(6), 5).ok());     // t > n
  EXPECT_FALSE(ValidateSecAggParams(Params(2), 1).ok());     // no cohort
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 7), 5).ok());  // modulus too small
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 65), 5).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 64, 0), 5).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 64, kSecAggMaxLength + 1), 5).ok());
  EXPECT_TRUE(ValidateSecAggParams(Params(5, 64, 10, 4), 50).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(6, 64, 10, 4), 50).ok());  // t > k + 1
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 64, 10, -1), 50).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(3), kSecAggMaxCompleteGraph + 1).ok());
  EXPECT_TRUE(ValidateSecAggParams(Params(3, 64, 10, 8), kSecAggMaxCompleteGraph + 1).ok());
  EXPECT_FALSE(SecAggServer::Create(Params(2), {"a", "b", "a"}).ok());  // duplicate id
  EXPECT_FALSE(SecAggServer::Create(Params(2), {"a", ""}).ok());
  EXPECT_FALSE(SecAggClient::Create(Params(2), std::string(kSecAggMaxClientIdBytes + 1, 'x')).ok());
}

// ---- Whole rounds. ----

TEST(SecAggTest, AllSurviveGivesTheExactSum64) {
  Harness h(Params(3, 64), 6);
  auto sum = h.Run();
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(h.server().survivors().size(), 6u);
  EXPECT_TRUE(h.server().dropped().empty());
  EXPECT_EQ(*sum, h.ExpectedSum());
  EXPECT_EQ(h.server().step(), SecAggStep::kDone);
}

TEST(SecAggTest, AllSurviveGivesTheExactSum32) {
  Harness h(Params(3, 32), 5);
  auto sum = h.Run();
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(*sum, h.ExpectedSum());
  for (uint64_t v : *sum) EXPECT_LT(v, uint64_t{1} << 32);
}

TEST(SecAggTest, MaskedInputHidesTheInput) {
  Harness h(Params(2, 32, 64), 3);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  h.ShareKeys();
  ASSERT_TRUE(h.server().CloseShareKeys().ok());
  auto request = h.server().MaskedInputRequestFor(h.id(0));
  ASSERT_TRUE(request.ok());
  std::vector<uint64_t> y = h.input(0);
  ASSERT_TRUE(h.client(0).MaskInput(*request, y).ok());
  size_t equal = 0;
  for (size_t j = 0; j < y.size(); ++j) {
    EXPECT_LT(y[j], uint64_t{1} << 32);
    equal += y[j] == h.input(0)[j];
  }
  EXPECT_LE(equal, 1u);  // each word equal with probability 2^-32
}

TEST(SecAggTest, DropoutsAtEveryStepAboveThreshold) {
  // 10 clients, t = 4: 1 never advertises, 1 never shares, 2 never mask (recovered from their
  // shares), 2 never answer the unmask request.
  Drops d;
  d.before_advertise = {9};
  d.after_advertise = {0};
  d.after_share = {3, 7};
  d.after_mask = {1, 5};
  for (int bits : {32, 64}) {
    Harness h(Params(4, bits), 10, 11 + bits);
    auto sum = h.Run(d);
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(h.server().advertised().size(), 9u);
    EXPECT_EQ(h.server().share_senders().size(), 8u);
    EXPECT_EQ(h.server().survivors().size(), 6u);
    EXPECT_EQ(h.server().dropped(), (std::vector<std::string>{"client-03", "client-07"}));
    EXPECT_EQ(*sum, h.ExpectedSum());
  }
}

TEST(SecAggTest, DropoutAfterMaskingOnlyIsRecovered) {
  Drops d;
  d.after_share = {2};
  Harness h(Params(3), 5);
  auto sum = h.Run(d);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(*sum, h.ExpectedSum());
  EXPECT_EQ(h.server().survivors().size(), 4u);
}

// Fewer than t at a step: that step's close aborts, and every later call is refused.
void ExpectAborted(Harness& h, const StatusOr<std::vector<uint64_t>>& result) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kFailedPrecondition) << result.status().ToString();
  EXPECT_EQ(h.server().step(), SecAggStep::kAborted);
  EXPECT_FALSE(h.server().Finish().ok());
  EXPECT_FALSE(h.server().CloseMaskedInput().ok());
  EXPECT_FALSE(h.server().OnMaskedInput(h.id(0), h.input(0)).ok());
}

TEST(SecAggTest, TooFewAdvertisedAborts) {
  Drops d;
  d.before_advertise = Range(0, 3);
  Harness h(Params(3), 5);
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, TooFewShareSendersAborts) {
  Drops d;
  d.after_advertise = Range(1, 4);
  Harness h(Params(3), 5);
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, TooFewMaskedInputsAborts) {
  Drops d;
  d.after_share = Range(0, 3);
  Harness h(Params(3), 5);
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, TooFewUnmaskAnswersAbortsWithNothingUnmasked) {
  Drops d;
  d.after_mask = Range(0, 4);  // 1 of 5 answers, t = 3
  Harness h(Params(3), 5);
  auto result = h.Run(d);
  ExpectAborted(h, result);
  EXPECT_NE(result.status().message().find("unmask answers"), std::string::npos);
}

TEST(SecAggTest, TooFewAnswersAfterADropoutAborts) {
  // Complete graph, t = 3 of 5: client-00 drops after sharing keys; of the four survivors only
  // two answer the unmask request, so U4 = 2 < t: abort before any secret is combined.
  Drops d;
  d.after_share = {0};
  d.after_mask = {1, 2};
  Harness h(Params(3), 5);
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, SecAggPlusExactWithAndWithoutDropouts) {
  const SecAggParams params = Params(5, 64, 101, 8);
  {
    Harness h(params, 50, 3);
    auto sum = h.Run();
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(*sum, h.ExpectedSum());
    EXPECT_EQ(h.server().survivors().size(), 50u);
  }
  {
    Drops d;
    d.before_advertise = {49};
    d.after_advertise = {10};
    d.after_share = {3, 21, 40};
    d.after_mask = {7, 30};
    Harness h(params, 50, 4);
    auto sum = h.Run(d);
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(h.server().survivors().size(), 45u);
    EXPECT_EQ(*sum, h.ExpectedSum());
  }
  {
    Harness h(Params(5, 32, 101, 8), 50, 5);
    Drops d;
    d.after_share = {0, 1, 2};
    auto sum = h.Run(d);
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(*sum, h.ExpectedSum());
  }
}

TEST(SecAggTest, SecAggPlusKeyListsCarryOnlyNeighbours) {
  Harness h(Params(5, 64, 8, 8), 50, 6);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  for (int i = 0; i < 50; ++i) {
    auto list = h.server().KeyListFor(h.id(i));
    ASSERT_TRUE(list.ok());
    EXPECT_EQ(list->advertised.size(), 50u);
    EXPECT_EQ(list->neighbours.size(), 9u);
  }
}

// The neighbours of client `i` (U1 = everyone) under `params`, by index.
std::vector<int> NeighboursOf(const SecAggParams& params, int n, uint64_t seed, int i) {
  Harness probe(params, n, seed);
  probe.Advertise();
  EXPECT_TRUE(probe.server().CloseAdvertise().ok());
  auto list = probe.server().KeyListFor(probe.id(i));
  EXPECT_TRUE(list.ok());
  std::vector<int> out;
  for (const auto& p : list->neighbours) {
    if (p.id != probe.id(i)) out.push_back(probe.Index(p.id));
  }
  return out;
}

TEST(SecAggTest, SecAggPlusTooFewAnswersInOneNeighbourhoodAbortsBeforeReconstructing) {
  // k = 4, t = 3, everyone masks; client-00 and two of its four neighbours do not answer the
  // unmask request. 17 answers overall, but only 2 holders of client-00's self-mask seed.
  const SecAggParams params = Params(3, 64, 16, 4);
  const std::vector<int> nb = NeighboursOf(params, 20, 12, 0);
  ASSERT_EQ(nb.size(), 4u);
  Harness h(params, 20, 12);
  Drops d;
  d.after_mask = {0, nb[0], nb[1]};
  auto result = h.Run(d);
  ExpectAborted(h, result);
  EXPECT_NE(result.status().message().find("client-00's self-mask seed"), std::string::npos)
      << result.status().ToString();
}

TEST(SecAggTest, SecAggPlusNeighbourhoodBelowThresholdAborts) {
  // k = 4, t = 5: a client's whole neighbourhood must survive; drop one neighbour of client-00
  // after sharing keys and its self mask can no longer be recovered from t holders.
  const SecAggParams params = Params(5, 64, 16, 4);
  const std::vector<int> nb = NeighboursOf(params, 20, 8, 0);
  ASSERT_EQ(nb.size(), 4u);
  Harness h(params, 20, 8);
  Drops d;
  d.after_share = {nb[2]};
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, FreshKeysEveryRound) {
  auto a = SecAggClient::Create(Params(2), "client-00");
  auto b = SecAggClient::Create(Params(2), "client-00");
  ASSERT_TRUE(a.ok() && b.ok());
  auto ka = a->Advertise(), kb = b->Advertise();
  ASSERT_TRUE(ka.ok() && kb.ok());
  EXPECT_NE(ka->c_public, kb->c_public);
  EXPECT_NE(ka->s_public, kb->s_public);
  EXPECT_NE(ka->c_public, ka->s_public);
  EXPECT_FALSE(a->Advertise().ok());  // once per round
}

// ---- A server that lies to clients. ----

class LyingServerTest : public ::testing::Test {
 protected:
  // 5 clients, t = 3, advertised; key lists ready.
  void SetUp() override {
    h_.Advertise();
    ASSERT_TRUE(h_.server().CloseAdvertise().ok());
    auto list = h_.server().KeyListFor(h_.id(0));
    ASSERT_TRUE(list.ok());
    list_ = *list;
  }
  // Client 0 refuses `forged` and stays where it was.
  void ExpectRefused(const KeyList& forged) {
    auto refused = h_.client(0).ShareKeys(forged);
    EXPECT_FALSE(refused.ok());
    EXPECT_EQ(h_.client(0).step(), SecAggStep::kShareKeys);
  }
  // After any refusals, the honest list is still accepted.
  void TearDown() override {
    if (h_.client(0).step() == SecAggStep::kShareKeys) {
      auto m = h_.client(0).ShareKeys(list_);
      EXPECT_TRUE(m.ok()) << m.status().ToString();
    }
  }
  // Drives the round up to the masked-input step for every client.
  void ToMaskedInput() {
    h_.ShareKeys();
    ASSERT_TRUE(h_.server().CloseShareKeys().ok());
  }
  void ToUnmask(const std::set<int>& drop = {}) {
    ToMaskedInput();
    h_.MaskInputs(drop);
    ASSERT_TRUE(h_.server().CloseMaskedInput().ok());
  }

  Harness h_{Params(3), 5};
  KeyList list_;
};

TEST_F(LyingServerTest, ForgedU1NotSorted) {
  KeyList forged = list_;
  std::swap(forged.advertised[1], forged.advertised[2]);
  ExpectRefused(forged);
}

TEST_F(LyingServerTest, ForgedU1WithoutThisClient) {
  KeyList forged = list_;
  forged.advertised.erase(forged.advertised.begin());
  forged.neighbours.erase(forged.neighbours.begin());
  ExpectRefused(forged);
}

TEST_F(LyingServerTest, ForgedU1BelowThreshold) {
  KeyList forged = list_;
  forged.advertised.resize(2);
  forged.neighbours.resize(2);
  ExpectRefused(forged);
}

TEST_F(LyingServerTest, SubstitutedOwnKey) {
  KeyList forged = list_;
  ASSERT_EQ(forged.neighbours[0].id, h_.id(0));
  forged.neighbours[0].s_public[3] ^= 1;
  ExpectRefused(forged);
  forged = list_;
  forged.neighbours[0].c_public = forged.neighbours[1].c_public;
  ExpectRefused(forged);
}

TEST_F(LyingServerTest, RepeatedPeerKey) {
  KeyList forged = list_;
  forged.neighbours[2].c_public = forged.neighbours[1].c_public;
  ExpectRefused(forged);
}

TEST_F(LyingServerTest, LowOrderPeerKey) {
  KeyList forged = list_;
  forged.neighbours[2].c_public = Key32{};  // the all-zero point: shared secret zero
  ExpectRefused(forged);
}

TEST_F(LyingServerTest, MissingOrExtraNeighbour) {
  KeyList forged = list_;
  forged.neighbours.pop_back();
  ExpectRefused(forged);
  forged = list_;
  forged.neighbours.push_back(forged.neighbours.back());
  ExpectRefused(forged);
  forged = list_;
  forged.neighbours[1].id = "client-99";
  ExpectRefused(forged);
}

TEST_F(LyingServerTest, WrongRound) {
  KeyList forged = list_;
  forged.round += 1;
  ExpectRefused(forged);
}

TEST(SecAggPlusLyingServerTest, NamesANonNeighbour) {
  Harness h(Params(3, 64, 8, 4), 20, 9);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  auto list = h.server().KeyListFor(h.id(0));
  ASSERT_TRUE(list.ok());
  // Replace a neighbour by a client of U1 that is not one, with its real keys.
  std::set<std::string> neighbourhood;
  for (const auto& p : list->neighbours) neighbourhood.insert(p.id);
  std::string outsider;
  for (const auto& id : list->advertised) {
    if (!neighbourhood.count(id)) {
      outsider = id;
      break;
    }
  }
  ASSERT_FALSE(outsider.empty());
  auto outsider_list = h.server().KeyListFor(outsider);
  ASSERT_TRUE(outsider_list.ok());
  PeerKeys outsider_keys;
  for (const auto& p : outsider_list->neighbours) {
    if (p.id == outsider) outsider_keys = p;
  }
  KeyList forged = *list;
  size_t victim = forged.neighbours[0].id == h.id(0) ? 1 : 0;
  forged.neighbours[victim] = outsider_keys;
  std::sort(forged.neighbours.begin(), forged.neighbours.end(),
            [](const PeerKeys& a, const PeerKeys& b) { return a.id < b.id; });
  EXPECT_FALSE(h.client(0).ShareKeys(forged).ok());
  // A complete list where SecAgg+ is configured is refused as well.
  KeyList everyone = *list;
  everyone.neighbours.clear();
  for (const auto& id : list->advertised) {
    auto l = h.server().KeyListFor(id);
    ASSERT_TRUE(l.ok());
    for (const auto& p : l->neighbours) {
      if (p.id == id) everyone.neighbours.push_back(p);
    }
  }
  EXPECT_FALSE(h.client(0).ShareKeys(everyone).ok());
  EXPECT_TRUE(h.client(0).ShareKeys(*list).ok());
}

TEST_F(LyingServerTest, TamperedOrMisroutedCiphertextIsRefused) {
  ToMaskedInput();
  auto request = h_.server().MaskedInputRequestFor(h_.id(0));
  ASSERT_TRUE(request.ok());
  ASSERT_EQ(request->shares.size(), 4u);
  std::vector<uint64_t> x = h_.input(0);
  const std::vector<uint64_t> original = x;

  MaskedInputRequest tampered = *request;
  tampered.shares[1].ciphertext[20] ^= 0x40;
  Status st = h_.client(0).MaskInput(tampered, x);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(IsAuthenticationFailure(st)) << st.ToString();

  // A ciphertext relabelled as coming from another neighbour fails authentication (AAD).
  MaskedInputRequest relabelled = *request;
  std::swap(relabelled.shares[0].peer, relabelled.shares[1].peer);
  EXPECT_FALSE(h_.client(0).MaskInput(relabelled, x).ok());

  // A ciphertext addressed to client 1, forwarded to client 0.
  auto other = h_.server().MaskedInputRequestFor(h_.id(1));
  ASSERT_TRUE(other.ok());
  MaskedInputRequest misrouted = *request;
  for (auto& e : other->shares) {
    if (e.peer == misrouted.shares[1].peer) misrouted.shares[1].ciphertext = e.ciphertext;
  }
  EXPECT_FALSE(h_.client(0).MaskInput(misrouted, x).ok());

  // The same sender twice; a sender that is not a neighbour; too few senders.
  MaskedInputRequest doubled = *request;
  doubled.shares[1] = doubled.shares[0];
  EXPECT_FALSE(h_.client(0).MaskInput(doubled, x).ok());
  MaskedInputRequest stranger = *request;
  stranger.shares[0].peer = "client-99";
  EXPECT_FALSE(h_.client(0).MaskInput(stranger, x).ok());
  MaskedInputRequest few = *request;
  few.shares.resize(1);
  EXPECT_FALSE(h_.client(0).MaskInput(few, x).ok());

  // None of that touched x or the client's state; the honest request still works.
  EXPECT_EQ(x, original);
  EXPECT_EQ(h_.client(0).step(), SecAggStep::kMaskedInput);
  EXPECT_TRUE(h_.client(0).MaskInput(*request, x).ok());
  EXPECT_NE(x, original);
  // Masking twice is refused (two masked inputs against different U2 would leak x).
  EXPECT_FALSE(h_.client(0).MaskInput(*request, x).ok());
}

TEST(SecAggClientTest, InputOutOfRangeIsRefused) {
  Harness h(Params(3, 32, 8), 5);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  h.ShareKeys();
  ASSERT_TRUE(h.server().CloseShareKeys().ok());
  auto request = h.server().MaskedInputRequestFor(h.id(0));
  ASSERT_TRUE(request.ok());
  std::vector<uint64_t> x(8, 1);
  x[3] = uint64_t{1} << 32;
  EXPECT_FALSE(h.client(0).MaskInput(*request, x).ok());
  std::vector<uint64_t> short_x(7, 1);
  EXPECT_FALSE(h.client(0).MaskInput(*request, short_x).ok());
}

TEST_F(LyingServerTest, UnmaskRequestsThatWouldRevealBothSharesAreRefused) {
  ToUnmask({2});  // client-02 dropped after sharing keys
  auto request = h_.server().UnmaskRequestFor(h_.id(0));
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->dropped, (std::vector<std::string>{"client-02"}));

  // Both kinds for one peer in one request.
  UnmaskRequest both = *request;
  both.survivors.push_back("client-02");
  EXPECT_FALSE(h_.client(0).Unmask(both).ok());
  // A survivor also listed as dropped.
  UnmaskRequest twice = *request;
  twice.dropped.push_back("client-01");
  EXPECT_FALSE(h_.client(0).Unmask(twice).ok());
  // This client named as dropped, or left out.
  UnmaskRequest self_dropped = *request;
  self_dropped.survivors.erase(self_dropped.survivors.begin());
  self_dropped.dropped.push_back(h_.id(0));
  EXPECT_FALSE(h_.client(0).Unmask(self_dropped).ok());
  UnmaskRequest no_self = *request;
  no_self.survivors.erase(no_self.survivors.begin());
  EXPECT_FALSE(h_.client(0).Unmask(no_self).ok());
  // A peer left out of both lists; a peer that is not a neighbour.
  UnmaskRequest partial = *request;
  partial.survivors.pop_back();
  EXPECT_FALSE(h_.client(0).Unmask(partial).ok());
  UnmaskRequest stranger = *request;
  stranger.survivors.push_back("client-99");
  EXPECT_FALSE(h_.client(0).Unmask(stranger).ok());
  // Too few survivors: declare every survivor but self dropped.
  UnmaskRequest few;
  few.run_id = request->run_id;
  few.round = request->round;
  few.survivors = {h_.id(0)};
  few.dropped = {"client-01", "client-02", "client-03", "client-04"};
  EXPECT_FALSE(h_.client(0).Unmask(few).ok());
  EXPECT_EQ(h_.client(0).step(), SecAggStep::kUnmask);

  // The honest request is answered; the same again gets the same answer; a different one (that
  // would reveal client-01's s^SK after its b) is refused.
  auto answer = h_.client(0).Unmask(*request);
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->self_mask_shares.size(), 4u);
  EXPECT_EQ(answer->key_shares.size(), 1u);
  auto again = h_.client(0).Unmask(*request);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(*again == *answer);
  UnmaskRequest flipped = *request;
  flipped.survivors.erase(std::find(flipped.survivors.begin(), flipped.survivors.end(), "client-01"));
  flipped.dropped.push_back("client-01");
  std::sort(flipped.dropped.begin(), flipped.dropped.end());
  EXPECT_FALSE(h_.client(0).Unmask(flipped).ok());
}

// ---- Replayed, reordered and malformed messages at the server. ----

TEST(SecAggServerTest, ReplayedAndReorderedMessagesLeaveStateUnchanged) {
  Harness h(Params(3, 64, 33), 5);
  SecAggServer& s = h.server();
  std::vector<AdvertiseKeys> adverts;
  for (int i = 0; i < 5; ++i) {
    auto m = h.client(i).Advertise();
    ASSERT_TRUE(m.ok());
    adverts.push_back(*m);
  }
  // Too early: steps that belong later.
  EXPECT_FALSE(s.KeyListFor(h.id(0)).ok());
  EXPECT_FALSE(s.OnShareKeys(h.id(0), ShareKeysMessage{77, 5, {}}).ok());
  EXPECT_FALSE(s.OnMaskedInput(h.id(0), h.input(0)).ok());
  EXPECT_FALSE(s.CloseShareKeys().ok());
  EXPECT_FALSE(s.CloseMaskedInput().ok());
  EXPECT_FALSE(s.Finish().ok());
  EXPECT_EQ(s.step(), SecAggStep::kAdvertise);

  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s.OnAdvertise(h.id(i), adverts[i]).ok());
  // Replayed; unknown sender; another round; one key for both purposes.
  EXPECT_FALSE(s.OnAdvertise(h.id(0), adverts[0]).ok());
  EXPECT_FALSE(s.OnAdvertise("client-99", adverts[0]).ok());
  AdvertiseKeys old = adverts[1];
  old.round = 4;
  EXPECT_FALSE(s.OnAdvertise(h.id(1), old).ok());
  ASSERT_TRUE(s.CloseAdvertise().ok());
  EXPECT_FALSE(s.CloseAdvertise().ok());
  EXPECT_FALSE(s.OnAdvertise(h.id(0), adverts[0]).ok());  // late
  EXPECT_EQ(s.advertised().size(), 5u);

  std::vector<ShareKeysMessage> shares;
  for (int i = 0; i < 5; ++i) {
    auto list = s.KeyListFor(h.id(i));
    ASSERT_TRUE(list.ok());
    auto m = h.client(i).ShareKeys(*list);
    ASSERT_TRUE(m.ok());
    shares.push_back(*m);
    // A replayed key list is refused by the client.
    EXPECT_FALSE(h.client(i).ShareKeys(*list).ok());
  }
  // Malformed share messages: wrong count, a recipient that is self, duplicated, unknown.
  ShareKeysMessage bad = shares[0];
  bad.shares.pop_back();
  EXPECT_FALSE(s.OnShareKeys(h.id(0), bad).ok());
  bad = shares[0];
  bad.shares[0].peer = h.id(0);
  EXPECT_FALSE(s.OnShareKeys(h.id(0), bad).ok());
  bad = shares[0];
  bad.shares[1].peer = bad.shares[0].peer;
  EXPECT_FALSE(s.OnShareKeys(h.id(0), bad).ok());
  bad = shares[0];
  bad.shares[1].peer = "client-99";
  EXPECT_FALSE(s.OnShareKeys(h.id(0), bad).ok());
  bad = shares[0];
  bad.shares[1].ciphertext.resize(10);
  EXPECT_FALSE(s.OnShareKeys(h.id(0), bad).ok());
  // Shares for the wrong sender (client 1's message claimed by client 0) are caught too: it
  // names client 0 as a recipient.
  EXPECT_FALSE(s.OnShareKeys(h.id(0), shares[1]).ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s.OnShareKeys(h.id(i), shares[i]).ok());
  EXPECT_FALSE(s.OnShareKeys(h.id(2), shares[2]).ok());  // replay
  ASSERT_TRUE(s.CloseShareKeys().ok());

  std::vector<std::vector<uint64_t>> ys;
  for (int i = 0; i < 5; ++i) {
    auto request = s.MaskedInputRequestFor(h.id(i));
    ASSERT_TRUE(request.ok());
    std::vector<uint64_t> y = h.input(i);
    ASSERT_TRUE(h.client(i).MaskInput(*request, y).ok());
    ys.push_back(y);
  }
  EXPECT_FALSE(s.OnUnmask(h.id(0), UnmaskResponse{77, 5, {}, {}}).ok());  // too early
  std::vector<uint64_t> wrong_length(ys[0].begin(), ys[0].end() - 1);
  EXPECT_FALSE(s.OnMaskedInput(h.id(0), wrong_length).ok());
  EXPECT_FALSE(s.OnMaskedInput("client-99", ys[0]).ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s.OnMaskedInput(h.id(i), ys[i]).ok());
  EXPECT_FALSE(s.OnMaskedInput(h.id(3), ys[3]).ok());  // replay: would add y twice
  ASSERT_TRUE(s.CloseMaskedInput().ok());
  EXPECT_FALSE(s.OnMaskedInput(h.id(3), ys[3]).ok());  // late

  std::vector<UnmaskResponse> answers;
  for (int i = 0; i < 5; ++i) {
    auto request = s.UnmaskRequestFor(h.id(i));
    ASSERT_TRUE(request.ok());
    auto r = h.client(i).Unmask(*request);
    ASSERT_TRUE(r.ok());
    answers.push_back(*r);
  }
  // Another client's answer under this sender (wrong x), reordered shares, a wrong share length,
  // a share value not below the prime.
  EXPECT_FALSE(s.OnUnmask(h.id(0), answers[1]).ok());
  UnmaskResponse bad_answer = answers[0];
  std::swap(bad_answer.self_mask_shares[0], bad_answer.self_mask_shares[1]);
  EXPECT_FALSE(s.OnUnmask(h.id(0), bad_answer).ok());
  bad_answer = answers[0];
  bad_answer.self_mask_shares[2].share.y.pop_back();
  EXPECT_FALSE(s.OnUnmask(h.id(0), bad_answer).ok());
  bad_answer = answers[0];
  bad_answer.self_mask_shares[2].share.y[0] = kShamirPrime;
  EXPECT_FALSE(s.OnUnmask(h.id(0), bad_answer).ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s.OnUnmask(h.id(i), answers[i]).ok());
  EXPECT_FALSE(s.OnUnmask(h.id(4), answers[4]).ok());  // replay

  auto sum = s.Finish();
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(*sum, h.ExpectedSum());
  EXPECT_FALSE(s.Finish().ok());  // once
}

TEST(SecAggServerTest, ValuesAboveTheModulusAreRejected) {
  Harness h(Params(3, 32, 16), 4);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  h.ShareKeys();
  ASSERT_TRUE(h.server().CloseShareKeys().ok());
  std::vector<uint64_t> y(16, 5);
  y[15] = uint64_t{1} << 40;
  EXPECT_FALSE(h.server().OnMaskedInput(h.id(0), y).ok());
  // Still accepted from the same client afterwards: the rejection left no trace.
  h.MaskInputs();
  ASSERT_TRUE(h.server().CloseMaskedInput().ok());
  h.Unmask();
  auto sum = h.server().Finish();
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(*sum, h.ExpectedSum());
}

TEST(SecAggServerTest, ReconstructedKeyIsCheckedAgainstItsPublicKey) {
  // A survivor that reveals a corrupted (but well-formed) share of a dropped client's key: the
  // reconstructed s^SK does not match the advertised public key, and the round aborts. (Adding
  // the same offset to every share would only shift the secret by it, here inside the bits
  // X25519 clamps away: one share is changed.)
  Harness h(Params(3, 64, 8), 4);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  h.ShareKeys();
  ASSERT_TRUE(h.server().CloseShareKeys().ok());
  h.MaskInputs({3});
  ASSERT_TRUE(h.server().CloseMaskedInput().ok());
  for (int i = 0; i < 3; ++i) {
    auto request = h.server().UnmaskRequestFor(h.id(i));
    ASSERT_TRUE(request.ok());
    auto r = h.client(i).Unmask(*request);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->key_shares.size(), 1u);
    if (i == 0) r->key_shares[0].share.y[2] = (r->key_shares[0].share.y[2] + 1) % kShamirPrime;
    ASSERT_TRUE(h.server().OnUnmask(h.id(i), *r).ok());
  }
  auto sum = h.server().Finish();
  EXPECT_FALSE(sum.ok());
  EXPECT_EQ(h.server().step(), SecAggStep::kAborted);
}

// ---- Wire formats. ----

// Every strict prefix and every one-byte extension of `bytes` must fail to parse.
template <typename M>
void ExpectStrict(const Bytes& bytes) {
  ASSERT_TRUE(M::Parse(bytes).ok());
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(M::Parse(std::span<const uint8_t>(bytes.data(), n)).ok()) << "prefix " << n;
  }
  Bytes longer = bytes;
  longer.push_back(0);
  EXPECT_FALSE(M::Parse(longer).ok());
  Bytes version = bytes;
  version[0] ^= 0xff;
  EXPECT_FALSE(M::Parse(version).ok());
  Bytes type = bytes;
  type[1] ^= 0x0f;
  EXPECT_FALSE(M::Parse(type).ok());
}

TEST(SecAggWireTest, EveryMessageRoundTripsAndParsesStrictly) {
  Harness h(Params(2, 64, 4), 3);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  auto list = h.server().KeyListFor(h.id(0));
  ASSERT_TRUE(list.ok());
  ExpectStrict<KeyList>(list->Serialize());
  auto share = h.client(0).ShareKeys(*list);
  ASSERT_TRUE(share.ok());
  ExpectStrict<ShareKeysMessage>(share->Serialize());
  h.ShareKeys({0});
  ASSERT_TRUE(h.server().OnShareKeys(h.id(0), *share).ok());
  ASSERT_TRUE(h.server().CloseShareKeys().ok());
  auto request = h.server().MaskedInputRequestFor(h.id(1));
  ASSERT_TRUE(request.ok());
  ExpectStrict<MaskedInputRequest>(request->Serialize());
  h.MaskInputs({2});
  ASSERT_TRUE(h.server().CloseMaskedInput().ok());
  auto unmask = h.server().UnmaskRequestFor(h.id(1));
  ASSERT_TRUE(unmask.ok());
  ExpectStrict<UnmaskRequest>(unmask->Serialize());
  auto answer = h.client(1).Unmask(*unmask);
  ASSERT_TRUE(answer.ok());
  ExpectStrict<UnmaskResponse>(answer->Serialize());
  AdvertiseKeys keys{77, 5, {}, {}};
  keys.c_public[0] = 1;
  ExpectStrict<AdvertiseKeys>(keys.Serialize());

  // Messages of one type do not parse as another.
  EXPECT_FALSE(KeyList::Parse(share->Serialize()).ok());
  EXPECT_FALSE(MaskedInputRequest::Parse(share->Serialize()).ok());
}

// Random byte flips, truncations and insertions: parsing never reads out of bounds (run under
// TANDEM_SANITIZE to see it), and whatever parses is canonical: it serializes to the same bytes.
template <typename M>
void FuzzParse(const Bytes& original, uint64_t seed) {
  Rng rng(seed);
  int parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    Bytes b = original;
    const int edits = 1 + static_cast<int>(rng.Below(3));
    for (int e = 0; e < edits && !b.empty(); ++e) {
      const size_t at = rng.Below(b.size());
      switch (rng.Below(3)) {
        case 0: b[at] ^= static_cast<uint8_t>(1 + rng.Below(255)); break;
        case 1: b.resize(at); break;
        default: b.insert(b.begin() + at, static_cast<uint8_t>(rng.Below(256))); break;
      }
    }
    auto m = M::Parse(b);
    if (m.ok()) {
      ++parsed;
      EXPECT_EQ(m->Serialize(), b);
    }
  }
  EXPECT_LT(parsed, 3000);
}

TEST(SecAggWireTest, MutatedMessagesParseSafelyAndCanonically) {
  Harness h(Params(2, 64, 4), 3);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  auto list = h.server().KeyListFor(h.id(0));
  ASSERT_TRUE(list.ok());
  FuzzParse<KeyList>(list->Serialize(), 1);
  h.ShareKeys();
  ASSERT_TRUE(h.server().CloseShareKeys().ok());
  auto request = h.server().MaskedInputRequestFor(h.id(0));
  ASSERT_TRUE(request.ok());
  FuzzParse<MaskedInputRequest>(request->Serialize(), 2);
  h.MaskInputs({2});
  ASSERT_TRUE(h.server().CloseMaskedInput().ok());
  auto unmask = h.server().UnmaskRequestFor(h.id(0));
  ASSERT_TRUE(unmask.ok());
  FuzzParse<UnmaskRequest>(unmask->Serialize(), 3);
  auto answer = h.client(0).Unmask(*unmask);
  ASSERT_TRUE(answer.ok());
  FuzzParse<UnmaskResponse>(answer->Serialize(), 4);
  FuzzParse<AdvertiseKeys>(AdvertiseKeys{1, 2, {}, {}}.Serialize(), 5);
  FuzzParse<ShareKeysMessage>(ShareKeysMessage{1, 2, {{"a", Bytes(40, 7)}, {"bb", Bytes(30, 1)}}}.Serialize(), 6);
}

TEST(SecAggWireTest, ForgedCountsAndLengthsAreRejected) {
  // UnmaskRequest with a survivor count far beyond the bytes that follow.
  UnmaskRequest r{1, 2, {"a"}, {}};
  Bytes b = r.Serialize();
  // Header is 18 bytes; the survivor count follows.
  b[18] = 0xff;
  b[19] = 0xff;
  b[20] = 0xff;
  b[21] = 0x7f;
  EXPECT_FALSE(UnmaskRequest::Parse(b).ok());
  b[20] = b[21] = 0;  // 0xffff: below the cap, far beyond the bytes
  EXPECT_FALSE(UnmaskRequest::Parse(b).ok());
  // An empty id, and an over-long one.
  UnmaskRequest empty_id{1, 2, {"a"}, {}};
  b = empty_id.Serialize();
  b[22] = 0;  // id length low byte: 1 -> 0, leaving one trailing byte
  b[23] = 0;
  EXPECT_FALSE(UnmaskRequest::Parse(b).ok());
  UnmaskRequest long_id{1, 2, {std::string(kSecAggMaxClientIdBytes + 1, 'x')}, {}};
  EXPECT_FALSE(UnmaskRequest::Parse(long_id.Serialize()).ok());
  // A ciphertext too short to hold nonce and tag.
  ShareKeysMessage m{1, 2, {{"a", Bytes(kGcmNonceBytes + kGcmTagBytes, 0)}}};
  EXPECT_FALSE(ShareKeysMessage::Parse(m.Serialize()).ok());
  m.shares[0].ciphertext.push_back(0);
  EXPECT_TRUE(ShareKeysMessage::Parse(m.Serialize()).ok());
  // A revealed share whose value is not below the prime.
  UnmaskResponse u{1, 2, {{"a", ShamirShare{1, {1, 2, 3, 4, kShamirPrime}}}}, {}};
  EXPECT_FALSE(UnmaskResponse::Parse(u.Serialize()).ok());
}

}  // namespace
}  // namespace tandem::privacy
