// The secure-aggregation client (privacy/secagg_client.h) against a server that lies to it:
// forged key lists, substituted keys, tampered or misrouted ciphertexts, inputs out of range, and
// unmask requests that would reveal both shares of a peer.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "privacy/secagg.h"
#include "privacy/secagg_graph.h"
#include "tests/privacy/secagg_test_util.h"

namespace tandem::privacy {
namespace {

using namespace testing;

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

}  // namespace
}  // namespace tandem::privacy
