// `atelier evaluate` and `atelier train` with eval.* through the real
// binary: the JSON report, the table, --compare, 2 ranks under mpirun equal
// to 1, and errors that name the folder, file or option (exit 1 / 2).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "tests/comm/run_command.h"
#include "tests/launcher/run_atelier.h"
#include "tests/launcher/tiny_checkpoint.h"
#include "tests/support/tiny_run.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

class EvaluateCli : public ::testing::Test {
 protected:
  // One trained tiny run for the whole suite: training it is the slow part.
  static void SetUpTestSuite() { tiny = new TinyCheckpoint(); }
  static void TearDownTestSuite() {
    delete tiny;
    tiny = nullptr;
  }

  static std::string sources() {
    return " --content " + (tiny->root / "content").string() + " --style " + (tiny->root / "style").string();
  }
  static fs::path out(const std::string& name) { return tiny->root / "eval" / name; }
  static json report(const fs::path& path) {
    std::ifstream in(path);
    return json::parse(in);
  }

  static TinyCheckpoint* tiny;
};
TinyCheckpoint* EvaluateCli::tiny = nullptr;

// A content folder whose first files cannot be decoded: evaluated without
// them, each named in a warning and counted in the report.
TEST_F(EvaluateCli, UnreadableFilesFirstInTheFolderAreSkippedAndCounted) {
  const auto mixed = tiny->root / "mixed";
  fs::create_directories(mixed);
  for (const auto& entry : fs::directory_iterator(tiny->root / "content")) fs::copy(entry.path(), mixed / entry.path().filename());
  std::ofstream(mixed / "0-random.jpg", std::ios::binary) << std::string("\x13\x37 random bytes \xff\x00", 18);
  std::ofstream(mixed / "0-text.png") << "this is not a PNG\n";
  const auto ran = run_atelier("evaluate --checkpoint " + tiny->run_dir.string() + " --content " + mixed.string() +
                               " --style " + (tiny->root / "style").string() + " --out " + out("mixed.json").string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  for (const char* name : {"0-random.jpg", "0-text.png"})
    EXPECT_NE(ran.output.find(std::string("skipping content image: cannot decode image '") + (mixed / name).string()),
              std::string::npos) << ran.output;
  const auto mixed_report = report(out("mixed.json"));
  EXPECT_EQ(mixed_report["skipped_files"], 2);
  EXPECT_EQ(mixed_report["pairs"], 6);
}

TEST_F(EvaluateCli, WritesAReportAndATableAndComparesWithAnotherCheckpoint) {
  const auto first = run_atelier("evaluate --checkpoint " + tiny->run_dir.string() + sources() + " --out " +
                                 out("trained.json").string());
  ASSERT_EQ(first.status, 0) << first.output;
  for (const char* text : {"SSIM, RGB", "Gram loss relu3_1", "random-VGG FD", "random-VGG KID", "not FID"})
    EXPECT_NE(first.output.find(text), std::string::npos) << text << "\n" << first.output;
  const auto trained = report(out("trained.json"));
  EXPECT_EQ(trained["pairs"], 6);  // 3 content x 2 style images
  EXPECT_EQ(trained["style_images"], 2);
  EXPECT_EQ(trained["skipped_files"], 0);
  EXPECT_EQ(trained["step"], 2);
  EXPECT_EQ(trained["size"], 32);  // the checkpoint's crop size
  EXPECT_EQ(trained["loss_network"]["distance"], "random-VGG FD");
  for (const char* key : {"ssim_rgb", "ssim_y", "psnr_rgb", "psnr_y", "content_loss", "style_gram_relu1_1",
                          "style_meanstd_relu4_1", "random_vgg_fd", "random_vgg_kid"})
    EXPECT_TRUE(trained["metrics"][key].is_number()) << key;

  const auto second = run_atelier("evaluate --checkpoint " + tiny->sensitive().string() + sources() + " --pairs 4 --out " +
                                  out("sensitive.json").string() + " --compare " + out("trained.json").string());
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_NE(second.output.find("compared with " + out("trained.json").string()), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("pairs differs (4 vs 6)"), std::string::npos) << second.output;
  const auto sensitive = report(out("sensitive.json"));
  // The row of SSIM shows both values and their difference.
  const double mine = sensitive["metrics"]["ssim_rgb"], theirs = trained["metrics"]["ssim_rgb"];
  char row[160];
  std::snprintf(row, sizeof row, "%12.5g %12.5g %+12.4g", mine, theirs, mine - theirs);
  EXPECT_NE(second.output.find(row), std::string::npos) << row << "\n" << second.output;
}

TEST_F(EvaluateCli, TwoRanksUnderMpirunReportWhatOneRankReports) {
  const std::string args = "evaluate --checkpoint " + tiny->run_dir.string() + sources() + " --pairs 5 --batch 2";
  const auto one = run_atelier(args + " --out " + out("one.json").string());
  ASSERT_EQ(one.status, 0) << one.output;
  const auto two = comm::testing::run_command("timeout 240 " + comm::testing::mpirun(2) + ATELIER_BINARY + " " + args +
                                              " --out " + out("two.json").string());
  ASSERT_EQ(two.status, 0) << two.output;
  const auto a = report(out("one.json")), b = report(out("two.json"));
  EXPECT_EQ(b["pairs"], 5);
  ASSERT_EQ(a["metrics"].size(), b["metrics"].size());
  for (const auto& [key, value] : a["metrics"].items()) {
    const double expected = value, actual = b["metrics"][key];
    EXPECT_NEAR(actual, expected, 1e-6 * (1 + std::abs(expected))) << key;
  }
}

TEST_F(EvaluateCli, UnusableInputsExitOneAndBadOptionsExitTwoNamingThem) {
  const std::string ckpt = "evaluate --checkpoint " + tiny->run_dir.string();
  const std::string to = " --out " + out("x.json").string();
  fs::create_directories(tiny->root / "empty");
  auto ran = run_atelier(ckpt + " --content " + (tiny->root / "empty").string() + " --style " +
                         (tiny->root / "style").string() + to);
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find("--content"), std::string::npos) << ran.output;
  EXPECT_NE(ran.output.find((tiny->root / "empty").string()), std::string::npos) << ran.output;

  fs::create_directories(tiny->root / "broken");
  std::ofstream(tiny->root / "broken" / "bad.jpg") << "not a jpeg";
  ran = run_atelier(ckpt + " --content " + (tiny->root / "broken").string() + " --style " +
                    (tiny->root / "style").string() + to);
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find("bad.jpg"), std::string::npos) << ran.output;

  ran = run_atelier(ckpt + sources() + " --pairs 7" + to);
  EXPECT_EQ(ran.status, 2) << ran.output;
  EXPECT_NE(ran.output.find("--pairs: 7"), std::string::npos) << ran.output;
  ran = run_atelier(ckpt + sources() + " --size 20" + to);
  EXPECT_EQ(ran.status, 2) << ran.output;
  EXPECT_NE(ran.output.find("--size"), std::string::npos) << ran.output;
  ran = run_atelier(ckpt + sources());  // no --out
  EXPECT_EQ(ran.status, 2) << ran.output;
  fs::create_directories(out("not-json.json").parent_path());  // this test may run alone
  std::ofstream(out("not-json.json")) << "{";
  ran = run_atelier(ckpt + sources() + to + " --compare " + out("not-json.json").string());
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find("not-json.json"), std::string::npos) << ran.output;
}

