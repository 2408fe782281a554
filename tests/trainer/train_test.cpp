// A whole (tiny) training run: files of a run directory, finite losses, and
// a resume from a checkpoint that lands on the same parameters as a run that
// never stopped.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <torch/torch.h>

#include "tests/support/pattern_images.h"
#include "tests/support/short_run.h"
#include "tests/support/tiny_run.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace {
namespace fs = std::filesystem;


class TinyRun : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-train-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 5, 1);
    testing_support::write_pattern_images(root / "style", 3, 2);
  }
  void TearDown() override { fs::remove_all(root); }

  Config tiny(const std::string& name, int64_t steps) const {
    Config c;
    c.model.generator.encoder.width = 4;
    c.model.generator.decoder.width = 4;
    c.model.discriminator.width = 4;
    c = testing_support::short_run(c, root, name, steps);
    c.data.workers = 2;
    c.train.threads = 1;
    c.train.log_every = 5;
    c.train.sample_every = 10;
    c.checkpoint.every_steps = 10;
    return c;
  }

  // Parameters of a checkpoint's generator and discriminator, by name.
  std::map<std::string, torch::Tensor> parameters(const Config& c, const fs::path& ckpt) const {
    return testing_support::checkpoint_parameters(ckpt, c.model.generator, c.model.discriminator);
  }

  fs::path root;
};

int count_lines(const fs::path& path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

TEST_F(TinyRun, TwentyStepsWriteEveryRunFileWithFiniteLosses) {
  const auto c = tiny("full", 20);
  const auto result = train(c, "train:\n  steps: 20\n", false);
  EXPECT_EQ(result.last_step, 20);
  EXPECT_TRUE(std::isfinite(result.loss_g));
  EXPECT_TRUE(std::isfinite(result.loss_d));
  const fs::path run = result.run_dir;
  EXPECT_TRUE(fs::exists(run / "config.yaml"));
  EXPECT_TRUE(fs::exists(run / "log.txt"));
  EXPECT_EQ(count_lines(run / "metrics.jsonl"), 20);
  EXPECT_TRUE(fs::exists(run / "samples" / "step-000010.png"));
  EXPECT_TRUE(fs::exists(run / "samples" / "step-000020.png"));
  EXPECT_FALSE(fs::is_empty(run / "tb"));
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step-10" / "manifest.json"));
  std::ifstream saved_config(run / "checkpoints" / "step-10" / "config.yaml");
  std::string first_line;
  std::getline(saved_config, first_line);
  EXPECT_EQ(first_line, "train:");
  EXPECT_EQ(result.checkpoint, (run / "checkpoints" / "step-20").string());
}

TEST_F(TinyRun, ResumedRunEndsWithTheSameParametersAsAnUninterruptedOne) {
  const auto full = train(tiny("full", 20), "a", false);
  train(tiny("split", 10), "b", false);
  const auto resumed = train(tiny("split", 20), "b", true);
  EXPECT_EQ(resumed.first_step, 10);
  EXPECT_EQ(resumed.last_step, 20);
  const auto expected = parameters(tiny("full", 20), full.checkpoint);
  const auto actual = parameters(tiny("split", 20), resumed.checkpoint);
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, value] : expected) EXPECT_TRUE(torch::equal(value, actual.at(name))) << name;
  // The resumed run appends to the same metrics file.
  EXPECT_EQ(count_lines(fs::path(resumed.run_dir) / "metrics.jsonl"), 20);
}

// Checkpoints every 3 steps written in the background (and one policy that
// skips saves) against inline writes: the training itself is unchanged.
TEST_F(TinyRun, AsyncCheckpointsDoNotChangeTheResult) {
  auto inline_config = tiny("inline", 12);
  inline_config.checkpoint.every_steps = 3;
  inline_config.checkpoint.async = false;
  auto async_config = tiny("async", 12);
  async_config.checkpoint.every_steps = 3;
  async_config.checkpoint.when_busy = checkpoint::WhenBusy::Skip;
  const auto a = train(inline_config, "a", false);
  const auto b = train(async_config, "a", false);
  const auto expected = parameters(inline_config, a.checkpoint);
  const auto actual = parameters(async_config, b.checkpoint);
  for (const auto& [name, value] : expected) EXPECT_TRUE(torch::equal(value, actual.at(name))) << name;
  EXPECT_EQ(fs::path(b.checkpoint).filename(), "step-12");
  EXPECT_TRUE(checkpoint::verifies(b.checkpoint));
}

