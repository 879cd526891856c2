// Tests for the corpus loaders: fortunes directories, plain-text paragraphs and JSONL.

#include "data/corpus.h"

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <gtest/gtest.h>

namespace tandem {
namespace {

namespace fs = std::filesystem;

// A string literal with its embedded NULs.
template <size_t N>
std::string Bytes(const char (&s)[N]) {
  return std::string(s, N - 1);
}

// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            (std::string("tandem_corpus_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& content) const {
    const fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }

 private:
  fs::path path_;
};

TEST(FortunesTest, ParsesFilesSkipsIndexesLinksAndEmptyRecords) {
  TempDir dir;
  dir.Write("zen", "  The first fortune.\n  -- Someone\n%\n%\n   \n%\nSecond\n\nwith a blank line\n%\n");
  dir.Write("zen.dat", Bytes("\x00\x00\x00\x02" "binary%\n%\n"));
  dir.Write("art", Bytes("a\x00" "nul\n%\r\nlast without trailing separator"));
  fs::create_symlink("zen", dir.path() / "zen.u8");
  fs::create_directories(dir.path() / "off");
  dir.Write("off/rude", "should not load\n%\n");

  auto records = LoadFortunes(dir.path().string());
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  ASSERT_EQ(records->size(), 4u);
  // Files in name order: art before zen.
  EXPECT_EQ((*records)[0], (Record{"anul", "art"}));
  EXPECT_EQ((*records)[1], (Record{"last without trailing separator", "art"}));
  EXPECT_EQ((*records)[2], (Record{"The first fortune.\n  -- Someone", "zen"}));
  EXPECT_EQ((*records)[3], (Record{"Second\n\nwith a blank line", "zen"}));
}

TEST(FortunesTest, MissingDirectoryNamesItAndThePackage) {
  auto records = LoadFortunes("/nonexistent/tandem/fortunes");
  ASSERT_FALSE(records.ok());
  EXPECT_EQ(records.status().code(), StatusCode::kNotFound);
  EXPECT_NE(records.status().message().find("/nonexistent/tandem/fortunes"), std::string::npos);
  EXPECT_NE(records.status().message().find("fortunes package"), std::string::npos);
}

TEST(FortunesTest, DirectoryWithoutFortunesIsAnError) {
  TempDir dir;
  dir.Write("only.dat", "xx");
  auto records = LoadFortunes(dir.path().string());
  ASSERT_FALSE(records.ok());
  // Refused because the index file is no fortune file, not because the directory is missing.
  EXPECT_EQ(records.status().code(), StatusCode::kNotFound);
  EXPECT_NE(records.status().message().find("holds no fortune files"), std::string::npos)
      << records.status().ToString();
}

TEST(FortunesTest, RealDebianCorpusLoads) {
  if (!fs::is_directory(kDefaultFortunesDir)) GTEST_SKIP() << "fortunes package not installed";
  auto records = LoadFortunes();
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  EXPECT_GT(Categories(*records).size(), 20u);
  EXPECT_GT(records->size(), 5000u);
  for (const Record& r : *records) {
    ASSERT_FALSE(r.text.empty());
    ASSERT_EQ(r.text.find('\0'), std::string::npos);
    ASSERT_EQ(r.category.find(".dat"), std::string::npos);
  }
  auto via_corpus = LoadCorpus("fortunes");
  ASSERT_TRUE(via_corpus.ok());
  EXPECT_EQ(via_corpus->size(), records->size());
}

TEST(TextFileTest, OneRecordPerParagraph) {
  TempDir dir;
  const std::string path = dir.Write("poems.txt", "\n\nfirst line\nsecond line\n \n\t\n  next para  \n\nlast");
  auto records = LoadTextFile(path);
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ((*records)[0], (Record{"first line\nsecond line", "poems"}));
  EXPECT_EQ((*records)[1], (Record{"next para", "poems"}));
  EXPECT_EQ((*records)[2], (Record{"last", "poems"}));
  EXPECT_FALSE(LoadTextFile(dir.Write("blank.txt", "\n  \n")).ok());
  EXPECT_FALSE(LoadTextFile((dir.path() / "missing.txt").string()).ok());
}

TEST(JsonlTest, GoodFile) {
  TempDir dir;
  const std::string path = dir.Write(
      "qa.jsonl",
      "{\"text\": \"hello\", \"category\": \"greet\"}\n\n{\"text\": \"  kept verbatim \"}\n"
      "{\"text\": \"x\", \"extra\": [1, 2]}\n");
  auto records = LoadJsonl(path);
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ((*records)[0], (Record{"hello", "greet"}));
  EXPECT_EQ((*records)[1], (Record{"  kept verbatim ", "qa"}));
  EXPECT_EQ((*records)[2], (Record{"x", "qa"}));
  auto via_corpus = LoadCorpus(path);
  ASSERT_TRUE(via_corpus.ok());
  EXPECT_EQ(*via_corpus, *records);
}

TEST(JsonlTest, BadJsonNamesFileAndLine) {
  TempDir dir;
  const std::string path = dir.Write("bad.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": \"oops\n");
  auto records = LoadJsonl(path);
  ASSERT_FALSE(records.ok());
  EXPECT_NE(records.status().message().find(path + ":3:"), std::string::npos)
      << records.status().message();
  EXPECT_NE(records.status().message().find("JSON"), std::string::npos);
}

TEST(JsonlTest, MissingOrNonStringTextNamesLine) {
  TempDir dir;
  const std::string missing = dir.Write("m.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"no\"}\n");
  auto r1 = LoadJsonl(missing);
  ASSERT_FALSE(r1.ok());
  EXPECT_NE(r1.status().message().find(missing + ":2:"), std::string::npos);
  EXPECT_NE(r1.status().message().find("\"text\""), std::string::npos);

  const std::string number = dir.Write("n.jsonl", "{\"text\": 42}\n");
  auto r2 = LoadJsonl(number);
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.status().message().find(number + ":1:"), std::string::npos);
  EXPECT_NE(r2.status().message().find("string"), std::string::npos);

  const std::string category = dir.Write("c.jsonl", "{\"text\": \"a\", \"category\": 3}\n");
  EXPECT_FALSE(LoadJsonl(category).ok());
  const std::string array = dir.Write("a.jsonl", "[1, 2]\n");
  EXPECT_FALSE(LoadJsonl(array).ok());
}

TEST(CorpusTest, CategoryHelpers) {
  std::vector<Record> records = {{"a", "x"}, {"b", "y"}, {"c", "x"}};
  EXPECT_EQ(Categories(records), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(CategoryCounts(records).at("x"), 2u);
  EXPECT_EQ(SelectRecords(records, {2, 0}), (std::vector<Record>{{"c", "x"}, {"a", "x"}}));
}

}  // namespace
}  // namespace tandem
