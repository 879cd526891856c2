#include "distill/topk.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <string>

namespace tandem {
namespace {

// Largest vocabulary a decoded message may declare: bounds the allocations a peer can cause.
constexpr uint32_t kMaxWireVocab = 1u << 24;
constexpr uint32_t kPackedVocab = 1u << 16;

bool Packed(int vocab) { return static_cast<uint32_t>(vocab) <= kPackedVocab; }

size_t IndexWords(size_t n_indices, int vocab) {
  return Packed(vocab) ? (n_indices + 1) / 2 : n_indices;
}

Status RowError(const char* what, int row) {
  return Status::Corruption(std::string("top-k targets: ") + what + " in row " +
                            std::to_string(row));
}

}  // namespace

Status ValidateTopK(const TopKTargets& t) {
  if (t.rows < 0) return Status::Corruption("top-k targets: negative row count");
  if (t.vocab < 1) return Status::Corruption("top-k targets: vocabulary size must be >= 1");
  if (t.k < 1 || t.k > t.vocab) {
    return Status::Corruption("top-k targets: k = " + std::to_string(t.k) + " not in [1, " +
                              std::to_string(t.vocab) + "]");
  }
  if (!std::isfinite(t.temperature) || t.temperature <= 0.0f) {
    return Status::Corruption("top-k targets: temperature must be finite and > 0");
  }
  const size_t n = static_cast<size_t>(t.rows) * static_cast<size_t>(t.k);
  if (t.indices.size() != n || t.probs.size() != n ||
      t.tail.size() != static_cast<size_t>(t.rows)) {
    return Status::Corruption("top-k targets: sizes of indices/probs/tail do not match rows x k");
  }
  // Marks the tokens of the current row; only the k marked entries are cleared after a row.
  std::vector<uint8_t> seen(t.vocab, 0);
  for (int i = 0; i < t.rows; ++i) {
    const int32_t* idx = t.row_indices(i);
    const float* q = t.row_probs(i);
    Status st;
    double sum = 0.0;
    int marked = 0;
    for (; marked < t.k; ++marked) {
      const int32_t v = idx[marked];
      if (v < 0 || v >= t.vocab) {
        st = RowError("token index out of range", i);
        break;
      }
      if (seen[v]) {
        st = RowError("duplicate token index", i);
        break;
      }
      seen[v] = 1;
      if (!std::isfinite(q[marked]) || q[marked] < 0.0f || q[marked] > 1.0f) {
        st = RowError("probability not in [0, 1]", i);
        ++marked;
        break;
      }
      sum += q[marked];
    }
    for (int j = 0; j < marked; ++j) seen[idx[j]] = 0;
    TANDEM_RETURN_IF_ERROR(st);
    const float r = t.tail[i];
    if (!std::isfinite(r) || r < 0.0f || r > 1.0f) return RowError("tail mass not in [0, 1]", i);
    if (sum > 1.0 + kTopKSumTolerance) return RowError("probabilities sum to more than 1", i);
    if (std::abs(sum + r - 1.0) > kTopKSumTolerance) {
      return RowError("probabilities plus tail mass do not sum to 1", i);
    }
  }
  return Status::Ok();
}

TopKTargets TopKFromLogits(const float* teacher_logits, int N, int V, int k, float temperature) {
  TANDEM_CHECK(N >= 0 && V >= 1 && k >= 1 && k <= V);
  TANDEM_CHECK(std::isfinite(temperature) && temperature > 0.0f);
  TopKTargets t;
  t.rows = N;
  t.k = k;
  t.vocab = V;
  t.temperature = temperature;
  t.indices.resize(static_cast<size_t>(N) * k);
  t.probs.resize(static_cast<size_t>(N) * k);
  t.tail.resize(N);
  const double inv_t = 1.0 / temperature;
#pragma omp parallel
  {
    std::vector<int32_t> order(V);
    std::vector<double> p(V);
#pragma omp for schedule(static)
    for (int i = 0; i < N; ++i) {
      const float* z = teacher_logits + static_cast<size_t>(i) * V;
      const double mx = *std::max_element(z, z + V);
      double sum = 0.0;
      for (int v = 0; v < V; ++v) sum += (p[v] = std::exp((z[v] - mx) * inv_t));
      for (int v = 0; v < V; ++v) p[v] /= sum;
      // Ranked by logit (monotone in probability at any T), lower id first among equals.
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [z](int32_t a, int32_t b) {
        return z[a] > z[b] || (z[a] == z[b] && a < b);
      });
      int32_t* idx = t.indices.data() + static_cast<size_t>(i) * k;
      float* q = t.probs.data() + static_cast<size_t>(i) * k;
      for (int j = 0; j < k; ++j) {
        idx[j] = order[j];
        q[j] = static_cast<float>(p[order[j]]);
      }
      double rest = 0.0;
      for (int j = k; j < V; ++j) rest += p[order[j]];
      t.tail[i] = static_cast<float>(rest);
    }
  }
  return t;
}

TopKTargets SliceTopK(const TopKTargets& t, int row0, int n) {
  TANDEM_CHECK(row0 >= 0 && n >= 0 && row0 + n <= t.rows);
  TopKTargets s;
  s.rows = n;
  s.k = t.k;
  s.vocab = t.vocab;
  s.temperature = t.temperature;
  const size_t a = static_cast<size_t>(row0) * t.k, b = static_cast<size_t>(row0 + n) * t.k;
  s.indices.assign(t.indices.begin() + a, t.indices.begin() + b);
  s.probs.assign(t.probs.begin() + a, t.probs.begin() + b);
  s.tail.assign(t.tail.begin() + row0, t.tail.begin() + row0 + n);
  return s;
}