TEST_F(TinyRun, ExistingCheckpointsWithoutResumeAreRefused) {
  train(tiny("once", 10), "x", false);
  EXPECT_THROW(train(tiny("once", 10), "x", false), TrainError);
}

TEST_F(TinyRun, ResumeWithoutCheckpointIsAnError) {
  EXPECT_THROW(train(tiny("never", 10), "x", true), TrainError);
}

// A folder whose first files (in sort order) cannot be decoded: random
// bytes named .jpg, a truncated JPEG, text named .png. The run skips them
// everywhere, the sample grids and the held-out evaluation included, and
// counts them.
TEST_F(TinyRun, UnreadableFilesFirstInTheFolderAreSkippedEvenForSampleGrids) {
  for (const auto& folder : {root / "content", root / "style"}) {
    const auto jpeg = atelier::testing_support::encode_bgr(".jpg", atelier::testing_support::read_bgr(folder / "img0.png"));
    std::ofstream(folder / "0-truncated.jpg", std::ios::binary)
        .write(reinterpret_cast<const char*>(jpeg.data()), static_cast<std::streamsize>(jpeg.size() / 3));
    std::ofstream(folder / "0-random.jpg", std::ios::binary) << std::string("\x13\x37 random bytes \xff\x00", 18);
    std::ofstream(folder / "0-text.png") << "this is not a PNG\n";
  }
  auto c = tiny("unreadable", 4);
  c.train.sample_every = 2;
  c.train.sample_count = 2;
  // The held-out evaluation reads the same folders: it skips them too.
  c.eval.every_steps = 4;
  c.eval.content = {(root / "content").string()};
  c.eval.style = {(root / "style").string()};
  c.eval.pairs = 2;
  const auto result = train(c, "train:\n  steps: 4\n", false);
  EXPECT_EQ(result.last_step, 4);
  EXPECT_TRUE(fs::exists(fs::path(result.run_dir) / "samples" / "step-000002.png"));
  EXPECT_TRUE(fs::exists(fs::path(result.run_dir) / "samples" / "step-000004.png"));
  // 8 content and 8 style samples met every bad content file and, with the
  // epoch's shuffle, at least some bad style ones: each counted once.
  std::ifstream metrics(fs::path(result.run_dir) / "metrics.jsonl");
  std::string line, last;
  bool evaluated = false;
  while (std::getline(metrics, line)) {
    if (line.find("\"skipped_files\":") != std::string::npos) last = line;
    evaluated = evaluated || line.find("\"eval/ssim_rgb\"") != std::string::npos;
  }
  const auto at = last.find("\"skipped_files\":");
  ASSERT_NE(at, std::string::npos) << last;
  const double skipped = std::stod(last.substr(at + 16));
  EXPECT_GE(skipped, 3) << last;
  EXPECT_LE(skipped, 6) << last;
  EXPECT_TRUE(evaluated) << "no held-out evaluation in metrics.jsonl";
}

TEST_F(TinyRun, AFolderOfOnlyUnreadableFilesIsAnErrorNamingTheKey) {
  fs::remove_all(root / "style");
  fs::create_directories(root / "style");
  std::ofstream(root / "style" / "a.png") << "not an image\n";
  std::ofstream(root / "style" / "b.jpg") << "nor this\n";
  try {
    train(tiny("nothing-readable", 2), "", false);
    ADD_FAILURE() << "trained on a style folder without one readable image";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("style"), std::string::npos) << e.what();
  }
}

TEST_F(TinyRun, MissingDataFolderIsAnErrorNamingIt) {
  auto c = tiny("nodata", 5);
  c.data.content = {(root / "missing").string()};
  try {
    train(c, "x", false);
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

TEST(LearningRate, LinearScheduleDecaysFromDecayStartToZero) {
  OptimConfig o;
  EXPECT_EQ(lr_factor(o, 50, 100), 1.0);
  o.schedule = Schedule::Linear;
  o.decay_start = 60;
  EXPECT_EQ(lr_factor(o, 59, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(o, 60, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(o, 80, 100), 0.5);
  EXPECT_NEAR(lr_factor(o, 99, 100), 1.0 / 40, 1e-12);
}

}  // namespace
}  // namespace atelier::trainer
