// The cryptographic costs of secure aggregation (Google Benchmark). The headline is mask
// expansion: AddMask over m uint64 words against the raw OpenSSL AES-256-CTR keystream of the same
// byte length, the two timed alternately in each iteration so machine noise hits both alike
// (target: ratio <= 1.2). Also X25519 agreement, HKDF-SHA256, AES-GCM sealing of a share and
// Shamir split/combine of a 32-byte secret among n in {10, 100}.
//
//   tandem_secagg_crypto_bench [--benchmark_filter=Mask] [--benchmark_min_time=0.5]
//
// Ends with one line per m: "mask expansion m=...: AddMask X GB/s, raw AES-256-CTR Y GB/s,
// ratio Z" (Z the median over iterations of AddMask time / raw time).
#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "privacy/crypto.h"
#include "privacy/shamir.h"

namespace {

using namespace tandem::privacy;
using Clock = std::chrono::steady_clock;

template <typename T>
T Must(tandem::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "tandem_secagg_crypto_bench: %s: %s\n", what,
                 v.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(v).value();
}

void Must(const tandem::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "tandem_secagg_crypto_bench: %s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

// The reference: what OpenSSL alone takes to produce `out.size()` bytes of keystream (one
// context set-up, as AddMask has, and one update over the whole buffer).
void RawCtrKeystream(const Key32& key, const std::vector<uint8_t>& zeros,
                     std::vector<uint8_t>& out) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  const uint8_t iv[16] = {};
  int len = 0;
  if (ctx == nullptr || EVP_EncryptInit_ex2(ctx, EVP_aes_256_ctr(), key.data(), iv, nullptr) != 1 ||
      EVP_EncryptUpdate(ctx, out.data(), &len, zeros.data(), static_cast<int>(zeros.size())) != 1) {
    std::fprintf(stderr, "tandem_secagg_crypto_bench: raw AES-256-CTR failed\n");
    std::exit(1);
  }
  EVP_CIPHER_CTX_free(ctx);
}

struct MaskResult {
  double mask_seconds = 0;
  double raw_seconds = 0;
  double bytes = 0;
  double median_ratio = 0;  // of the per-iteration ratios: robust to a preempted iteration
};
std::map<int64_t, MaskResult>& MaskResults() {
  static std::map<int64_t, MaskResult> results;
  return results;
}

void BM_MaskVsKeystream(benchmark::State& state) {
  const size_t m = static_cast<size_t>(state.range(0));
  const Key32 seed = Must(RandomKey(), "RandomKey");
  std::vector<uint64_t> acc(m, 1);
  const std::vector<uint8_t> zeros(m * 8, 0);
  std::vector<uint8_t> stream(m * 8);
  RawCtrKeystream(seed, zeros, stream);  // warm both paths' pages and caches
  Must(AddMask(seed, 64, false, acc), "AddMask");
  double mask_s = 0, raw_s = 0;
  std::vector<double> ratios;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    RawCtrKeystream(seed, zeros, stream);
    const auto t1 = Clock::now();
    Must(AddMask(seed, 64, false, acc), "AddMask");
    const auto t2 = Clock::now();
    benchmark::DoNotOptimize(stream.data());
    benchmark::DoNotOptimize(acc.data());
    raw_s += std::chrono::duration<double>(t1 - t0).count();
    const double this_mask = std::chrono::duration<double>(t2 - t1).count();
    mask_s += this_mask;
    ratios.push_back(this_mask / std::chrono::duration<double>(t1 - t0).count());
    state.SetIterationTime(this_mask);
  }
  const double bytes = static_cast<double>(m * 8) * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["raw_GBps"] = bytes / raw_s / 1e9;
  std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2, ratios.end());
  const double median = ratios.empty() ? 0 : ratios[ratios.size() / 2];
  state.counters["ratio"] = median;
  MaskResults()[state.range(0)] = {mask_s, raw_s, bytes, median};
}
BENCHMARK(BM_MaskVsKeystream)
    ->Arg(100000)
    ->Arg(1000000)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