void DensifyTopK(float* probs, const TopKTargets& t) {
  const int V = t.vocab, k = t.k;
  TANDEM_CHECK(k >= 1 && k <= V && t.indices.size() == static_cast<size_t>(t.rows) * k);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < t.rows; ++i) {
    float* p = probs + static_cast<size_t>(i) * V;
    const float spread = k < V ? static_cast<float>(static_cast<double>(t.tail[i]) / (V - k)) : 0.0f;
    std::fill(p, p + V, spread);
    const int32_t* idx = t.row_indices(i);
    const float* q = t.row_probs(i);
    for (int j = 0; j < k; ++j) {
      TANDEM_CHECK(idx[j] >= 0 && idx[j] < V);
      p[idx[j]] = q[j];
    }
  }
}

TopKWire EncodeTopK(const TopKTargets& t) {
  TANDEM_CHECK(t.rows >= 0 && t.k >= 1 && t.k <= t.vocab);
  const size_t n = static_cast<size_t>(t.rows) * t.k;
  TANDEM_CHECK(t.indices.size() == n && t.probs.size() == n &&
               t.tail.size() == static_cast<size_t>(t.rows));
  TopKWire w;
  w.words.reserve(kTopKHeaderWords + IndexWords(n, t.vocab));
  w.words = {kTopKWireVersion, static_cast<uint32_t>(t.rows), static_cast<uint32_t>(t.k),
             static_cast<uint32_t>(t.vocab), std::bit_cast<uint32_t>(t.temperature)};
  if (Packed(t.vocab)) {
    for (size_t j = 0; j < n; j += 2) {
      const uint32_t lo = static_cast<uint16_t>(t.indices[j]);
      const uint32_t hi = j + 1 < n ? static_cast<uint16_t>(t.indices[j + 1]) : 0u;
      w.words.push_back(lo | (hi << 16));
    }
  } else {
    for (int32_t v : t.indices) w.words.push_back(static_cast<uint32_t>(v));
  }
  w.values.reserve(n + t.rows);
  w.values.insert(w.values.end(), t.probs.begin(), t.probs.end());
  w.values.insert(w.values.end(), t.tail.begin(), t.tail.end());
  return w;
}

StatusOr<TopKTargets> DecodeTopK(std::span<const uint32_t> words, std::span<const float> values) {
  if (words.size() < kTopKHeaderWords) return Status::Corruption("top-k targets: short header");
  if (words[0] != kTopKWireVersion) {
    return Status::Corruption("top-k targets: unsupported version " + std::to_string(words[0]));
  }
  const uint32_t rows = words[1], k = words[2], vocab = words[3];
  if (rows > static_cast<uint32_t>(INT32_MAX)) return Status::Corruption("top-k targets: row count too large");
  if (vocab < 1 || vocab > kMaxWireVocab) {
    return Status::Corruption("top-k targets: vocabulary size " + std::to_string(vocab) +
                              " not in [1, " + std::to_string(kMaxWireVocab) + "]");
  }
  if (k < 1 || k > vocab) {
    return Status::Corruption("top-k targets: k = " + std::to_string(k) + " not in [1, " +
                              std::to_string(vocab) + "]");
  }
  const float temperature = std::bit_cast<float>(words[4]);
  if (!std::isfinite(temperature) || temperature <= 0.0f) {
    return Status::Corruption("top-k targets: temperature must be finite and > 0");
  }
  const size_t n = static_cast<size_t>(rows) * k;  // < 2^55: no overflow
  const size_t index_words = IndexWords(n, static_cast<int>(vocab));
  if (words.size() != kTopKHeaderWords + index_words) {
    return Status::Corruption("top-k targets: " + std::to_string(words.size()) +
                              " index words, expected " +
                              std::to_string(kTopKHeaderWords + index_words));
  }
  if (values.size() != n + rows) {
    return Status::Corruption("top-k targets: " + std::to_string(values.size()) +
                              " values, expected " + std::to_string(n + rows));
  }
  TopKTargets t;
  t.rows = static_cast<int>(rows);
  t.k = static_cast<int>(k);
  t.vocab = static_cast<int>(vocab);
  t.temperature = temperature;
  t.indices.resize(n);
  const std::span<const uint32_t> packed = words.subspan(kTopKHeaderWords);
  if (Packed(t.vocab)) {
    for (size_t j = 0; j < n; ++j) {
      const uint32_t w = packed[j / 2];
      t.indices[j] = static_cast<int32_t>(j % 2 == 0 ? (w & 0xFFFFu) : (w >> 16));
    }
    if (n % 2 == 1 && (packed[n / 2] >> 16) != 0) {
      return Status::Corruption("top-k targets: non-zero padding after the last index");
    }
  } else {
    for (size_t j = 0; j < n; ++j) {
      if (packed[j] >= vocab) return RowError("token index out of range", static_cast<int>(j / k));
      t.indices[j] = static_cast<int32_t>(packed[j]);
    }
  }
  t.probs.assign(values.begin(), values.begin() + n);
  t.tail.assign(values.begin() + n, values.end());
  TANDEM_RETURN_IF_ERROR(ValidateTopK(t));
  return t;
}

size_t TopKWireBytes(int rows, int k, int vocab) {
  const size_t n = static_cast<size_t>(rows) * k;
  return sizeof(uint32_t) * (kTopKHeaderWords + IndexWords(n, vocab)) +
         sizeof(float) * (n + static_cast<size_t>(rows));
}

}  // namespace tandem