TEST(EvalConfig, KeysParseDefaultToOffAndEveryStepsNeedsBothFolders) {
  EXPECT_EQ(parse_config("", {}).eval.every_steps, 0);
  const auto c = parse_config("", {"eval.every_steps=5", "eval.content=[a, b]", "eval.style=s", "eval.pairs=7"});
  EXPECT_EQ(c.eval.every_steps, 5);
  EXPECT_EQ(c.eval.content, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c.eval.style, (std::vector<std::string>{"s"}));
  EXPECT_EQ(c.eval.pairs, 7);
  try {
    parse_config("", {"eval.every_steps=5", "eval.style=s"});
    FAIL() << "eval.every_steps without eval.content was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("eval.content"), std::string::npos) << e.what();
  }
}

// eval.* during a 2-rank training job: every rank takes part, rank 0 alone
// logs, and the numbers match a 1-rank run of the same global batch.
TEST_F(EvaluateCli, TrainingEvaluatesAcrossRanksAndLogsOnRankZero) {
  auto args = [&](const std::string& name, int batch) {
    return " train" + testing_support::tiny_train_args(tiny->root, name, 2, batch) +
           " --set eval.every_steps=1 --set eval.content=" + (tiny->root / "content").string() +
           " --set eval.style=" + (tiny->root / "style").string() + " --set eval.pairs=5";
  };
  const auto one = run_atelier(args("eval-one", 2));
  ASSERT_EQ(one.status, 0) << one.output;
  const auto two = comm::testing::run_command("timeout 240 " + comm::testing::mpirun(2) + ATELIER_BINARY +
                                              args("eval-two", 1));
  ASSERT_EQ(two.status, 0) << two.output;
  auto eval_lines = [&](const std::string& name) {
    std::vector<json> lines;
    std::ifstream in(tiny->root / "runs" / name / "metrics.jsonl");
    for (std::string line; std::getline(in, line);)
      if (line.find("eval/") != std::string::npos) lines.push_back(json::parse(line));
    return lines;
  };
  const auto a = eval_lines("eval-one"), b = eval_lines("eval-two");
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);  // rank 0 alone writes
  for (size_t i = 0; i < a.size(); ++i)
    for (const char* key : {"eval/ssim_rgb", "eval/content_loss", "eval/random_vgg_fd"}) {
      // The replicas of 1 and 2 ranks differ by float rounding of the averaged gradients.
      const double expected = a[i][key], actual = b[i][key];
      EXPECT_NEAR(actual, expected, 1e-3 * (1 + std::abs(expected))) << key << " step " << a[i]["step"];
    }
}

}  // namespace
}  // namespace atelier::launcher
