// The secure-aggregation server (privacy/secagg_server.h): replayed, reordered and malformed
// messages leave its state unchanged; values above the modulus are refused; a reconstructed key
// is checked against the key its owner advertised.
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

}  // namespace
}  // namespace tandem::privacy
