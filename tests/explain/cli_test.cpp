// `atelier explain` as a user runs it: the networks come from the
// checkpoint's config.yaml, and bad input exits with a message naming it.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "checkpoint/checkpoint.h"
#include "models/models.h"
#include "tests/comm/run_command.h"
#include "tests/launcher/run_atelier.h"
#include "tests/support/pattern_images.h"
#include "tests/support/tiny_run.h"

namespace {
namespace fs = std::filesystem;

using atelier::launcher::run_atelier;

class ExplainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-explain-cli-" + std::to_string(std::random_device{}()));
    fs::create_directories(root / "run" / "checkpoints");
    cv::Mat img(40, 40, CV_8UC3);
    cv::randu(img, 0, 255);
    atelier::testing_support::write_bgr(root / "a.png", img);
    // Widths other than the defaults: explain must take them from config.yaml.
    atelier::models::GeneratorOptions g;
    g.encoder.width = g.decoder.width = 4;
    atelier::models::DiscriminatorOptions d;
    d.width = 4;
    atelier::models::AdaINGenerator generator(g);
    atelier::models::PatchDiscriminator discriminator(d);
    atelier::checkpoint::save(root / "run" / "checkpoints", {5, 0, 1, "h"}, [&](const fs::path& dir) {
      torch::save(generator, (dir / "generator.pt").string());
      torch::save(discriminator, (dir / "discriminator.pt").string());
      std::ofstream(dir / "config.yaml") << "model:\n  encoder_width: 4\n  decoder_width: 4\n  disc_width: 4\n";
    });
  }
  void TearDown() override { fs::remove_all(root); }
  std::string args(const std::string& checkpoint, const std::string& extra) const {
    return "explain --checkpoint " + checkpoint + " --content " + (root / "a.png").string() + " --style " +
           (root / "a.png").string() + " --out " + (root / "out").string() + " --size 32 " + extra;
  }
  fs::path root;
};

TEST_F(ExplainCli, LatestFileOfACheckpointIsExplained) {
  const auto ran = run_atelier(args((root / "run" / "checkpoints" / "LATEST").string(), "--methods saliency gradcam"));
  ASSERT_EQ(ran.status, 0) << ran.output;
  EXPECT_TRUE(fs::exists(root / "out" / "report.html"));
  EXPECT_TRUE(fs::exists(root / "out" / "pair-0" / "gradcam_output.png"));
  EXPECT_FALSE(fs::exists(root / "out" / "pair-0" / "occlusion_style.png")) << "ran a method not asked for";
}

TEST_F(ExplainCli, BadInputsExitWithAMessageNamingThem) {
  auto ran = run_atelier(args((root / "nowhere").string(), ""));
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find("nowhere"), std::string::npos) << ran.output;
  ran = run_atelier(args((root / "run" / "checkpoints" / "LATEST").string(), "--methods lime"));
  EXPECT_EQ(ran.status, 2) << ran.output;
  EXPECT_NE(ran.output.find("'lime'"), std::string::npos) << ran.output;
  ran = run_atelier("explain --checkpoint " + (root / "run").string() + " --content " + (root / "b.jpg").string() +
                    " --style " + (root / "a.png").string() + " --out " + (root / "out").string());
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find("b.jpg"), std::string::npos) << ran.output;
}

