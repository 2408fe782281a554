// The GPU path on a real GPU (CTest label `gpu`; scripts/gpu-check.sh runs
// them). Where LibTorch has no CUDA or sees no GPU every case skips, saying
// why, so the CPU build compiles and lists them and CI proves they build.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>

#include "comm/comm.h"
#include "tests/gpu/gpu_support.h"
#include "tests/launcher/run_atelier.h"
#include "tests/support/pattern_images.h"
#include "tests/support/tiny_config.h"
#include "tests/support/tiny_run.h"
#include "trainer/gan_model.h"
#include "trainer/trainer.h"

namespace atelier {
namespace {
namespace fs = std::filesystem;

trainer::Config tiny(const std::string& family) {
  trainer::Config c = testing_support::tiny_config(family);
  c.model.pool_size = 3;
  return c;
}

struct Stepped {
  std::vector<trainer::StepLosses> losses;
  std::vector<torch::Tensor> state;  // on the host
};

// Two steps of a model built from seed 3 on fixed host-drawn images.
Stepped two_steps(const trainer::Config& config, const torch::Device& device) {
  torch::manual_seed(3);
  auto model = trainer::make_model(config, nullptr, device);
  torch::manual_seed(4);
  const auto a = (torch::rand({2, 3, 32, 32}) * 2 - 1).to(device);
  const auto b = (torch::rand({2, 3, 32, 32}) * 2 - 1).to(device);
  Stepped out;
  out.losses.push_back(model->step(a, b, 1.0));
  out.losses.push_back(model->step(b, a, 1.0));
  for (const auto& t : model->state_tensors()) out.state.push_back(t.detach().to(torch::kCPU).clone());
  return out;
}

class GpuFamilies : public ::testing::TestWithParam<std::string> {};

// Same initial weights (drawn on the host) and images: the GPU's losses are
// the CPU's to float tolerance (TF32 off, so cuDNN computes in fp32).
TEST_P(GpuFamilies, AStepOnCuda0MatchesTheCpuStep) {
  REQUIRE_GPU();
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  const auto cpu = two_steps(tiny(GetParam()), torch::kCPU);
  const auto gpu = two_steps(tiny(GetParam()), torch::Device("cuda:0"));
  for (size_t s = 0; s < cpu.losses.size(); ++s) {
    EXPECT_NEAR(gpu.losses[s].g, cpu.losses[s].g, 1e-3 * std::abs(cpu.losses[s].g) + 1e-5) << "step " << s;
    EXPECT_NEAR(gpu.losses[s].d, cpu.losses[s].d, 1e-3 * std::abs(cpu.losses[s].d) + 1e-5) << "step " << s;
  }
  ASSERT_EQ(gpu.state.size(), cpu.state.size());
}

// bf16 autocast on the GPU: the step runs and everything stays finite.
TEST_P(GpuFamilies, Bf16StepsOnCuda0AreFinite) {
  REQUIRE_GPU();
  auto config = tiny(GetParam());
  config.train.precision = trainer::Precision::BF16;
  const auto gpu = two_steps(config, torch::Device("cuda:0"));
  for (const auto& l : gpu.losses) {
    EXPECT_TRUE(std::isfinite(l.g) && std::isfinite(l.d));
  }
  for (const auto& t : gpu.state) EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
}

// fp16 autocast on the GPU with dynamic loss scaling (train.loss_scale
// auto): the steps run, the losses and the fp32 state stay finite, and the
// scale is reported (halved for any step that overflowed, never below 1).
TEST_P(GpuFamilies, Fp16StepsOnCuda0WithLossScalingAreFinite) {
  REQUIRE_GPU();
  auto config = tiny(GetParam());
  config.train.precision = trainer::Precision::FP16;
  const auto gpu = two_steps(config, torch::Device("cuda:0"));
  for (const auto& l : gpu.losses) {
    EXPECT_TRUE(std::isfinite(l.g) && std::isfinite(l.d));
    EXPECT_GE(l.loss_scale_g, 1.0);
    EXPECT_LE(l.loss_scale_g, 65536.0);
  }
  for (const auto& t : gpu.state) EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(Both, GpuFamilies, ::testing::Values("adain", "cyclegan"));

// A GPU run's loader: pinned batches, copied to cuda:0 without blocking,
// arrive with the pageable batches' pixels.
TEST(GpuData, PinnedBatchesCopyWithoutBlockingToTheSamePixels) {
  REQUIRE_GPU();
  const auto root = std::filesystem::temp_directory_path() / ("atelier-gpu-pinned-" + std::to_string(std::random_device{}()));
  testing_support::write_pattern_images(root / "content", 4, 1);
  testing_support::write_pattern_images(root / "style", 3, 2);
  data::LoaderOptions options;
  options.content = data::list_images({(root / "content").string()});
  options.style = data::list_images({(root / "style").string()});
  options.augment = {40, 32, true};
  options.batch_size = 2;
  data::PrefetchLoader pageable(options);
  options.pin_memory = true;
  data::PrefetchLoader pinned(options);
  for (int i = 0; i < 3; ++i) {
    const auto host = pageable.next();
    const auto batch = pinned.next();
    ASSERT_TRUE(batch.content.is_pinned());
    const auto on_gpu = batch.content.to(torch::Device("cuda:0"), /*non_blocking=*/true);
    EXPECT_TRUE(torch::equal(on_gpu.cpu(), host.content)) << "batch " << i;
  }
  std::filesystem::remove_all(root);
}

// NCCL at world size 1 through the TCP rendezvous (torchrun-style
// variables), as on a one-GPU machine: all-reduce and broadcast keep the
// values; the reducer's buckets average the gradients in place on the GPU.
TEST(GpuNccl, CollectivesAndReducerBucketsAtWorldSizeOne) {
  REQUIRE_GPU();
  REQUIRE_NCCL();
  auto communicator = testing_support::nccl_at_world_size_one(60);
  const torch::Device cuda("cuda:0");
  EXPECT_EQ(communicator->backend(), "nccl");

  auto values = torch::arange(1000, torch::dtype(torch::kFloat).device(cuda));
  const auto expected = values.clone();
  communicator->all_reduce(values, comm::ReduceOp::Avg);
  EXPECT_TRUE(torch::equal(values, expected));
  communicator->all_reduce(values, comm::ReduceOp::Sum);
  EXPECT_TRUE(torch::equal(values, expected));
  communicator->broadcast(values, 0);
  EXPECT_TRUE(torch::equal(values, expected));

  testing_support::ReducedNet reduced_net(communicator, cuda);
  auto& net = reduced_net.net;
  auto& parameters = reduced_net.parameters;
  auto& reducer = *reduced_net.reducer;
  EXPECT_GT(reducer.bucket_count(), 1);
  const auto x = torch::randn({16, 64}, cuda);
  reducer.prepare();
  net->forward(x).square().mean().backward();
  reducer.finalize();
  std::vector<torch::Tensor> reduced;
  for (const auto& p : parameters) reduced.push_back(p.grad().clone());
  for (auto& p : parameters) p.mutable_grad() = torch::Tensor();
  net->forward(x).square().mean().backward();  // the same backward without the reducer
  for (size_t i = 0; i < parameters.size(); ++i) {
    EXPECT_TRUE(reduced[i].is_cuda());
    EXPECT_TRUE(torch::allclose(reduced[i], parameters[i].grad())) << "parameter " << i;
  }
}

// A run trained on the GPU resumes on the CPU (checkpoints are device-free).
class GpuRun : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-gpu-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 4, 1);
    testing_support::write_pattern_images(root / "style", 4, 2);
  }
  void TearDown() override { fs::remove_all(root); }
  fs::path root;
};

