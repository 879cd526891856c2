// Tests for the synthetic arithmetic task: determinism, correct answers, the level table and
// exact-match scoring.

#include "data/arithmetic.h"

#include <cctype>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace tandem {
namespace {

struct Parsed {
  std::vector<long long> operands;
  std::vector<char> ops;
};

// Parses "12+34*5=" independently of the generator.
Parsed Parse(const std::string& prompt) {
  Parsed p;
  EXPECT_EQ(prompt.back(), '=');
  long long cur = 0;
  bool in_number = false;
  for (char c : prompt) {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      cur = cur * 10 + (c - '0');
      in_number = true;
    } else {
      EXPECT_TRUE(in_number) << prompt;
      p.operands.push_back(cur);
      cur = 0;
      in_number = false;
      if (c != '=') p.ops.push_back(c);
    }
  }
  return p;
}

// Evaluates with '*' before '+'/'-', left to right otherwise (shunting the products first).
long long Evaluate(const Parsed& p) {
  std::vector<long long> terms = {p.operands[0]};
  std::vector<char> signs = {'+'};
  for (size_t i = 0; i < p.ops.size(); ++i) {
    if (p.ops[i] == '*') {
      terms.back() *= p.operands[i + 1];
    } else {
      terms.push_back(p.operands[i + 1]);
      signs.push_back(p.ops[i]);
    }
  }
  long long v = 0;
  for (size_t i = 0; i < terms.size(); ++i) v += signs[i] == '+' ? terms[i] : -terms[i];
  return v;
}

TEST(ArithmeticTest, DeterministicFromSeed) {
  auto a = MakeArithmeticExamples(3, 200, 7);
  auto b = MakeArithmeticExamples(3, 200, 7);
  auto c = MakeArithmeticExamples(3, 200, 8);
  auto prefix = MakeArithmeticExamples(3, 50, 7);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && prefix.ok());
  int differ = 0;
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].prompt, (*b)[i].prompt);
    EXPECT_EQ((*a)[i].answer, (*b)[i].answer);
    differ += (*a)[i].prompt != (*c)[i].prompt;
  }
  EXPECT_GT(differ, 150);
  for (size_t i = 0; i < prefix->size(); ++i) EXPECT_EQ((*prefix)[i].prompt, (*a)[i].prompt);
}

TEST(ArithmeticTest, AnswersAreCorrectAndMatchTheLevelTable) {
  for (int level = 1; level <= kArithmeticMaxLevel; ++level) {
    auto spec = GetArithmeticLevel(level);
    ASSERT_TRUE(spec.ok());
    auto examples = MakeArithmeticExamples(level, 500, 100 + level);
    ASSERT_TRUE(examples.ok());
    std::string ops_seen;
    for (const ArithmeticExample& e : *examples) {
      const Parsed p = Parse(e.prompt);
      ASSERT_EQ(static_cast<int>(p.operands.size()), spec->operands) << e.prompt;
      EXPECT_EQ(std::to_string(Evaluate(p)), e.answer) << e.prompt;
      for (long long x : p.operands) {
        EXPECT_EQ(static_cast<int>(std::to_string(x).size()), spec->digits) << e.prompt;
      }
      for (char op : p.ops) {
        EXPECT_NE(spec->operators.find(op), std::string_view::npos) << e.prompt;
        if (ops_seen.find(op) == std::string::npos) ops_seen += op;
      }
      const Record r = e.ToRecord();
      EXPECT_EQ(r.text, e.prompt + e.answer + "\n");
      EXPECT_EQ(r.category, "arith-L" + std::to_string(level));
    }
    EXPECT_EQ(ops_seen.size(), spec->operators.size()) << "level " << level;
  }
}

TEST(ArithmeticTest, LevelsDifferInDigitCount) {
  auto digits_of_first_operand = [](int level) {
    auto ex = MakeArithmeticExamples(level, 1, 1);
    return Parse((*ex)[0].prompt).operands[0];
  };
  EXPECT_LT(digits_of_first_operand(1), 10);
  EXPECT_GE(digits_of_first_operand(2), 10);
  EXPECT_LT(digits_of_first_operand(2), 100);
  EXPECT_GE(digits_of_first_operand(3), 100);
  EXPECT_LT(digits_of_first_operand(3), 1000);
}

TEST(ArithmeticTest, InvalidLevelIsAnError) {
  EXPECT_FALSE(MakeArithmeticExamples(0, 10, 1).ok());
  EXPECT_FALSE(MakeArithmeticRecords(kArithmeticMaxLevel + 1, 10, 1).ok());
  auto r = MakeArithmeticRecords(2, 10, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 10u);
}

TEST(ArithmeticTest, ExactMatch) {
  EXPECT_TRUE(ExactMatch("46", "46"));
  EXPECT_TRUE(ExactMatch(" 46 \nmore text", "46"));
  EXPECT_TRUE(ExactMatch(std::string("46\0garbage", 10), "46"));
  EXPECT_TRUE(ExactMatch("-34\n", "-34"));
  EXPECT_FALSE(ExactMatch("466", "46"));
  EXPECT_FALSE(ExactMatch("4", "46"));
  EXPECT_FALSE(ExactMatch("\n46", "46"));
  EXPECT_FALSE(ExactMatch("", "46"));
  EXPECT_FALSE(ExactMatch("34", "-34"));
}

}  // namespace
}  // namespace tandem
