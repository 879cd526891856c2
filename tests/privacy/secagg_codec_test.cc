// The secure-aggregation byte formats (privacy/secagg_codec.h): every message round-trips and
// parses strictly, mutated messages parse safely and canonically, and forged counts and lengths
// are refused.
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
