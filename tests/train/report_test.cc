// Tests for `tandem report` (train/report.h) on synthetic run directories shaped like a federated
// run (coordinator lines per round) and a centralized `tandem train` run (lines per evaluation).
#include "train/report.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/temp_dir.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

void Write(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool IsPng(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char sig[8] = {};
  in.read(sig, 8);
  return in.gcount() == 8 && std::string(sig, 8) == std::string("\x89PNG\r\n\x1a\n", 8);
}

// Sets PATH for one scope, restoring it after (tests in one binary run on one thread).
class ScopedPath {
 public:
  explicit ScopedPath(const std::string& path) {
    if (const char* old = std::getenv("PATH")) old_ = old;
    ::setenv("PATH", path.c_str(), 1);
  }
  ~ScopedPath() { ::setenv("PATH", old_.c_str(), 1); }

 private:
  std::string old_;
};

constexpr const char* kFederated =
    R"({"round":0,"time_s":3.1,"val_loss":5.55,"val_ppl":257.2}
{"round":1,"time_s":21.4,"round_s":18.3,"cohort":4,"results":4,"dropped":0,"late":0,"rejected":0,"train_loss":3.12,"val_loss":2.98,"val_ppl":19.7,"bytes_up":1650000,"bytes_down":1650000,"bytes_up_total":1650000,"bytes_down_total":1650000,"dispatch_s":0.01,"collect_s":17.2,"aggregate_s":0.02,"eval_s":1.1}
{"round":2,"time_s":40.5,"round_s":19.1,"cohort":4,"results":3,"dropped":1,"late":0,"rejected":0,"train_loss":2.5,"val_loss":2.41,"val_ppl":11.1,"eps":1.25,"clip_norm":0.9,"strategy":"fedavg","aborted":false,"bytes_up":1237500,"bytes_down":1650000,"bytes_up_total":2887500,"bytes_down_total":3300000,"dispatch_s":0.01,"collect_s":18.0,"aggregate_s":0.02,"eval_s":1.0}
)";

// What trainer.cc writes: nlohmann's sorted keys, exact-match accuracy nested per category.
constexpr const char* kCentralized =
    R"({"exact_match":{"add":0.25,"sub":0.5},"grad_norm":0.72,"lr":0.0001,"seconds":10.5,"step":200,"tokens_per_s":16919.5,"train_loss":1.39,"val_loss":1.33}
{"exact_match":{"add":0.5,"sub":0.75},"grad_norm":0.7,"lr":0.00005,"seconds":20.25,"step":400,"tokens_per_s":16000,"train_loss":1.2,"val_loss":1.18}
)";

class ReportTest : public testing::TempDirTest {};

