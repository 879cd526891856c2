// Synthetic arithmetic task: integer expressions with a difficulty level, prompt "12+34=" and
// answer "46", deterministic from a seed, scored by exact match. Gives every run a task whose
// accuracy is unambiguous, beside the language-modelling loss on text corpora.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"

namespace tandem {

// The difficulty levels. Every operand has exactly `digits` digits (1-digit operands are 0..9,
// d-digit ones 10^(d-1)..10^d-1); each operator is drawn uniformly from `operators`; answers may
// be negative; with three operands '*' binds tighter than '+' and '-', which associate left.
//
//   level  digits  operands  operators   example
//   1      1       2         +           "3+5="       -> "8"
//   2      2       2         + -         "47-81="     -> "-34"
//   3      3       2         + -         "512+309="   -> "821"
//   4      2       2         *           "23*45="     -> "1035"
//   5      3       2         + - *       "123*456="   -> "56088"
//   6      2       3         + - *       "12+34*56="  -> "1916"
struct ArithmeticLevel {
  int level;
  int digits;
  int operands;
  std::string_view operators;
};
inline constexpr int kArithmeticMaxLevel = 6;

// The row of the table above. Error: level outside 1..kArithmeticMaxLevel.
StatusOr<ArithmeticLevel> GetArithmeticLevel(int level);

// "arith-L3": the category of level-3 records.
std::string ArithmeticCategory(int level);

struct ArithmeticExample {
  std::string prompt;  // "12+34="
  std::string answer;  // "46"
  int level = 0;

  // text = prompt + answer + "\n" (the newline teaches a model where an answer ends; ExactMatch
  // stops there), category = ArithmeticCategory(level).
  Record ToRecord() const;
};

// `count` examples of `level`, the same for the same (level, count, seed); the first n of a longer
// list equal a shorter list with the same seed.
StatusOr<std::vector<ArithmeticExample>> MakeArithmeticExamples(int level, size_t count,
                                                                uint64_t seed);
// The same examples as Records.
StatusOr<std::vector<Record>> MakeArithmeticRecords(int level, size_t count, uint64_t seed);

// Whether a model's continuation of a prompt answers it: `generated` is cut at its first '\n' or
// NUL (end-of-text), both sides are trimmed of surrounding whitespace, and they must be equal.
bool ExactMatch(const std::string& generated, const std::string& answer);

}  // namespace tandem
