// Tests of privacy/crypto: X25519 against RFC 7748 §6.1, HKDF against RFC 5869, the AES-256-CTR
// mask generator against AES blocks computed independently in the test, and AES-256-GCM tampering.
#include "privacy/crypto.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstring>
#include <string>
#include <vector>

namespace tandem::privacy {
namespace {

Bytes FromHex(const std::string& hex) {
  Bytes out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

Key32 KeyFromHex(const std::string& hex) {
  Bytes b = FromHex(hex);
  EXPECT_EQ(b.size(), 32u);
  Key32 k{};
  std::memcpy(k.data(), b.data(), std::min(b.size(), k.size()));
  return k;
}

std::string ToHex(std::span<const uint8_t> bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  for (uint8_t b : bytes) {
    s += kDigits[b >> 4];
    s += kDigits[b & 15];
  }
  return s;
}

// AES-256 of 16-byte blocks with ECB (no chaining): the test's own block cipher, independent of
// the CTR mode code under test.
Bytes AesEcb(const Key32& key, const Bytes& blocks) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EXPECT_NE(ctx, nullptr);
  Bytes out(blocks.size() + 16);
  int len = 0, fin = 0;
  EXPECT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), nullptr, key.data(), nullptr), 1);
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  EXPECT_EQ(
      EVP_EncryptUpdate(ctx, out.data(), &len, blocks.data(), static_cast<int>(blocks.size())), 1);
  EXPECT_EQ(EVP_EncryptFinal_ex(ctx, out.data() + len, &fin), 1);
  EVP_CIPHER_CTX_free(ctx);
  out.resize(static_cast<size_t>(len + fin));
  return out;
}

// Keystream word `word` of CTR with a zero IV: AES(counter block), the counter a 128-bit
// big-endian integer starting at 0, read little-endian 8 bytes at a time.
uint64_t ExpectedMaskWord(const Key32& key, size_t word) {
  const uint64_t block = word / 2;
  Bytes counter(16, 0);
  for (int i = 0; i < 8; ++i) counter[15 - i] = static_cast<uint8_t>(block >> (8 * i));
  Bytes ks = AesEcb(key, counter);
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | ks[(word % 2) * 8 + static_cast<size_t>(i)];
  return v;
}

TEST(CryptoTest, RandomBytesDiffer) {
  Bytes a(32), b(32);
  ASSERT_TRUE(RandomBytes(a).ok());
  ASSERT_TRUE(RandomBytes(b).ok());
  EXPECT_NE(a, b);
  auto k1 = RandomKey();
  auto k2 = RandomKey();
  ASSERT_TRUE(k1.ok() && k2.ok());
  EXPECT_NE(*k1, *k2);
}

