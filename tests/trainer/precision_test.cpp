// train.precision (bf16 autocast) and train.channels_last: the step computes
// what it says, state stays fp32, and a resumed run is still bit-identical.
#include <gtest/gtest.h>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <filesystem>
#include <random>

#include "tests/support/pattern_images.h"
#include "tests/support/short_run.h"
#include "tests/support/tiny_config.h"
#include "tests/support/tiny_run.h"
#include "trainer/gan_model.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace {
namespace fs = std::filesystem;

Config tiny(const std::string& family) {
  Config c = testing_support::tiny_config(family);
  c.model.pool_size = 3;
  c.optim.eps = 1e-4;  // parameters whose gradient is ~0 then move alike in both layouts
  return c;
}

struct Stepped {
  std::vector<StepLosses> losses;
  std::vector<torch::Tensor> state;
};

// Two steps of a model built from seed 3 on fixed images.
Stepped two_steps(const Config& config) {
  torch::manual_seed(3);
  auto model = make_model(config, nullptr);
  torch::manual_seed(4);
  const auto a = torch::rand({2, 3, 32, 32}) * 2 - 1, b = torch::rand({2, 3, 32, 32}) * 2 - 1;
  Stepped out;
  out.losses.push_back(model->step(a, b, 1.0));
  out.losses.push_back(model->step(b, a, 1.0));
  for (const auto& t : model->state_tensors()) out.state.push_back(t.detach().clone());
  return out;
}

double max_difference(const std::vector<torch::Tensor>& x, const std::vector<torch::Tensor>& y) {
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, (x[i] - y[i]).abs().max().item<double>());
  return worst;
}

// train.tf32 and train.deterministic set LibTorch's process-wide flags, and
// back; under deterministic algorithms every op of both families' step runs
// (LibTorch throws for an op without a deterministic kernel) and computes
// what it computed before, on the CPU bit for bit.
TEST(Numerics, Tf32AndDeterministicSetLibTorchsFlagsAndEveryStepOpHasADeterministicKernel) {
  TrainOptions on;
  on.tf32 = true;
  on.deterministic = true;
  EXPECT_EQ(apply_numerics(on), "tf32 on, deterministic on, loss scaling off");
  EXPECT_TRUE(at::globalContext().allowTF32CuDNN());
  EXPECT_TRUE(at::globalContext().deterministicAlgorithms());
  EXPECT_TRUE(at::globalContext().deterministicCuDNN());
  ASSERT_NE(std::getenv("CUBLAS_WORKSPACE_CONFIG"), nullptr);
  for (const std::string family : {"adain", "cyclegan"}) {
    const auto deterministic = two_steps(tiny(family));
    apply_numerics(TrainOptions{});
    const auto free = two_steps(tiny(family));
    apply_numerics(on);
    EXPECT_EQ(max_difference(deterministic.state, free.state), 0.0) << family;
  }
  EXPECT_EQ(apply_numerics(TrainOptions{}), "tf32 off, deterministic off, loss scaling off");
  TrainOptions fp16;
  fp16.precision = Precision::FP16;
  EXPECT_EQ(apply_numerics(fp16), "tf32 off, deterministic off, loss scaling dynamic from 65536");
  EXPECT_FALSE(at::globalContext().allowTF32CuDNN());
  EXPECT_FALSE(at::globalContext().deterministicAlgorithms());
  EXPECT_FALSE(at::globalContext().deterministicCuDNN());
}

class Families : public ::testing::TestWithParam<std::string> {};

