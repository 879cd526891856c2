// CURVE keys, key files and the allow-list: generation, validation, atomic files with the right
// modes, errors that name the file and line, and `tandem keygen`.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/temp_dir.h"
#include "wire/curve.h"

namespace tandem::wire {
namespace {

class CurveTest : public tandem::testing::TempDirTest {
 protected:
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(Path(name)) << text;
  }
  std::string Read(const std::string& name) {
    std::ifstream in(Path(name));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  mode_t Mode(const std::string& name) {
    struct stat st;
    EXPECT_EQ(::stat(Path(name).c_str(), &st), 0);
    return st.st_mode & 0777;
  }
  CurveKeyPair Keys() {
    StatusOr<CurveKeyPair> keys = GenerateCurveKeyPair();
    TANDEM_CHECK(keys.ok());
    return *keys;
  }
};

bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

TEST_F(CurveTest, GeneratedPairsAreValidAndDistinct) {
  const CurveKeyPair a = Keys();
  const CurveKeyPair b = Keys();
  EXPECT_EQ(a.public_key.size(), kCurveKeyChars);
  EXPECT_EQ(a.secret_key.size(), kCurveKeyChars);
  EXPECT_TRUE(ValidateKeyPair(a).ok());
  EXPECT_NE(a.public_key, b.public_key);
  EXPECT_NE(a.secret_key, b.secret_key);
  Status mismatched = ValidateKeyPair({a.public_key, b.secret_key});
  ASSERT_FALSE(mismatched.ok());
  EXPECT_TRUE(Contains(mismatched, "does not belong")) << mismatched.ToString();
}

TEST_F(CurveTest, KeysMustBeFortyZ85Characters) {
  EXPECT_TRUE(Contains(ValidateCurveKey("abc", "k"), "40 Z85 characters, got 3"));
  std::string bad = Keys().public_key;
  bad[7] = '"';  // not in the Z85 alphabet
  EXPECT_TRUE(Contains(ValidateCurveKey(bad, "k"), "not a Z85 key"));
  EXPECT_TRUE(ValidateCurveKey(Keys().public_key, "k").ok());
}

TEST_F(CurveTest, KeyPairFileRoundTripsWithMode0600) {
  const CurveKeyPair keys = Keys();
  ASSERT_TRUE(SaveKeyPair(Path("a.key"), keys).ok());
  EXPECT_EQ(Mode("a.key"), 0600u);
  StatusOr<CurveKeyPair> back = LoadKeyPair(Path("a.key"));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->public_key, keys.public_key);
  EXPECT_EQ(back->secret_key, keys.secret_key);
  StatusOr<std::string> pub = LoadPublicKey(Path("a.key"));  // a .key file has the public line
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(*pub, keys.public_key);

  ASSERT_TRUE(SavePublicKey(Path("a.pub"), keys.public_key).ok());
  EXPECT_EQ(Mode("a.pub"), 0644u);
  EXPECT_EQ(Read("a.pub").find(keys.secret_key), std::string::npos);
  StatusOr<std::string> pub2 = LoadPublicKey(Path("a.pub"));
  ASSERT_TRUE(pub2.ok());
  EXPECT_EQ(*pub2, keys.public_key);
  // A public key file is not a key pair.
  StatusOr<CurveKeyPair> not_pair = LoadKeyPair(Path("a.pub"));
  ASSERT_FALSE(not_pair.ok());
  EXPECT_TRUE(Contains(not_pair.status(), "a.pub: no 'secret = KEY' line"));

  // Saving over an existing file replaces it; no temporary files are left behind.
  ASSERT_TRUE(SaveKeyPair(Path("a.key"), Keys()).ok());
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 2u);
}

TEST_F(CurveTest, InvalidKeyFilesAreRejectedNamingFileAndLine) {
  const CurveKeyPair a = Keys();
  const CurveKeyPair b = Keys();
  StatusOr<CurveKeyPair> missing = LoadKeyPair(Path("none.key"));
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status(), "none.key"));

  Write("mixed.key", "public = " + a.public_key + "\nsecret = " + b.secret_key + "\n");
  StatusOr<CurveKeyPair> mixed = LoadKeyPair(Path("mixed.key"));
  ASSERT_FALSE(mixed.ok());
  EXPECT_TRUE(Contains(mixed.status(), "mixed.key"));
  EXPECT_TRUE(Contains(mixed.status(), "does not belong"));

  Write("junk.key", "# comment\n\npublic = " + a.public_key + "\nprivate = x\n");
  StatusOr<CurveKeyPair> junk = LoadKeyPair(Path("junk.key"));
  ASSERT_FALSE(junk.ok());
  EXPECT_TRUE(Contains(junk.status(), "junk.key:4: unknown entry 'private'"))
      << junk.status().ToString();

  Write("short.pub", "public = abc\n");
  StatusOr<std::string> short_key = LoadPublicKey(Path("short.pub"));
  ASSERT_FALSE(short_key.ok());
  EXPECT_TRUE(Contains(short_key.status(), "short.pub"));
  EXPECT_TRUE(Contains(short_key.status(), "40 Z85 characters"));

  Write("dup.pub", "public = " + a.public_key + "\npublic = " + b.public_key + "\n");
  EXPECT_TRUE(Contains(LoadPublicKey(Path("dup.pub")).status(), "dup.pub:2: duplicate entry"));
  Write("noeq.pub", "public x" + a.public_key + "\n");  // no '=' (a key may start with one)
  EXPECT_TRUE(Contains(LoadPublicKey(Path("noeq.pub")).status(), "noeq.pub:1: expected"));

  // Refuses to save what it could not load.
  EXPECT_FALSE(SaveKeyPair(Path("bad.key"), {a.public_key, b.secret_key}).ok());
  EXPECT_FALSE(std::filesystem::exists(Path("bad.key")));
}