TEST(CryptoTest, X25519Rfc7748Vector) {
  const Key32 a = KeyFromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const Key32 b = KeyFromHex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  auto pub_a = X25519PublicFromPrivate(a);
  auto pub_b = X25519PublicFromPrivate(b);
  ASSERT_TRUE(pub_a.ok() && pub_b.ok());
  EXPECT_EQ(ToHex(*pub_a), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(ToHex(*pub_b), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  auto k_ab = X25519Agree(a, *pub_b);
  auto k_ba = X25519Agree(b, *pub_a);
  ASSERT_TRUE(k_ab.ok()) << k_ab.status().ToString();
  ASSERT_TRUE(k_ba.ok()) << k_ba.status().ToString();
  EXPECT_EQ(ToHex(*k_ab), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  EXPECT_EQ(*k_ab, *k_ba);
}

TEST(CryptoTest, X25519AgreementIsSymmetric) {
  for (int trial = 0; trial < 5; ++trial) {
    auto alice = GenerateX25519();
    auto bob = GenerateX25519();
    ASSERT_TRUE(alice.ok() && bob.ok());
    EXPECT_NE(alice->public_key, bob->public_key);
    auto pub = X25519PublicFromPrivate(alice->private_key);
    ASSERT_TRUE(pub.ok());
    EXPECT_EQ(*pub, alice->public_key);
    auto ab = X25519Agree(alice->private_key, bob->public_key);
    auto ba = X25519Agree(bob->private_key, alice->public_key);
    ASSERT_TRUE(ab.ok() && ba.ok());
    EXPECT_EQ(*ab, *ba);
    auto eve = GenerateX25519();
    ASSERT_TRUE(eve.ok());
    auto ae = X25519Agree(alice->private_key, eve->public_key);
    ASSERT_TRUE(ae.ok());
    EXPECT_NE(*ae, *ab);
  }
}

TEST(CryptoTest, X25519RejectsLowOrderPoints) {
  auto self = GenerateX25519();
  ASSERT_TRUE(self.ok());
  // u = 0, u = 1, u = p - 1, u = p (a non-canonical 0, which RFC 7748 §5 reduces mod p) and a
  // point of order 8: all give the all-zero shared secret.
  const std::vector<std::string> low_order = {
      "0000000000000000000000000000000000000000000000000000000000000000",
      "0100000000000000000000000000000000000000000000000000000000000000",
      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
      "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
      "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  };
  for (const std::string& hex : low_order) {
    auto k = X25519Agree(self->private_key, KeyFromHex(hex));
    ASSERT_FALSE(k.ok()) << hex;
    EXPECT_EQ(k.status().code(), StatusCode::kInvalidArgument) << k.status().ToString();
  }
}

TEST(CryptoTest, HkdfRfc5869Case1) {
  const Bytes ikm(22, 0x0b);
  const Bytes salt = FromHex("000102030405060708090a0b0c");
  const Bytes info_bytes = FromHex("f0f1f2f3f4f5f6f7f8f9");
  const std::string info(info_bytes.begin(), info_bytes.end());
  const std::string okm =
      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";
  auto out = HkdfSha256(ikm, salt, info, 42);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(ToHex(*out), okm);
  auto key = HkdfSha256(ikm, salt, info);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(ToHex(*key), okm.substr(0, 64));
}

TEST(CryptoTest, HkdfRfc5869Case3EmptySaltAndInfo) {
  const Bytes ikm(22, 0x0b);
  auto out = HkdfSha256(ikm, {}, "", 42);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(ToHex(*out),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

TEST(CryptoTest, HkdfInfoAndSaltChangeTheOutput) {
  const Bytes ikm(32, 0x42);
  const Bytes salt1 = {1, 2, 3};
  const Bytes salt2 = {1, 2, 4};
  auto base = HkdfSha256(ikm, salt1, "tandem secagg mask");
  auto other_info = HkdfSha256(ikm, salt1, "tandem secagg enc");
  auto other_salt = HkdfSha256(ikm, salt2, "tandem secagg mask");
  auto again = HkdfSha256(ikm, salt1, "tandem secagg mask");
  ASSERT_TRUE(base.ok() && other_info.ok() && other_salt.ok() && again.ok());
  EXPECT_EQ(*base, *again);
  EXPECT_NE(*base, *other_info);
  EXPECT_NE(*base, *other_salt);
  EXPECT_FALSE(HkdfSha256(ikm, salt1, "x", 0).ok());
  EXPECT_FALSE(HkdfSha256(ikm, salt1, "x", 255 * 32 + 1).ok());
}

TEST(CryptoTest, AesEcbHelperMatchesFips197) {
  // FIPS 197 C.3 anchors the test's own AES against a published value.
  Key32 key;
  for (int i = 0; i < 32; ++i) key[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
  EXPECT_EQ(ToHex(AesEcb(key, FromHex("00112233445566778899aabbccddeeff"))),
            "8ea2b7ca516745bfeafc49904b496089");
}

TEST(CryptoTest, MaskIsAesCtrKeystreamOfZeros) {
  const Key32 seed = KeyFromHex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
  // Across many of AddMask's internal blocks (a few KiB), ending mid-block.
  std::vector<uint64_t> acc(8192 * 2 + 37, 0);
  ASSERT_TRUE(AddMask(seed, 64, false, acc).ok());
  for (size_t w :
       {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{511}, size_t{512}, size_t{513},
        size_t{8191}, size_t{8192}, size_t{8193}, size_t{16383}, size_t{16384}, acc.size() - 1}) {
    EXPECT_EQ(acc[w], ExpectedMaskWord(seed, w)) << "word " << w;
  }
}

TEST(CryptoTest, MaskStreamDoesNotDependOnLength) {
  auto seed = RandomKey();
  ASSERT_TRUE(seed.ok());
  std::vector<uint64_t> shorter(8190, 0), longer(8192 * 3 + 5, 0);
  ASSERT_TRUE(AddMask(*seed, 64, false, shorter).ok());
  ASSERT_TRUE(AddMask(*seed, 64, false, longer).ok());
  EXPECT_TRUE(std::equal(shorter.begin(), shorter.end(), longer.begin()));
}

TEST(CryptoTest, MaskAddThenSubtractRestoresInput) {
  auto seed = RandomKey();
  ASSERT_TRUE(seed.ok());
  for (int bits : {64, 32, 20, 1}) {
    const uint64_t mask = bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
    std::vector<uint64_t> input(10007);
    for (size_t i = 0; i < input.size(); ++i) input[i] = (i * 0x9E3779B97F4A7C15ull) & mask;
    std::vector<uint64_t> acc = input;
    ASSERT_TRUE(AddMask(*seed, bits, false, acc).ok());
    EXPECT_NE(acc, input) << bits;
    ASSERT_TRUE(AddMask(*seed, bits, true, acc).ok());
    EXPECT_EQ(acc, input) << bits;
  }
}

TEST(CryptoTest, DifferentSeedsGiveDifferentMasks) {
  auto s1 = RandomKey();
  auto s2 = RandomKey();
  ASSERT_TRUE(s1.ok() && s2.ok());
  std::vector<uint64_t> m1(1000, 0), m2(1000, 0);
  ASSERT_TRUE(AddMask(*s1, 64, false, m1).ok());
  ASSERT_TRUE(AddMask(*s2, 64, false, m2).ok());
  size_t equal = 0;
  for (size_t i = 0; i < m1.size(); ++i) equal += m1[i] == m2[i];
  EXPECT_EQ(equal, 0u);
}

TEST(CryptoTest, PairwiseMasksCancel) {
  // Party u adds PRG(s_uv), party v subtracts it: the server's sum holds neither mask.
  auto u = GenerateX25519();
  auto v = GenerateX25519();
  ASSERT_TRUE(u.ok() && v.ok());
  auto s_uv = X25519Agree(u->private_key, v->public_key);
  auto s_vu = X25519Agree(v->private_key, u->public_key);
  ASSERT_TRUE(s_uv.ok() && s_vu.ok());
  auto seed_u = HkdfSha256(*s_uv, {}, "mask");
  auto seed_v = HkdfSha256(*s_vu, {}, "mask");
  ASSERT_TRUE(seed_u.ok() && seed_v.ok());
  for (int bits : {64, 24}) {
    const uint64_t mask = bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
    std::vector<uint64_t> xu(5000), xv(5000);
    for (size_t i = 0; i < xu.size(); ++i) {
      xu[i] = (i * 7 + 3) & mask;
      xv[i] = (i * 11 + 5) & mask;
    }
    std::vector<uint64_t> yu = xu, yv = xv;
    ASSERT_TRUE(AddMask(*seed_u, bits, false, yu).ok());
    ASSERT_TRUE(AddMask(*seed_v, bits, true, yv).ok());
    EXPECT_NE(yu, xu);
    for (size_t i = 0; i < xu.size(); ++i) {
      ASSERT_EQ((yu[i] + yv[i]) & mask, (xu[i] + xv[i]) & mask) << "bits " << bits << " i " << i;
    }
  }
}

TEST(CryptoTest, MaskBelowSixtyFourBitsStaysInTheRing) {
  auto seed = RandomKey();
  ASSERT_TRUE(seed.ok());
  std::vector<uint64_t> full(3000, 0);
  ASSERT_TRUE(AddMask(*seed, 64, false, full).ok());
  for (int bits : {1, 13, 32, 63}) {
    const uint64_t mask = (uint64_t{1} << bits) - 1;
    // Start from out-of-ring values: the result must still be reduced.
    std::vector<uint64_t> acc(3000, ~uint64_t{0});
    ASSERT_TRUE(AddMask(*seed, bits, false, acc).ok());
    uint64_t seen_high = 0;
    for (size_t i = 0; i < acc.size(); ++i) {
      ASSERT_LE(acc[i], mask) << bits;
      // The mask is the low bits of the full-width word.
      ASSERT_EQ(acc[i], (full[i] + mask) & mask) << bits;
      seen_high |= acc[i];
    }
    // The top bit of the ring is used (the stream is not truncated further).
    EXPECT_NE(seen_high >> (bits - 1), 0u) << bits;
  }
}

TEST(CryptoTest, MaskRejectsBadModulus) {
  Key32 seed{};
  std::vector<uint64_t> acc(4, 0);
  EXPECT_EQ(AddMask(seed, 0, false, acc).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(AddMask(seed, 65, false, acc).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(AddMask(seed, 64, false, std::span<uint64_t>()).ok());
}

TEST(CryptoTest, GcmRoundTrip) {
  auto key = RandomKey();
  ASSERT_TRUE(key.ok());
  const Bytes aad = {'r', 'o', 'u', 'n', 'd', '7'};
  for (size_t n : {size_t{0}, size_t{1}, size_t{16}, size_t{1000}}) {
    Bytes plain(n);
    for (size_t i = 0; i < n; ++i) plain[i] = static_cast<uint8_t>(i * 31 + 7);
    auto sealed = SealAesGcm(*key, plain, aad);
    ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
    EXPECT_EQ(sealed->size(), n + kGcmNonceBytes + kGcmTagBytes);
    auto opened = OpenAesGcm(*key, *sealed, aad);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    EXPECT_EQ(*opened, plain);
    // A fresh nonce each time: sealing twice gives different bytes.
    auto sealed2 = SealAesGcm(*key, plain, aad);
    ASSERT_TRUE(sealed2.ok());
    EXPECT_NE(*sealed, *sealed2);
  }
  auto no_aad = SealAesGcm(*key, aad, {});
  ASSERT_TRUE(no_aad.ok());
  auto opened = OpenAesGcm(*key, *no_aad, {});
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(*opened, aad);
}

TEST(CryptoTest, GcmRejectsTamperingAndWrongKey) {
  auto key = RandomKey();
  auto other = RandomKey();
  ASSERT_TRUE(key.ok() && other.ok());
  const Bytes plain(100, 0x5a);
  const Bytes aad = {1, 2, 3, 4};
  auto sealed = SealAesGcm(*key, plain, aad);
  ASSERT_TRUE(sealed.ok());
  auto expect_auth_failure = [&](const Key32& k, const Bytes& s, const Bytes& a, const char* what) {
    auto r = OpenAesGcm(k, s, a);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_TRUE(IsAuthenticationFailure(r.status())) << what << ": " << r.status().ToString();
  };
  const size_t positions[] = {0,
                              kGcmNonceBytes - 1,
                              kGcmNonceBytes,
                              kGcmNonceBytes + 50,
                              sealed->size() - kGcmTagBytes,
                              sealed->size() - 1};
  for (size_t pos : positions) {
    Bytes t = *sealed;
    t[pos] ^= 0x01;
    expect_auth_failure(*key, t, aad, ("flip byte " + std::to_string(pos)).c_str());
  }
  expect_auth_failure(*key, *sealed, {1, 2, 3, 5}, "other aad");
  expect_auth_failure(*key, *sealed, {}, "missing aad");
  expect_auth_failure(*other, *sealed, aad, "wrong key");
  Bytes truncated(sealed->begin(), sealed->end() - 1);
  expect_auth_failure(*key, truncated, aad, "truncated");
  auto too_short = OpenAesGcm(*key, Bytes(27, 0), aad);
  ASSERT_FALSE(too_short.ok());
  EXPECT_EQ(too_short.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(IsAuthenticationFailure(too_short.status()));
}

}  // namespace
}  // namespace tandem::privacy
