// Helpers for the secure-aggregation tests: parameters, a round of n clients and a server whose
// every message crosses a byte boundary (Serialize/Parse), and the clients that drop at each step.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "privacy/secagg.h"

namespace tandem::privacy::testing {


// Every message crosses a byte boundary in these tests, as it would on the wire.
template <typename M>
M Wire(const M& m) {
  auto parsed = M::Parse(m.Serialize());
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_TRUE(*parsed == m);
  return *parsed;
}

inline uint64_t Mask(int bits) { return bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1; }

inline SecAggParams Params(int threshold, int modulus_bits = 64, size_t length = 257,
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

inline std::set<int> Range(int from, int to) {
  std::set<int> s;
  for (int i = from; i < to; ++i) s.insert(i);
  return s;
}

}  // namespace tandem::privacy::testing
