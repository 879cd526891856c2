// Synthetic arithmetic examples and exact-match scoring (level table in arithmetic.h).

#include "data/arithmetic.h"

#include <algorithm>

#include "core/rng.h"

namespace tandem {
namespace {

constexpr ArithmeticLevel kLevels[kArithmeticMaxLevel] = {
    {1, 1, 2, "+"},   {2, 2, 2, "+-"},  {3, 3, 2, "+-"},
    {4, 2, 2, "*"},   {5, 3, 2, "+-*"}, {6, 2, 3, "+-*"},
};

int64_t Apply(int64_t a, char op, int64_t b) {
  switch (op) {
    case '+': return a + b;
    case '-': return a - b;
    case '*': return a * b;
  }
  TANDEM_CHECK(false);
  return 0;
}

int64_t DrawOperand(int digits, Rng* rng) {
  if (digits == 1) return static_cast<int64_t>(rng->Below(10));
  int64_t lo = 1;
  for (int i = 1; i < digits; ++i) lo *= 10;
  return lo + static_cast<int64_t>(rng->Below(static_cast<uint64_t>(9 * lo)));
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

StatusOr<ArithmeticLevel> GetArithmeticLevel(int level) {
  if (level < 1 || level > kArithmeticMaxLevel) {
    return Status::InvalidArgument("arithmetic level " + std::to_string(level) +
                                   " does not exist; levels are 1.." +
                                   std::to_string(kArithmeticMaxLevel));
  }
  return kLevels[level - 1];
}

std::string ArithmeticCategory(int level) { return "arith-L" + std::to_string(level); }

Record ArithmeticExample::ToRecord() const {
  return Record{prompt + answer + "\n", ArithmeticCategory(level)};
}

StatusOr<std::vector<ArithmeticExample>> MakeArithmeticExamples(int level, size_t count,
                                                                uint64_t seed) {
  TANDEM_ASSIGN_OR_RETURN(ArithmeticLevel spec, GetArithmeticLevel(level));
  Rng rng(seed);
  std::vector<ArithmeticExample> out;
  out.reserve(count);
  for (size_t n = 0; n < count; ++n) {
    int64_t x[3];
    char op[2];
    for (int i = 0; i < spec.operands; ++i) x[i] = DrawOperand(spec.digits, &rng);
    for (int i = 0; i + 1 < spec.operands; ++i) {
      op[i] = spec.operators[rng.Below(spec.operators.size())];
    }
    int64_t value;
    std::string prompt = std::to_string(x[0]) + op[0] + std::to_string(x[1]);
    if (spec.operands == 2) {
      value = Apply(x[0], op[0], x[1]);
    } else {
      prompt += op[1] + std::to_string(x[2]);
      value = (op[1] == '*' && op[0] != '*') ? Apply(x[0], op[0], Apply(x[1], op[1], x[2]))
                                             : Apply(Apply(x[0], op[0], x[1]), op[1], x[2]);
    }
    out.push_back(ArithmeticExample{prompt + "=", std::to_string(value), level});
  }
  return out;
}

StatusOr<std::vector<Record>> MakeArithmeticRecords(int level, size_t count, uint64_t seed) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<ArithmeticExample> examples,
                          MakeArithmeticExamples(level, count, seed));
  std::vector<Record> records;
  records.reserve(examples.size());
  for (const ArithmeticExample& e : examples) records.push_back(e.ToRecord());
  return records;
}

bool ExactMatch(const std::string& generated, const std::string& answer) {
  std::string_view g(generated);
  g = g.substr(0, std::min(g.find('\n'), g.find('\0')));
  return Trim(g) == Trim(answer);
}

}  // namespace tandem