TEST_F(CurveTest, AllowListParsesCommentsBlankLinesAndKeysHoldingHash) {
  // Z85 keys may contain '#': the comment rule must not cut them.
  CurveKeyPair hashed = Keys();
  for (int i = 0; i < 200 && hashed.public_key.find('#') == std::string::npos; ++i) hashed = Keys();
  ASSERT_NE(hashed.public_key.find('#'), std::string::npos);
  const CurveKeyPair other = Keys();
  Write("allow.txt", "# the allow-list\n\n  client-0 " + hashed.public_key +
                         "   # first client\nedge.node_7 " + other.public_key + "\n   \n");
  StatusOr<AllowList> list = LoadAllowList(Path("allow.txt"));
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->name_by_key.size(), 2u);
  EXPECT_EQ(list->name_by_key.at(hashed.public_key), "client-0");
  EXPECT_EQ(list->name_by_key.at(other.public_key), "edge.node_7");

  ASSERT_TRUE(SaveAllowList(Path("saved.txt"), *list).ok());
  StatusOr<AllowList> again = LoadAllowList(Path("saved.txt"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->name_by_key, list->name_by_key);
}

TEST_F(CurveTest, AllowListErrorsNameTheLine) {
  const std::string k1 = Keys().public_key;
  const std::string k2 = Keys().public_key;
  struct Case {
    std::string text;
    std::string error;
  };
  const Case cases[] = {
      {"a " + k1 + "\n# x\na " + k2 + "\n", "allow.txt:3: duplicate name 'a' (first on line 1)"},
      {"a " + k1 + "\nb " + k1 + "\n", "allow.txt:2: the key of 'b' is already listed on line 1"},
      {"\n\nbad/name " + k1 + "\n", "allow.txt:3: invalid name 'bad/name'"},
      {std::string(65, 'n') + " " + k1 + "\n", "allow.txt:1: invalid name"},
      {"a " + k1.substr(0, 39) + "\n", "allow.txt:1: key of 'a': a CURVE key is 40"},
      {"a\n", "allow.txt:1: expected 'NAME PUBLIC_KEY', got 1 fields"},
      {"a " + k1 + " extra\n", "allow.txt:1: expected 'NAME PUBLIC_KEY', got 3 fields"},
  };
  for (const Case& c : cases) {
    Write("allow.txt", c.text);
    StatusOr<AllowList> list = LoadAllowList(Path("allow.txt"));
    ASSERT_FALSE(list.ok()) << c.text;
    EXPECT_TRUE(Contains(list.status(), c.error)) << list.status().ToString() << " vs " << c.error;
  }
  EXPECT_EQ(LoadAllowList(Path("missing.txt")).status().code(), StatusCode::kNotFound);
}

TEST_F(CurveTest, KeygenWritesAMatchingSetAndRefusesToOverwrite) {
  const std::string out = Path("keys");
  ASSERT_TRUE(Keygen(out, 3, /*overwrite=*/false).ok());
  StatusOr<CurveKeyPair> coordinator = LoadKeyPair(out + "/coordinator.key");
  ASSERT_TRUE(coordinator.ok()) << coordinator.status().ToString();
  StatusOr<std::string> coordinator_pub = LoadPublicKey(out + "/coordinator.pub");
  ASSERT_TRUE(coordinator_pub.ok());
  EXPECT_EQ(*coordinator_pub, coordinator->public_key);
  StatusOr<AllowList> list = LoadAllowList(out + "/allow-list.txt");
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->name_by_key.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const std::string name = "client-" + std::to_string(k);
    StatusOr<CurveKeyPair> client = LoadKeyPair(out + "/" + name + ".key");
    ASSERT_TRUE(client.ok());
    EXPECT_EQ(list->name_by_key.at(client->public_key), name);
    EXPECT_EQ(Mode("keys/" + name + ".key"), 0600u);
  }
  EXPECT_EQ(Mode("keys/coordinator.key"), 0600u);

  Status again = Keygen(out, 3, /*overwrite=*/false);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(again, "coordinator.key' exists")) << again.ToString();
  StatusOr<CurveKeyPair> unchanged = LoadKeyPair(out + "/coordinator.key");
  ASSERT_TRUE(unchanged.ok());
  EXPECT_EQ(unchanged->secret_key, coordinator->secret_key);

  ASSERT_TRUE(Keygen(out, 3, /*overwrite=*/true).ok());
  StatusOr<CurveKeyPair> replaced = LoadKeyPair(out + "/coordinator.key");
  ASSERT_TRUE(replaced.ok());
  EXPECT_NE(replaced->public_key, coordinator->public_key);
  EXPECT_FALSE(Keygen(out, -1, true).ok());
}

}  // namespace
}  // namespace tandem::wire
