// Evaluation during training: eval/... numbers land in metrics.jsonl and
// TensorBoard at the due steps, and evaluating does not change what is trained.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "comm/comm.h"
#include "evaluate/evaluate.h"
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

// The eval/ numbers of one metrics.jsonl line per due step.
std::vector<nlohmann::json> eval_lines(const fs::path& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream metrics(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval/ssim_rgb")) out.push_back(std::move(j));
  }
  return out;
}

// CycleGAN: G_A's translations of the held-out content are measured with
// the configured VGG, plus the cycle errors both ways, as `atelier evaluate`
// measures a cyclegan checkpoint: the last step's numbers are evaluate()'s
// on the final checkpoint. Evaluating leaves the training unchanged.
TEST_F(TrainingEvaluation, CycleGANLogsTranslationAndCycleNumbersAndTrainingIsUnchanged) {
  const auto cyclegan = [&](const std::string& name, int64_t every) {
    auto c = tiny(name, every);
    c.model.family = "cyclegan";
    c.model.resnet = {4, 1};
    c.model.pool_size = 2;
    c.loss.adversarial = models::Adversarial::LSGAN;
    return c;
  };
  const auto config = cyclegan("cg-with", 3);
  const auto result = train(config, "", false);
  const auto lines = eval_lines(result.run_dir);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["step"], 3);
  EXPECT_EQ(lines[1]["step"], 4);
  for (const auto& j : lines) {
    for (const char* key : {"eval/cycle_l1_a", "eval/cycle_l1_b", "eval/cycle_psnr_a", "eval/cycle_psnr_b",
                            "eval/random_vgg_fd", "eval/style_meanstd_relu4_1"})
      EXPECT_TRUE(j.contains(key)) << key << " in " << j.dump();
    EXPECT_FALSE(j.contains("eval/content_loss_adain")) << "CycleGAN has no AdaIN target";
  }

  const auto checkpoint = fs::path(result.run_dir) / "checkpoints" / "step-4";
  models::ResnetGenerator a2b(config.model.resnet), b2a(config.model.resnet);
  torch::load(a2b, (checkpoint / "generator_a.pt").string());
  torch::load(b2a, (checkpoint / "generator_b.pt").string());
  models::Encoder loss_network(config.model.generator.encoder);
  const auto comm = comm::make_communicator(comm::Environment{}, {});
  const auto set = evaluate::load_eval_set({config.eval.content, config.eval.style, config.eval.pairs, 32}, 0, 1);
  const auto direct = evaluate::evaluate(a2b, b2a, loss_network, set, *comm, {config.train.batch_size, "random_vgg"});
  for (const auto& m : direct.metrics) {
    const std::string key = "eval/" + m.key;
    ASSERT_TRUE(lines[1].contains(key)) << key;
    EXPECT_NEAR(lines[1][key].get<double>(), m.value, 1e-9 * (1 + std::abs(m.value))) << key;
  }

  train(cyclegan("cg-without", 0), "", false);
  const auto with = testing_support::cyclegan_parameters(checkpoint, config.model.resnet, config.model.discriminator);
  const auto without = testing_support::cyclegan_parameters(root / "runs" / "cg-without" / "checkpoints" / "step-4",
                                                            config.model.resnet, config.model.discriminator);
  ASSERT_EQ(with.size(), without.size());
  for (const auto& [name, value] : with) EXPECT_TRUE(torch::equal(value, without.at(name))) << name;
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