void BM_AddMaskModulus32(benchmark::State& state) {
  const Key32 seed = Must(RandomKey(), "RandomKey");
  std::vector<uint64_t> acc(static_cast<size_t>(state.range(0)), 1);
  for (auto _ : state) {
    Must(AddMask(seed, 32, true, acc), "AddMask");
    benchmark::DoNotOptimize(acc.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 8);
}
BENCHMARK(BM_AddMaskModulus32)->Arg(1000000)->Unit(benchmark::kMicrosecond);

void BM_X25519Agree(benchmark::State& state) {
  const X25519KeyPair a = Must(GenerateX25519(), "GenerateX25519");
  const X25519KeyPair b = Must(GenerateX25519(), "GenerateX25519");
  for (auto _ : state)
    benchmark::DoNotOptimize(Must(X25519Agree(a.private_key, b.public_key), "agree"));
}
BENCHMARK(BM_X25519Agree);

void BM_X25519Generate(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(Must(GenerateX25519(), "GenerateX25519"));
}
BENCHMARK(BM_X25519Generate);

void BM_HkdfSha256(benchmark::State& state) {
  const Key32 ikm = Must(RandomKey(), "RandomKey");
  const std::vector<uint8_t> salt(16, 7);
  for (auto _ : state)
    benchmark::DoNotOptimize(Must(HkdfSha256(ikm, salt, "tandem secagg mask"), "hkdf"));
}
BENCHMARK(BM_HkdfSha256);

void BM_SealOpenShares(benchmark::State& state) {
  // The payload of one SecAgg share message: two 32-byte secrets' shares and the ids.
  const Key32 key = Must(RandomKey(), "RandomKey");
  const std::vector<uint8_t> plain(2 * (8 + 5 * 8) + 16, 0x33);
  const std::vector<uint8_t> aad(24, 1);
  for (auto _ : state) {
    Bytes sealed = Must(SealAesGcm(key, plain, aad), "seal");
    benchmark::DoNotOptimize(Must(OpenAesGcm(key, sealed, aad), "open"));
  }
}
BENCHMARK(BM_SealOpenShares);

std::vector<uint32_t> Points(int n) {
  std::vector<uint32_t> xs(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) xs[static_cast<size_t>(i)] = static_cast<uint32_t>(i + 1);
  return xs;
}

// Threshold as SecAgg uses it: a majority of the n holders.
int Threshold(int n) { return n / 2 + 1; }

void BM_ShamirSplit(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const Key32 secret = Must(RandomKey(), "RandomKey");
  const std::vector<uint32_t> xs = Points(n);
  for (auto _ : state)
    benchmark::DoNotOptimize(Must(ShamirSplit(secret, Threshold(n), xs), "split"));
}
BENCHMARK(BM_ShamirSplit)->Arg(10)->Arg(100)->Unit(benchmark::kMicrosecond);

void BM_ShamirCombine(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const Key32 secret = Must(RandomKey(), "RandomKey");
  const std::vector<ShamirShare> shares =
      Must(ShamirSplit(secret, Threshold(n), Points(n)), "split");
  for (auto _ : state) {
    benchmark::DoNotOptimize(Must(ShamirCombine(shares, Threshold(n), secret.size()), "combine"));
  }
}
BENCHMARK(BM_ShamirCombine)->Arg(10)->Arg(100)->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  for (const auto& [m, r] : MaskResults()) {
    std::printf(
        "mask expansion m=%lld: AddMask %.2f GB/s, raw AES-256-CTR %.2f GB/s, ratio %.3f "
        "(median per iteration; %.3f of total times; target <= 1.2)\n",
        static_cast<long long>(m), r.bytes / r.mask_seconds / 1e9, r.bytes / r.raw_seconds / 1e9,
        r.median_ratio, r.mask_seconds / r.raw_seconds);
  }
  return 0;
}
