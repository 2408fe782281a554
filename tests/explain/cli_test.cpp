// `atelier explain` as a user runs it: the networks come from the
// checkpoint's config.yaml, and bad input exits with a message naming it.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "checkpoint/checkpoint.h"
#include "models/models.h"
#include "tests/launcher/run_atelier.h"

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
    cv::imwrite((root / "a.png").string(), img);
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

}  // namespace