TEST_F(ReportTest, FederatedTableColumnsRowsAndPlots) {
  Write(Path("metrics.jsonl"), kFederated);
  Write(Path("summary.json"),
        R"({"name":"fed-demo","rounds":2,"final_val_loss":2.41,"note":"a | b\nc"})");
  auto md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_TRUE(md.ok()) << md.status().ToString();

  EXPECT_NE(md->find("# Report: fed-demo"), std::string::npos);
  EXPECT_NE(md->find("| key | value |\n|---|---|\n| name | fed-demo |\n| rounds | 2 |\n"
                     "| final_val_loss | 2.41 |\n| note | a \\| b<br>c |\n"),
            std::string::npos)
      << *md;
  // x, losses (train before val, loss before perplexity), privacy, counters, bytes (per round
  // before totals), time (cumulative, round, phases in the writer's order). Strings and
  // booleans are not columns.
  EXPECT_NE(md->find("| round | train_loss | val_loss | val_ppl | eps | clip_norm | cohort | "
                     "results | dropped | late | rejected | bytes_up | bytes_down | "
                     "bytes_up_total | bytes_down_total | time_s | round_s | dispatch_s | "
                     "collect_s | aggregate_s | eval_s |\n"),
            std::string::npos)
      << *md;
  EXPECT_EQ(md->find("strategy"), std::string::npos);
  EXPECT_EQ(md->find("aborted"), std::string::npos);
  // Round 0 has only evaluation: the other cells are blank.
  EXPECT_NE(md->find("\n| 0 | | 5.55 | 257.2 | | | | | | | | | | | | 3.1 | | | | | |\n"),
            std::string::npos)
      << *md;
  EXPECT_NE(md->find("\n| 1 | 3.12 | 2.98 | 19.7 | | | 4 | 4 | 0 | 0 | 0 | 1650000 | 1650000 | "
                     "1650000 | 1650000 | 21.4 | 18.3 | 0.01 | 17.2 | 0.02 | 1.1 |\n"),
            std::string::npos)
      << *md;
  EXPECT_NE(md->find("\n| 2 | 2.5 | 2.41 | 11.1 | 1.25 | 0.9 | 4 | 3 | 1 | 0 | 0 | 1237500 | "
                     "1650000 | 2887500 | 3300000 | 40.5 | 19.1 | 0.01 | 18 | 0.02 | 1 |\n"),
            std::string::npos)
      << *md;

  const fs::path out = dir_ / "report";
  EXPECT_EQ(Read((out / "report.md").string()), *md);
  for (const char* png : {"loss.png", "train_loss.png", "val_loss.png", "bytes.png", "time.png"}) {
    EXPECT_TRUE(IsPng((out / png).string())) << png;
    EXPECT_NE(md->find(std::string("](") + png + ")"), std::string::npos) << png;
  }
  EXPECT_FALSE(fs::exists(out / "gnuplot.log"));
  // The bytes plot draws per-round bytes, not the running totals; time leaves out time_s.
  const std::string script = Read((out / "plots.gp").string());
  EXPECT_NE(script.find("title 'bytes_up'"), std::string::npos);
  EXPECT_EQ(script.find("title 'bytes_up_total'"), std::string::npos);
  EXPECT_NE(script.find("title 'collect_s'"), std::string::npos);
  EXPECT_EQ(script.find("title 'time_s'"), std::string::npos);
  // Missing cells reach gnuplot as NaN.
  EXPECT_NE(Read((out / "metrics.tsv").string()).find("\n0\tNaN\t5.55"), std::string::npos);
}

TEST_F(ReportTest, EachGroupsLossOfAGroupedRunIsPlotted) {
  Write(Path("metrics.jsonl"),
        "{\"round\":0,\"val_loss\":5.5,\"val_loss.slm-micro\":5.6,\"val_loss.slm-tiny\":5.4}\n"
        "{\"round\":1,\"val_loss\":3.5,\"val_loss.slm-micro\":3.6,\"val_loss.slm-tiny\":3.4,"
        "\"results.slm-tiny\":2}\n");
  auto md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_TRUE(md.ok()) << md.status().ToString();
  const fs::path out = dir_ / "report";
  EXPECT_TRUE(IsPng((out / "val_loss.slm-tiny.png").string()));
  EXPECT_TRUE(IsPng((out / "val_loss.slm-micro.png").string()));
  EXPECT_FALSE(fs::exists(out / "results.slm-tiny.png"));  // a count, not a loss
  EXPECT_NE(Read((out / "plots.gp").string()).find("title 'val_loss.slm-tiny'"), std::string::npos);
}

TEST_F(ReportTest, CentralizedRunUsesStepAndFlattensNestedObjects) {
  Write(Path("metrics.jsonl"), kCentralized);
  auto md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_TRUE(md.ok()) << md.status().ToString();
  EXPECT_EQ(md->find("## Summary"), std::string::npos);  // no summary.json
  EXPECT_NE(md->find("x is `step`"), std::string::npos);
  EXPECT_NE(md->find("| step | train_loss | val_loss | exact_match.add | exact_match.sub | "
                     "grad_norm | lr | tokens_per_s | seconds |\n"),
            std::string::npos)
      << *md;
  EXPECT_NE(md->find("\n| 400 | 1.2 | 1.18 | 0.5 | 0.75 | 0.7 | 5e-05 | 16000 | 20.25 |\n"),
            std::string::npos)
      << *md;
  const fs::path out = dir_ / "report";
  EXPECT_TRUE(IsPng((out / "train_loss.png").string()));
  EXPECT_TRUE(IsPng((out / "val_loss.png").string()));
  EXPECT_TRUE(IsPng((out / "loss.png").string()));
  EXPECT_FALSE(fs::exists(out / "bytes.png"));  // no bytes keys
  EXPECT_FALSE(fs::exists(out / "time.png"));   // only cumulative seconds
}