// A content folder whose first files cannot be decoded: each skipped with a
// warning naming it, the readable one explained; the pairs count only it.
TEST_F(ExplainCli, AFolderWithUnreadableFilesFirstIsExplainedWithoutThem) {
  const auto mixed = root / "mixed";
  fs::create_directories(mixed);
  std::ofstream(mixed / "0-random.jpg", std::ios::binary) << std::string("\x13\x37 random bytes \xff\x00", 18);
  std::ofstream(mixed / "0-text.png") << "this is not a PNG\n";
  const auto only_bad = run_atelier("explain --checkpoint " + (root / "run").string() + " --content " +
                                    mixed.string() + " --style " + (root / "a.png").string() + " --out " +
                                    (root / "out").string() + " --size 32 --methods saliency");
  EXPECT_EQ(only_bad.status, 1) << only_bad.output;
  EXPECT_NE(only_bad.output.find("content images: none of the 2 image files in '" + mixed.string() + "'"),
            std::string::npos) << only_bad.output;
  fs::copy_file(root / "a.png", mixed / "a.png");
  const auto ran = run_atelier("explain --checkpoint " + (root / "run").string() + " --content " + mixed.string() +
                               " --style " + (root / "a.png").string() + " --out " + (root / "out").string() +
                               " --size 32 --methods saliency");
  ASSERT_EQ(ran.status, 0) << ran.output;
  for (const char* name : {"0-random.jpg", "0-text.png"})
    EXPECT_NE(ran.output.find("skipping content image: cannot decode image '" + (mixed / name).string()),
              std::string::npos) << ran.output;
  EXPECT_NE(ran.output.find("skipped 2 unreadable image file(s)"), std::string::npos) << ran.output;
  EXPECT_TRUE(fs::exists(root / "out" / "pair-0"));
  EXPECT_FALSE(fs::exists(root / "out" / "pair-1"));
}

std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) out.push_back(fs::relative(entry.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

// Under mpirun the pairs are split across ranks; rank 0 assembles the same
// report, the same files and the same numbers as a single process.
TEST_F(ExplainCli, TwoRanksWriteTheSameFilesAndNumbersAsOne) {
  cv::Mat img(40, 40, CV_8UC3);
  cv::randu(img, 0, 255);
  atelier::testing_support::write_bgr(root / "b.png", img);
  const std::string inputs = " --checkpoint " + (root / "run").string() + " --content " + (root / "a.png").string() +
                             " " + (root / "b.png").string() + " --style " + (root / "a.png").string() + " " +
                             (root / "b.png").string() + " --size 32 --methods saliency gradcam features --threads 1";
  const auto one = run_atelier("explain" + inputs + " --out " + (root / "one").string());
  ASSERT_EQ(one.status, 0) << one.output;
  const auto two = atelier::comm::testing::run_command("timeout 240 " + atelier::comm::testing::mpirun(2) +
                                                       ATELIER_BINARY + " explain" + inputs + " --out " +
                                                       (root / "two").string());
  ASSERT_EQ(two.status, 0) << two.output;
  EXPECT_NE(two.output.find("2 rank(s)"), std::string::npos) << two.output;
  EXPECT_EQ(files_under(root / "one"), files_under(root / "two"));
  EXPECT_TRUE(fs::exists(root / "two" / "pair-3" / "saliency_content.png"));
  std::ifstream a(root / "one" / "summary.json"), b(root / "two" / "summary.json");
  EXPECT_EQ(nlohmann::json::parse(a), nlohmann::json::parse(b));
}

// The checkpoint hook runs the explainer beside training, on every second
// checkpoint here, so explanations follow the run.
TEST_F(ExplainCli, CheckpointHookExplainsCheckpointsAsTrainingGoes) {
  atelier::testing_support::write_pattern_images(root / "content", 3, 1);
  atelier::testing_support::write_pattern_images(root / "style", 2, 2);
  const auto run = root / "runs" / "hooked";
  const std::string hook = std::string(ATELIER_BINARY) +
                           " explain --checkpoint $ATELIER_CHECKPOINT --content " + (root / "a.png").string() +
                           " --style " + (root / "a.png").string() + " --methods saliency --out " + run.string() +
                           "/explain/step-$ATELIER_STEP";
  const auto trained = run_atelier("train" + atelier::testing_support::tiny_train_args(root, "hooked", 6, 1, 2) +
                                   " --set 'checkpoint.hook=" + hook + "' --set checkpoint.hook_every_steps=4" +
                                   " --set checkpoint.keep=5");
  ASSERT_EQ(trained.status, 0) << trained.output;
  EXPECT_TRUE(fs::exists(run / "explain" / "step-4" / "report.html"));
  EXPECT_TRUE(fs::exists(run / "explain" / "step-4" / "pair-0" / "saliency_content.png"));
  EXPECT_FALSE(fs::exists(run / "explain" / "step-2")) << "hook_every_steps=4 ran the hook for step 2";
  EXPECT_FALSE(fs::exists(run / "explain" / "step-6"));
}

}  // namespace
