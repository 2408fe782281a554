// Dynamic loss scaling (train.loss_scale, fp16's companion): the scaler's
// arithmetic with injected infs and NaNs, a step scaled by a power of two
// equal bit for bit to an unscaled one, an overflowing step skipped on every
// network with the state untouched, the scale in checkpoints, and fp16
// refused on a CPU.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "tests/support/pattern_images.h"
#include "tests/support/short_run.h"
#include "tests/support/tiny_config.h"
#include "trainer/gan_model.h"
#include "trainer/loss_scaler.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace {
namespace fs = std::filesystem;

torch::Tensor with_grad(std::vector<float> grad) {
  auto p = torch::zeros({static_cast<int64_t>(grad.size())}, torch::requires_grad());
  p.mutable_grad() = torch::tensor(grad);
  return p;
}

TEST(LossScaler, DisabledChangesNothing) {
  const LossScaler off;
  const auto loss = torch::tensor(3.0f);
  EXPECT_TRUE(torch::equal(off.scale(loss), loss));
  auto p = with_grad({std::numeric_limits<float>::infinity()});
  EXPECT_TRUE(off.unscale({p}));  // off: no check, as an unscaled fp32 step has none
  EXPECT_TRUE(std::isinf(p.grad()[0].item<float>()));
}

TEST(LossScaler, ScalesUnscalesAndFindsInfAndNaNInAnyGradient) {
  LossScaleOptions options;
  options.init = 1024;
  const LossScaler scaler(options);
  EXPECT_EQ(scaler.scale(torch::tensor(0.5f)).item<float>(), 512.0f);
  auto a = with_grad({1024, -2048}), b = with_grad({512});
  EXPECT_TRUE(scaler.unscale({a, b}));
  EXPECT_TRUE(torch::equal(a.grad(), torch::tensor({1.0f, -2.0f})));
  EXPECT_EQ(b.grad()[0].item<float>(), 0.5f);
  for (const float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN()}) {
    auto good = with_grad({1, 2}), poisoned = with_grad({3, bad});
    EXPECT_FALSE(scaler.unscale({good, poisoned})) << bad;
  }
  auto no_grad = torch::zeros({2}, torch::requires_grad());  // a parameter no loss reached
  EXPECT_TRUE(scaler.unscale({no_grad}));
}

TEST(LossScaler, BacksOffOnOverflowAndGrowsAfterTheIntervalWithoutOne) {
  LossScaleOptions options;
  options.init = 65536;
  options.growth_interval = 3;
  LossScaler scaler(options);
  scaler.update(true);
  EXPECT_EQ(scaler.value(), 32768);
  EXPECT_EQ(scaler.skipped(), 1);
  scaler.update(false);
  scaler.update(false);
  EXPECT_EQ(scaler.value(), 32768);
  EXPECT_EQ(scaler.growth_tracker(), 2);
  scaler.update(true);  // an overflow restarts the count
  EXPECT_EQ(scaler.value(), 16384);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  for (int i = 0; i < 3; ++i) scaler.update(false);
  EXPECT_EQ(scaler.value(), 32768);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  EXPECT_EQ(scaler.skipped(), 2);
  options.init = 3e38;  // growth never takes the scale past float's range
  options.growth_interval = 1;
  LossScaler top(options);
  top.update(false);
  EXPECT_EQ(top.value(), 3e38);
}

TEST(LossScaler, StateRoundTripsAndNonsenseIsRefused) {
  LossScaleOptions options;
  options.growth_interval = 5;
  LossScaler a(options);
  a.update(true);
  a.update(false);
  LossScaler b(options);
  b.read(a.write());
  EXPECT_EQ(b.value(), a.value());
  EXPECT_EQ(b.growth_tracker(), 1);
  EXPECT_EQ(b.skipped(), 1);
  EXPECT_THROW(b.read("{\"scale\": -1, \"growth_tracker\": 0, \"skipped\": 0}"), std::runtime_error);
  EXPECT_THROW(b.read("{\"scale\": 2}"), std::runtime_error);
  EXPECT_THROW(b.read("not json"), std::runtime_error);
  EXPECT_THROW(LossScaler(LossScaleOptions{0.0, 2.0, 0.5, 10}), std::invalid_argument);
}

