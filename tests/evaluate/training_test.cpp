// Evaluation during training: eval/... numbers land in metrics.jsonl and
// TensorBoard at the due steps, and evaluating does not change what is trained.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "tests/support/pattern_images.h"
#include "tests/support/tiny_run.h"
#include "trainer/event_file.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace {
namespace fs = std::filesystem;

class TrainingEvaluation : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-train-eval-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 4, 1);
    testing_support::write_pattern_images(root / "style", 3, 2);
    testing_support::write_pattern_images(root / "held-out-content", 3, 3);
    testing_support::write_pattern_images(root / "held-out-style", 2, 4);
  }
  void TearDown() override { fs::remove_all(root); }

  Config tiny(const std::string& name, int64_t eval_every) const {
    Config c;
    c.run = {name, (root / "runs").string(), "warn"};
    c.model.generator.encoder.width = c.model.generator.decoder.width = 4;
    c.model.discriminator.width = 4;
    c.data.content = {(root / "content").string()};
    c.data.style = {(root / "style").string()};
    c.data.augment = {40, 32, true};
    c.data.workers = 1;
    c.train.steps = 4;
    c.train.batch_size = 2;
    c.train.threads = 1;
    c.train.sample_every = 100;
    c.train.sample_count = 1;
    c.eval = {eval_every, {(root / "held-out-content").string()}, {(root / "held-out-style").string()}, 5};
    return c;
  }

  fs::path root;
};

TEST_F(TrainingEvaluation, DueStepsLogEvalKeysAndTrainingIsUnchanged) {
  const auto with_eval = tiny("with", 3);
  const auto result = train(with_eval, "", false);
  // Due at step 3 (every 3) and 4 (the last step).
  std::vector<int64_t> eval_steps;
  std::ifstream metrics(fs::path(result.run_dir) / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("eval/ssim_rgb")) continue;
    eval_steps.push_back(j["step"].get<int64_t>());
    EXPECT_TRUE(j.contains("eval/random_vgg_fd")) << line;
    EXPECT_TRUE(j.contains("eval/random_vgg_kid")) << line;
    EXPECT_TRUE(j.contains("eval/style_meanstd_relu4_1")) << line;
  }
  EXPECT_EQ(eval_steps, (std::vector<int64_t>{3, 4}));

  std::set<int64_t> tb_steps;
  for (const auto& file : fs::directory_iterator(fs::path(result.run_dir) / "tb"))
    for (const auto& event : read_events(file.path().string()))
      for (const auto& value : event.values)
        if (value.tag == "eval/random_vgg_fd") tb_steps.insert(event.step);
  EXPECT_EQ(tb_steps, (std::set<int64_t>{3, 4}));

  // Evaluating draws no random numbers and leaves the networks' modes as
  // they were: the run trains exactly what a run without it trains.
  const auto without = tiny("without", 0);
  train(without, "", false);
  const auto a = testing_support::checkpoint_parameters(root / "runs" / "with" / "checkpoints" / "step-4");
  const auto b = testing_support::checkpoint_parameters(root / "runs" / "without" / "checkpoints" / "step-4");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, value] : a) EXPECT_TRUE(torch::equal(value, b.at(name))) << name;
}

TEST_F(TrainingEvaluation, AMissingHeldOutFolderStopsTheRunNamingIt) {
  auto c = tiny("bad", 2);
  c.eval.style = {(root / "no-such-folder").string()};
  try {
    train(c, "", false);
    FAIL() << "a missing eval.style folder was accepted";
  } catch (const TrainError& e) {
    EXPECT_NE(std::string(e.what()).find("eval."), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no-such-folder"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace atelier::trainer
