// Progress: off a terminal it prints plain, complete lines (one per interval and the last step).
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "core/progress.h"

namespace tandem {
namespace {

std::string ReadAll(FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  return out;
}

TEST(ProgressTest, PlainLinesWhenNotATerminal) {
  FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("train", 10, f, /*plain_interval_s=*/3600.0);
    EXPECT_FALSE(p.is_terminal());
    for (int step = 1; step <= 10; ++step) p.Update(step, step * 100, {{"loss", 2.5}});
    p.Note("step 10: validation loss 2.1");
    p.Finish();
  }
  const std::string out = ReadAll(f);
  std::fclose(f);
  EXPECT_EQ(out.find('\r'), std::string::npos) << "carriage returns in a log file";
  EXPECT_EQ(out.find("\033["), std::string::npos) << "terminal escapes in a log file";
  // The first update prints (nothing printed yet), the interval suppresses the middle ones,
  // the last step always prints.
  EXPECT_NE(out.find("step 1/10"), std::string::npos) << out;
  EXPECT_EQ(out.find("step 5/10"), std::string::npos) << out;
  EXPECT_NE(out.find("step 10/10 loss 2.5"), std::string::npos) << out;
  EXPECT_NE(out.find("validation loss 2.1\n"), std::string::npos) << out;
}

TEST(ProgressTest, FormatsDurations) {
  EXPECT_EQ(FormatDuration(12.4), "12s");
  EXPECT_EQ(FormatDuration(187), "3m07s");
  EXPECT_EQ(FormatDuration(3720), "1h02m");
  EXPECT_EQ(FormatDuration(-1), "?");
}

}  // namespace
}  // namespace tandem
