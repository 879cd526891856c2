// Run directories as records (train/run_dir.h): a second run of the same name is refused, an
// overwrite clears the old one, a complete run is not resumed, two processes cannot share one, and
// every run records its version, resolved config and data.
#include "train/run_dir.h"

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "tests/temp_dir.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

class RunDirTest : public testing::TempDirTest {
 protected:
  void Write(const std::string& rel, const std::string& text) {
    fs::create_directories((dir_ / rel).parent_path());
    std::ofstream(dir_ / rel) << text;
  }
  std::string Read(const std::string& rel) {
    std::ifstream in(dir_ / rel);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // A finished run in runs/<name>: its record, a report and logs.
  std::string FinishedRun(const std::string& name, bool complete = true) {
    Write(name + "/config.toml", "name = \"" + name + "\"\n");
    Write(name + "/metrics.jsonl", "{\"round\":0}\n{\"round\":1}\n");
    Write(name + "/summary.json", std::string("{\"rounds\": 1, \"complete\": ") +
                                      (complete ? "true" : "false") + "}\n");
    Write(name + "/report/report.md", "old report\n");
    Write(name + "/logs/client-0.log", "old log\n");
    Write(name + "/coordinator.log", "old coordinator log\n");
    Write(name + "/keys/coordinator.key", "key\n");
    return Path(name);
  }
};

TEST_F(RunDirTest, SameNameDoesNotOverwriteAnEarlierRun) {
  const std::string run = FinishedRun("a");
  auto claim = ClaimRunDirectory(run, {});
  ASSERT_FALSE(claim.ok());
  EXPECT_NE(claim.status().message().find("--overwrite"), std::string::npos)
      << claim.status().message();
  EXPECT_NE(claim.status().message().find("--resume"), std::string::npos);
  EXPECT_EQ(Read("a/metrics.jsonl"), "{\"round\":0}\n{\"round\":1}\n");
  EXPECT_EQ(Read("a/coordinator.log"), "old coordinator log\n");
  EXPECT_TRUE(fs::exists(dir_ / "a" / "report" / "report.md"));
}

TEST_F(RunDirTest, OverwriteClearsReportAndLogsButKeepsKeys) {
  const std::string run = FinishedRun("a");
  auto claim = ClaimRunDirectory(run, {.overwrite = true});
  ASSERT_TRUE(claim.ok()) << claim.status().ToString();
  for (const char* gone : {"config.toml", "metrics.jsonl", "summary.json", "report",
                           "logs", "coordinator.log"}) {
    EXPECT_FALSE(fs::exists(dir_ / "a" / gone)) << gone << " survived --overwrite";
  }
  EXPECT_TRUE(fs::exists(dir_ / "a" / "keys" / "coordinator.key"));
}

TEST_F(RunDirTest, OverwriteThatFailsBeforeTheRunBeginsKeepsTheEarlierRun) {
  const std::string run = FinishedRun("a");
  {
    auto claim = ClaimRunDirectory(run, {.overwrite = true});
    ASSERT_TRUE(claim.ok()) << claim.status().ToString();
    Write("a/coordinator.log", "error: model.init_checkpoint does not exist\n");
    // The start fails here: no WriteRunRecord, the claim is released.
  }
  EXPECT_EQ(Read("a/metrics.jsonl"), "{\"round\":0}\n{\"round\":1}\n");
  EXPECT_EQ(Read("a/coordinator.log"), "old coordinator log\n");
  EXPECT_EQ(Read("a/report/report.md"), "old report\n");
  EXPECT_FALSE(fs::exists(dir_ / "a" / ".replaced"));
}

TEST_F(RunDirTest, OverwriteKilledBeforeTheRunBeganIsRestoredByTheNextClaim) {
  const std::string run = FinishedRun("a");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto claim = ClaimRunDirectory(run, {.overwrite = true});
    _exit(claim.ok() ? 0 : 1);  // no destructors: as if killed
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_FALSE(fs::exists(dir_ / "a" / "metrics.jsonl"));  // set aside by the dead process
  auto claim = ClaimRunDirectory(run, {});
  ASSERT_FALSE(claim.ok()) << "the earlier run was not put back";
  EXPECT_EQ(Read("a/metrics.jsonl"), "{\"round\":0}\n{\"round\":1}\n");
}

TEST_F(RunDirTest, OverwriteIsFinalOnceTheRunBegins) {
  const std::string run = FinishedRun("a");
  {
    auto claim = ClaimRunDirectory(run, {.overwrite = true});
    ASSERT_TRUE(claim.ok()) << claim.status().ToString();
    auto config = Config::Parse("name = \"a\"\n");
    ASSERT_TRUE(config.ok());
    ASSERT_TRUE(WriteRunRecord(run, *config, CorpusFingerprint{}, /*resumed=*/false).ok());
  }
  EXPECT_FALSE(fs::exists(dir_ / "a" / ".replaced"));
  EXPECT_FALSE(fs::exists(dir_ / "a" / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(dir_ / "a" / "report"));
  EXPECT_TRUE(fs::exists(dir_ / "a" / "run.json"));
  EXPECT_TRUE(fs::exists(dir_ / "a" / "keys" / "coordinator.key"));
}

TEST_F(RunDirTest, ResumeOfCompleteRunSaysSoAndChangesNothing) {
  const std::string run = FinishedRun("a");
  auto claim = ClaimRunDirectory(run, {.resume = true});
  ASSERT_FALSE(claim.ok());
  EXPECT_NE(claim.status().message().find("run a is complete (1 of 1 rounds); nothing to do"),
            std::string::npos)
      << claim.status().message();
  EXPECT_EQ(Read("a/summary.json"), "{\"rounds\": 1, \"complete\": true}\n");
  EXPECT_EQ(Read("a/coordinator.log"), "old coordinator log\n");
}

TEST_F(RunDirTest, ResumeOfRunStoppedEarlyIsAllowed) {
  const std::string run = FinishedRun("a", /*complete=*/false);
  auto claim = ClaimRunDirectory(run, {.resume = true});
  ASSERT_TRUE(claim.ok()) << claim.status().ToString();
  EXPECT_TRUE(fs::exists(dir_ / "a" / "metrics.jsonl"));
}

TEST_F(RunDirTest, LeftoversOfAFailedStartAreNotARun) {
  Write("a/coordinator.log", "error: bad key\n");
  auto claim = ClaimRunDirectory(Path("a"), {});
  ASSERT_TRUE(claim.ok()) << claim.status().ToString();
  EXPECT_FALSE(fs::exists(dir_ / "a" / "coordinator.log"));
}

TEST_F(RunDirTest, TwoProcessesCannotShareOneRunDirectory) {
  auto claim = ClaimRunDirectory(Path("a"), {});
  ASSERT_TRUE(claim.ok()) << claim.status().ToString();
  // This process may claim it again (the program, then the library); another may not.
  EXPECT_TRUE(ClaimRunDirectory(Path("a"), {.resume = true}).ok());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto other = ClaimRunDirectory(Path("a"), {.overwrite = true});
    const bool refused = !other.ok() && other.status().message().find("in use by another") !=
                                            std::string::npos;
    _exit(refused ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "a second process claimed a run directory in use";
}

TEST_F(RunDirTest, LockIsReleasedWithTheLastClaim) {
  { auto claim = ClaimRunDirectory(Path("a"), {}); ASSERT_TRUE(claim.ok()); }
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(ClaimRunDirectory(Path("a"), {}).ok() ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(RunDirTest, EveryRunRecordsVersionResolvedConfigAndData) {
  auto config = Config::Parse("name = \"a\"\n[train]\nsteps = 7\n", "t.toml");
  ASSERT_TRUE(config.ok());
  ASSERT_TRUE(config->GetInt("train.steps", 100).ok());
  ASSERT_TRUE(config->GetDouble("train.lr", 1e-3).ok());  // absent: the default is in effect
  ASSERT_TRUE(config->GetString("data.source", "fortunes").ok());
  fs::create_directories(dir_ / "a");
  CorpusFingerprint data{"fortunes", {"/f/art", "/f/zippy"}, "abc123"};
  ASSERT_TRUE(WriteRunRecord(Path("a"), *config, data, /*resumed=*/false).ok());

  const std::string resolved = Read("a/config.resolved.toml");
  EXPECT_NE(resolved.find("steps = 7"), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("[resolved]"), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("'train.lr' = 0.001"), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("'data.source' = 'fortunes'"), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("'train.steps' = 7"), std::string::npos) << resolved;
  auto reparsed = Config::Parse(resolved, "resolved");
  EXPECT_TRUE(reparsed.ok()) << "config.resolved.toml is not TOML: " << reparsed.status().ToString();

  auto run = nlohmann::json::parse(Read("a/run.json"));
  EXPECT_EQ(run["tandem_version"], TandemVersion());
  EXPECT_NE(std::string(TandemVersion()), "");
  EXPECT_EQ(run["data"]["sha256"], "abc123");
  EXPECT_EQ(run["data"]["files"].size(), 2u);
  ASSERT_EQ(run["sessions"].size(), 1u);

  // A resumed session is appended; the run keeps its first session's data.
  data.sha256 = "other";
  ASSERT_TRUE(WriteRunRecord(Path("a"), *config, data, /*resumed=*/true).ok());
  run = nlohmann::json::parse(Read("a/run.json"));
  EXPECT_EQ(run["data"]["sha256"], "abc123");
  ASSERT_EQ(run["sessions"].size(), 2u);
  EXPECT_EQ(run["sessions"][1]["data_sha256"], "other");
  bool told = false;
  for (const std::string& line : DescribeRunRecord(Path("a"))) {
    told = told || line.find("other data") != std::string::npos;
  }
  EXPECT_TRUE(told) << "DescribeRunRecord does not say a session saw other data";
}

}  // namespace
}  // namespace tandem
