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
  // The named source is the fortunes and fortunes-min packages' files alone: whatever else is
  // installed in the directory (fortunes-br adds a file there) is not part of it.
  auto via_corpus = LoadCorpus("fortunes");
  ASSERT_TRUE(via_corpus.ok());
  EXPECT_GT(via_corpus->size(), 5000u);
  EXPECT_LE(via_corpus->size(), records->size());
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


// A copy of a fortunes directory and of dpkg's lists: package "fortunes" installed art and
// zippy (with strfile's .dat and .u8 beside them), "fortunes-min" installed fortunes.
class PinnedFortunesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.path() / "games");
    fs::create_directories(dir_.path() / "dpkg");
    where_.fortunes_dir = (dir_.path() / "games").string();
    where_.dpkg_info_dir = (dir_.path() / "dpkg").string();
    for (const char* f : {"art", "zippy", "fortunes"}) {
      dir_.Write(std::string("games/") + f, std::string(f) + " one\n%\n" + f + " two\n");
      dir_.Write(std::string("games/") + f + ".dat", "index");
    }
    fs::create_symlink("art", dir_.path() / "games" / "art.u8");
    const std::string d = "/usr/share/games/fortunes";
    dir_.Write("dpkg/fortunes.list", "/.\n/usr\n" + d + "\n" + d + "/art\n" + d + "/art.dat\n" +
                                         d + "/art.u8\n" + d + "/zippy\n" + d + "/zippy.dat\n");
    dir_.Write("dpkg/fortunes-min.list", d + "/fortunes\n" + d + "/fortunes.dat\n");
  }
  TempDir dir_;
  FortunesLocation where_;
};

TEST_F(PinnedFortunesTest, ExtraInstalledFileChangesNeitherCorpusNorFingerprint) {
  CorpusFingerprint before, after;
  auto a = LoadCorpus("fortunes", &before, where_);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->size(), 6u);
  EXPECT_EQ(before.files.size(), 3u);
  EXPECT_EQ(before.sha256.size(), 64u);
  // What installing fortunes-br does: another file in the same directory.
  dir_.Write("games/brasil", "outra\n%\nmais uma\n");
  dir_.Write("dpkg/fortunes-br.list", "/usr/share/games/fortunes/brasil\n");
  auto b = LoadCorpus("fortunes", &after, where_);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(before.files, after.files);
  EXPECT_EQ(before.sha256, after.sha256);
  // The other corpus is a named source of its own.
  auto br = LoadCorpus("fortunes-br", nullptr, where_);
  ASSERT_TRUE(br.ok()) << br.status().ToString();
  EXPECT_EQ(br->size(), 2u);
  EXPECT_EQ((*br)[0].category, "brasil");
}

TEST_F(PinnedFortunesTest, FingerprintChangesWithTheBytes) {
  CorpusFingerprint before, after;
  ASSERT_TRUE(LoadCorpus("fortunes", &before, where_).ok());
  dir_.Write("games/zippy", "zippy one\n%\nzippy three\n");
  ASSERT_TRUE(LoadCorpus("fortunes", &after, where_).ok());
  EXPECT_NE(before.sha256, after.sha256);
}

TEST_F(PinnedFortunesTest, MissingPackageNamesAptGet) {
  auto de = LoadCorpus("fortunes-de", nullptr, where_);
  ASSERT_FALSE(de.ok());
  EXPECT_NE(de.status().message().find("apt-get install fortunes-de"), std::string::npos)
      << de.status().message();
}

TEST_F(PinnedFortunesTest, WithoutDpkgListsTheBuiltInEnglishListIsRead) {
  fs::remove(dir_.path() / "dpkg" / "fortunes.list");
  fs::remove(dir_.path() / "dpkg" / "fortunes-min.list");
  auto files = FortunesSourceFiles("fortunes", where_);
  // The built-in list names 43 files; this copy holds 3 of them, so the error names a missing one.
  ASSERT_FALSE(files.ok());
  EXPECT_NE(files.status().message().find("is missing"), std::string::npos)
      << files.status().message();
}

TEST(FortunesTest, InstalledEnglishCorpusIsExactlyItsPackages) {
  if (!fs::exists("/var/lib/dpkg/info/fortunes.list")) GTEST_SKIP() << "fortunes not installed";
  auto files = FortunesSourceFiles("fortunes");
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  EXPECT_EQ(files->size(), 43u);  // bookworm's fortunes + fortunes-min
  for (const std::string& f : *files) {
    EXPECT_EQ(f.find(".dat"), std::string::npos) << f;
    EXPECT_EQ(f.find("/off/"), std::string::npos) << f;
  }
}

}  // namespace
}  // namespace tandem