Config scaled(const std::string& family, double init) {
  Config c = testing_support::tiny_config(family);
  c.model.pool_size = 0;
  c.train.loss_scale = LossScale::Dynamic;
  c.train.loss_scale_init = init;
  c.train.loss_scale_growth_interval = 2;
  return c;
}

std::vector<torch::Tensor> state_of(GanModel& model) {
  std::vector<torch::Tensor> out;
  for (const auto& t : model.state_tensors()) out.push_back(t.detach().clone());
  return out;
}

bool same(const std::vector<torch::Tensor>& x, const std::vector<torch::Tensor>& y) {
  for (size_t i = 0; i < x.size(); ++i)
    if (!torch::equal(x[i], y[i])) return false;
  return x.size() == y.size();
}

class ScaledFamilies : public ::testing::TestWithParam<std::string> {};

// Multiplying by a power of two and dividing back is exact: a scaled step is
// the unscaled step, bit for bit (what fp16 gains is range, not arithmetic).
TEST_P(ScaledFamilies, AStepScaledByAPowerOfTwoIsTheUnscaledStep) {
  const auto run = [&](const Config& config) {
    torch::manual_seed(3);
    auto model = make_model(config, nullptr);
    torch::manual_seed(4);
    const auto a = torch::rand({2, 3, 32, 32}) * 2 - 1, b = torch::rand({2, 3, 32, 32}) * 2 - 1;
    const auto first = model->step(a, b, 1.0);
    const auto second = model->step(b, a, 1.0);
    EXPECT_EQ(first.overflow_skips, 0);
    return std::make_pair(second, state_of(*model));
  };
  Config plain = testing_support::tiny_config(GetParam());
  plain.model.pool_size = 0;
  const auto [plain_losses, plain_state] = run(plain);
  const auto [scaled_losses, scaled_state] = run(scaled(GetParam(), 1024));
  EXPECT_EQ(plain_losses.g, scaled_losses.g);
  EXPECT_EQ(plain_losses.d, scaled_losses.d);
  EXPECT_TRUE(same(plain_state, scaled_state));
  EXPECT_EQ(plain_losses.loss_scale_g, 0);  // off: not reported
  EXPECT_EQ(scaled_losses.loss_scale_g, 2048);  // two clean steps at interval 2: grown once
}

// A batch with a NaN pixel poisons every gradient: with loss scaling every
// network skips its step (weights and Adam state untouched, the scale
// halved), and the next clean step trains as usual.
TEST_P(ScaledFamilies, AnOverflowingStepIsSkippedByEveryNetworkAndTheScaleBacksOff) {
  torch::manual_seed(3);
  auto model = make_model(scaled(GetParam(), 4096), nullptr);
  torch::manual_seed(4);
  const auto a = torch::rand({2, 3, 32, 32}) * 2 - 1, b = torch::rand({2, 3, 32, 32}) * 2 - 1;
  const auto before = state_of(*model);
  auto poisoned = a.clone();
  poisoned[0][0][5][5] = std::numeric_limits<float>::quiet_NaN();
  const auto skipped = model->step(poisoned, b, 1.0);
  EXPECT_TRUE(same(before, state_of(*model)));
  EXPECT_EQ(skipped.overflow_skips, 2);  // G and D
  EXPECT_EQ(skipped.loss_scale_g, 2048);
  EXPECT_EQ(skipped.loss_scale_d, 2048);
  const auto clean = model->step(a, b, 1.0);
  EXPECT_FALSE(same(before, state_of(*model)));
  EXPECT_EQ(clean.overflow_skips, 2);
  for (const auto& t : model->state_tensors()) EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
}