// Under bf16 the losses move (the convolutions ran in bf16) but stay within
// bf16's precision of fp32's; weights and everything the optimiser keeps stay
// fp32 and finite.
TEST_P(Families, Bf16AutocastComputesInBf16AndKeepsTheStateFp32) {
  auto bf16 = tiny(GetParam());
  bf16.train.precision = Precision::BF16;
  const auto reference = two_steps(tiny(GetParam()));
  const auto low = two_steps(bf16);
  for (size_t s = 0; s < 2; ++s) {
    EXPECT_NE(low.losses[s].g, reference.losses[s].g) << "step " << s << ": no bf16 arithmetic happened";
    EXPECT_NEAR(low.losses[s].g, reference.losses[s].g, 0.05 * std::abs(reference.losses[s].g)) << s;
    EXPECT_NEAR(low.losses[s].d, reference.losses[s].d, 0.05 * std::abs(reference.losses[s].d)) << s;
  }
  ASSERT_EQ(low.state.size(), reference.state.size());
  for (const auto& t : low.state) {
    EXPECT_EQ(t.scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
  }
  EXPECT_GT(max_difference(low.state, reference.state), 0.0);
}

// The same step in NHWC memory order: the weights are stored channels-last
// and the results are fp32's up to the order of float sums.
TEST_P(Families, ChannelsLastComputesTheSameStep) {
  auto nhwc = tiny(GetParam());
  nhwc.train.channels_last = true;
  torch::manual_seed(3);
  const auto model = make_model(nhwc, nullptr);
  int four_d = 0;
  for (const auto& t : model->state_tensors()) {
    if (t.dim() != 4) continue;
    ++four_d;
    EXPECT_TRUE(t.is_contiguous(at::MemoryFormat::ChannelsLast)) << t.sizes();
  }
  EXPECT_GT(four_d, 4);
  const auto reference = two_steps(tiny(GetParam()));
  const auto laid = two_steps(nhwc);
  for (size_t s = 0; s < 2; ++s) {
    EXPECT_NEAR(laid.losses[s].g, reference.losses[s].g, 1e-4 * std::abs(reference.losses[s].g)) << s;
    EXPECT_NEAR(laid.losses[s].d, reference.losses[s].d, 1e-4 * std::abs(reference.losses[s].d)) << s;
  }
  EXPECT_LT(max_difference(laid.state, reference.state), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Precision, Families, ::testing::Values("adain", "cyclegan"));

TEST(Bf16Support, NativeOnlyWithAvx512Bf16OrAmx) {
  EXPECT_TRUE(has_native_bf16(" fpu avx2 avx512f avx512_bf16 avx512vl"));
  EXPECT_TRUE(has_native_bf16(" avx512f amx_tile amx_bf16 amx_int8"));
  EXPECT_FALSE(has_native_bf16(" fpu avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni"));
  EXPECT_FALSE(has_native_bf16(" avx512_bf16x"));  // whole flags only
  EXPECT_FALSE(has_native_bf16(""));
#if defined(__x86_64__)
  EXPECT_NE(cpu_flags().find("sse2"), std::string::npos) << "this x86-64 machine's flags line is read";
#endif
}

TEST(Autocast, NestsAndRestoresWhatWasThere) {
  ASSERT_FALSE(at::autocast::is_cpu_enabled());
  {
    const Autocast outer(Precision::BF16);
    {
      const Autocast inner(Precision::BF16);
      const Autocast none(Precision::FP32);
      EXPECT_TRUE(at::autocast::is_cpu_enabled());
    }
    EXPECT_TRUE(at::autocast::is_cpu_enabled());
    const auto w = torch::randn({2, 3, 3, 3});
    EXPECT_EQ(torch::conv2d(torch::randn({1, 3, 5, 5}), w).scalar_type(), torch::kBFloat16);
  }
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
  EXPECT_EQ(torch::conv2d(torch::randn({1, 3, 5, 5}), torch::randn({2, 3, 3, 3})).scalar_type(), torch::kFloat);
}

// A run stopped and resumed under bf16 with channels-last weights ends where
// the uninterrupted one does (checkpoints hold the NHWC tensors as they are).
TEST(PrecisionRun, Bf16ChannelsLastResumeIsBitIdentical) {
  const fs::path root = fs::temp_directory_path() / ("atelier-precision-" + std::to_string(std::random_device{}()));
  testing_support::write_pattern_images(root / "content", 4, 1);
  testing_support::write_pattern_images(root / "style", 3, 2);
  const auto config = [&](const std::string& name, int64_t steps) {
    Config c = testing_support::short_run(tiny("cyclegan"), root, name, steps);
    c.train.precision = Precision::BF16;
    c.train.channels_last = true;
    c.checkpoint.every_steps = 3;
    return c;
  };
  const auto full = train(config("full", 6), "a", false);
  train(config("split", 3), "b", false);
  const auto resumed = train(config("split", 6), "b", true);
  EXPECT_EQ(resumed.first_step, 3);
  const auto c = config("full", 6);
  const auto expected = testing_support::cyclegan_parameters(full.checkpoint, c.model.resnet, c.model.discriminator);
  const auto actual = testing_support::cyclegan_parameters(resumed.checkpoint, c.model.resnet, c.model.discriminator);
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, value] : expected) EXPECT_TRUE(torch::equal(value, actual.at(name))) << name;
  EXPECT_TRUE(fs::exists(fs::path(full.run_dir) / "samples" / "step-000004.png"));
  fs::remove_all(root);
}

}  // namespace
}  // namespace atelier::trainer