TEST_F(GpuRun, AGpuCheckpointResumesOnTheCpu) {
  REQUIRE_GPU();
  const std::string args = testing_support::tiny_train_args(root, "r", 2, 2, 2);
  const auto gpu = launcher::run_atelier("train" + args + " --set train.device=cuda");
  ASSERT_EQ(gpu.status, 0) << gpu.output;
  const auto cpu = launcher::run_atelier("train --resume" + testing_support::tiny_train_args(root, "r", 3, 2, 3) +
                                         " --set train.device=cpu");
  ASSERT_EQ(cpu.status, 0) << cpu.output;
  EXPECT_TRUE(fs::exists(root / "runs" / "r" / "checkpoints" / "step-2" / "rank-0" / "cuda_rng.pt"));
  EXPECT_TRUE(fs::exists(root / "runs" / "r" / "checkpoints" / "step-3")) << cpu.output;
  EXPECT_FALSE(fs::exists(root / "runs" / "r" / "checkpoints" / "step-3" / "rank-0" / "cuda_rng.pt"));
}

// train.deterministic on the GPU: 2 steps, a resume, 2 more give the
// parameters of 4 uninterrupted steps, bit for bit.
TEST_F(GpuRun, ADeterministicGpuRunResumesBitIdentically) {
  REQUIRE_GPU();
  const std::string gpu = " --set train.device=cuda --set train.deterministic=true";
  auto whole = launcher::run_atelier("train" + testing_support::tiny_train_args(root, "whole", 4, 2, 2) + gpu);
  ASSERT_EQ(whole.status, 0) << whole.output;
  auto half = launcher::run_atelier("train" + testing_support::tiny_train_args(root, "split", 2, 2, 2) + gpu);
  ASSERT_EQ(half.status, 0) << half.output;
  auto rest = launcher::run_atelier("train --resume" + testing_support::tiny_train_args(root, "split", 4, 2, 2) + gpu);
  ASSERT_EQ(rest.status, 0) << rest.output;
  const auto a = testing_support::checkpoint_parameters(root / "runs" / "whole" / "checkpoints" / "step-4");
  const auto b = testing_support::checkpoint_parameters(root / "runs" / "split" / "checkpoints" / "step-4");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, value] : a) EXPECT_TRUE(torch::equal(value, b.at(name))) << name;
}

}  // namespace
}  // namespace atelier