// The scale and its growth count travel in the checkpoint (loss_scale.json)
// and come back on load; without loss scaling no such file is written.
TEST_P(ScaledFamilies, TheScaleIsCheckpointedAndRestored) {
  const auto dir = fs::temp_directory_path() / ("atelier-loss-scale-" + std::to_string(std::random_device{}()));
  fs::create_directories(dir);
  torch::manual_seed(3);
  auto model = make_model(scaled(GetParam(), 4096), nullptr);
  auto poisoned = torch::rand({2, 3, 32, 32});
  poisoned[1][2][3][4] = std::numeric_limits<float>::infinity();
  model->step(poisoned, torch::rand({2, 3, 32, 32}), 1.0);
  const auto written = model->step(torch::rand({2, 3, 32, 32}), torch::rand({2, 3, 32, 32}), 1.0);
  bool has_file = false;
  for (const auto& file : model->snapshot()) {
    std::ofstream(dir / file.name, std::ios::binary) << (file.produce ? file.produce() : file.bytes);
    has_file = has_file || file.name == "loss_scale.json";
  }
  fs::create_directories(dir / "rank-0");
  for (const auto& file : model->snapshot_own())  // CycleGAN's pools
    std::ofstream(dir / "rank-0" / file.name, std::ios::binary) << (file.produce ? file.produce() : file.bytes);
  EXPECT_TRUE(has_file);
  torch::manual_seed(5);
  auto restored = make_model(scaled(GetParam(), 4096), nullptr);
  restored->load(dir, {});
  const auto next = restored->step(torch::rand({2, 3, 32, 32}), torch::rand({2, 3, 32, 32}), 1.0);
  // 2048 after the overflow, one clean step counted before the save, one
  // after: grown to 4096 at interval 2.
  EXPECT_EQ(written.loss_scale_g, 2048);
  EXPECT_EQ(next.loss_scale_g, 4096);
  EXPECT_EQ(next.overflow_skips, 2);
  Config plain = testing_support::tiny_config(GetParam());
  for (const auto& file : make_model(plain, nullptr)->snapshot()) EXPECT_NE(file.name, "loss_scale.json");
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(LossScale, ScaledFamilies, ::testing::Values("adain", "cyclegan"));

TEST(Fp16, AutocastToFloat16IsRefusedOnACpu) {
  try {
    const Autocast autocast(Precision::FP16, torch::kCPU);
    FAIL() << "fp16 autocast on a CPU was accepted";
  } catch (const TrainError& e) {
    EXPECT_NE(std::string(e.what()).find("fp16 needs a CUDA device"), std::string::npos) << e.what();
  }
  TrainOptions fp16;
  fp16.precision = Precision::FP16;
  EXPECT_TRUE(loss_scaling_on(fp16));
  fp16.loss_scale = LossScale::None;
  EXPECT_FALSE(loss_scaling_on(fp16));
  EXPECT_FALSE(loss_scaling_on(TrainOptions{}));
}

// A run: fp16 on a CPU is refused before anything is written; with
// train.loss_scale dynamic the metrics carry the scales and the checkpoint
// the scaler's state.
TEST(LossScaleRun, Fp16OnACpuIsRefusedAndADynamicRunRecordsItsScales) {
  const auto root = fs::temp_directory_path() / ("atelier-scale-run-" + std::to_string(std::random_device{}()));
  testing_support::write_pattern_images(root / "content", 3, 1);
  testing_support::write_pattern_images(root / "style", 3, 2);
  Config fp16 = testing_support::short_run(testing_support::tiny_config("adain"), root, "fp16", 2);
  fp16.train.device = "cpu";
  fp16.train.precision = Precision::FP16;
  try {
    train(fp16, "", false);
    ADD_FAILURE() << "fp16 on a CPU was accepted";
  } catch (const TrainError& e) {
    EXPECT_NE(std::string(e.what()).find("train.precision fp16 needs a CUDA device, and this run trains on cpu"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(root / "runs" / "fp16" / "log.txt"));

  Config dynamic = testing_support::short_run(testing_support::tiny_config("adain"), root, "dynamic", 3);
  dynamic.train.loss_scale = LossScale::Dynamic;
  dynamic.train.loss_scale_init = 256;
  dynamic.train.loss_scale_growth_interval = 2;
  const auto result = train(dynamic, "", false);
  std::ifstream metrics(root / "runs" / "dynamic" / "metrics.jsonl");
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  EXPECT_NE(last.find("\"loss_scale_g\":512"), std::string::npos) << last;
  EXPECT_NE(last.find("\"overflow_skips\":0"), std::string::npos) << last;
  EXPECT_TRUE(fs::exists(fs::path(result.checkpoint) / "loss_scale.json"));
  fs::remove_all(root);
}

}  // namespace
}  // namespace atelier::trainer