TEST_F(ReportTest, WithoutPlotsWritesOnlyMarkdownToOutDir) {
  Write(Path("metrics.jsonl"), kCentralized);
  ReportOptions options;
  options.out_dir = Path("elsewhere/nested");
  options.plots = false;
  ScopedPath no_gnuplot(Path("empty-bin"));  // gnuplot is not needed without plots
  auto md = RunReport(dir_.string(), options);
  ASSERT_TRUE(md.ok()) << md.status().ToString();
  EXPECT_EQ(Read(Path("elsewhere/nested/report.md")), *md);
  EXPECT_EQ(md->find(".png"), std::string::npos);
  EXPECT_FALSE(fs::exists(Path("elsewhere/nested/loss.png")));
  EXPECT_FALSE(fs::exists(dir_ / "report"));
}

TEST_F(ReportTest, SingleLineRunAndQuoteInOutDir) {
  // One point gives gnuplot an empty x range; a quote must survive gnuplot's string syntax.
  Write(Path("metrics.jsonl"), "{\"round\":0,\"val_loss\":5.5}\n");
  ReportOptions options;
  options.out_dir = Path("it's here");
  auto md = RunReport(dir_.string(), options);
  ASSERT_TRUE(md.ok()) << md.status().ToString();
  EXPECT_NE(md->find("| round | val_loss |\n|---:|---:|\n| 0 | 5.5 |\n"), std::string::npos) << *md;
  EXPECT_TRUE(IsPng(Path("it's here/val_loss.png")));
  EXPECT_FALSE(fs::exists(Path("it's here/loss.png")));  // one loss key: no combined plot
}

TEST_F(ReportTest, MalformedLineIsNamedByNumber) {
  // Line 2 is blank (skipped, still counted); line 4 is cut short.
  Write(Path("metrics.jsonl"), "{\"round\":0,\"val_loss\":5}\n\n{\"round\":1,\"val_loss\":4}\n"
                               "{\"round\":2,\"val_lo\n");
  auto md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_EQ(md.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(md.status().message().find("line 4"), std::string::npos) << md.status().ToString();

  Write(Path("metrics.jsonl"), "{\"round\":0}\n[1,2]\n");
  md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_NE(md.status().message().find("line 2: not a JSON object"), std::string::npos)
      << md.status().ToString();
}

TEST_F(ReportTest, MissingEmptyAndKeylessMetricsAreErrors) {
  auto md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_EQ(md.status().code(), StatusCode::kNotFound);

  Write(Path("metrics.jsonl"), "\n  \n");
  md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_NE(md.status().message().find("empty"), std::string::npos) << md.status().ToString();

  Write(Path("metrics.jsonl"), "{\"val_loss\":1.5}\n{\"val_loss\":1.2,\"round\":\"one\"}\n");
  md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_NE(md.status().message().find("neither"), std::string::npos) << md.status().ToString();

  Write(Path("metrics.jsonl"), "{\"round\":0,\"val_loss\":1.5}\n{\"val_loss\":1.2}\n");
  md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_NE(md.status().message().find("line 2: no numeric 'round'"), std::string::npos)
      << md.status().ToString();

  Write(Path("metrics.jsonl"), kFederated);
  Write(Path("summary.json"), "{\"name\":");
  md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_NE(md.status().message().find("summary.json"), std::string::npos);
}

TEST_F(ReportTest, MissingGnuplotIsAClearError) {
  Write(Path("metrics.jsonl"), kFederated);
  fs::create_directories(Path("empty-bin"));
  ScopedPath no_gnuplot(Path("empty-bin"));
  auto md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_EQ(md.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(md.status().message().find("gnuplot-nox"), std::string::npos)
      << md.status().ToString();
  EXPECT_FALSE(fs::exists(dir_ / "report" / "report.md"));
}

TEST_F(ReportTest, FailingGnuplotReportsItsOutput) {
  Write(Path("metrics.jsonl"), kFederated);
  fs::create_directories(Path("fake-bin"));
  Write(Path("fake-bin/gnuplot"), "#!/bin/sh\necho \"no terminal pngcairo here\" >&2\nexit 3\n");
  fs::permissions(Path("fake-bin/gnuplot"), fs::perms::owner_all);
  ScopedPath fake(Path("fake-bin"));
  auto md = RunReport(dir_.string(), ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_EQ(md.status().code(), StatusCode::kInternal);
  EXPECT_NE(md.status().message().find("exit 3"), std::string::npos) << md.status().ToString();
  EXPECT_NE(md.status().message().find("no terminal pngcairo here"), std::string::npos)
      << md.status().ToString();
  EXPECT_TRUE(fs::exists(dir_ / "report" / "gnuplot.log"));
}

}  // namespace
}  // namespace tandem
