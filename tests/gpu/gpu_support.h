// What the GPU tests share: the skip where there is no GPU, and NCCL at
// world size 1 as a one-GPU machine has it.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "comm/comm.h"

#define REQUIRE_GPU()                                                                                    \
  do {                                                                                                   \
    if (!torch::cuda::is_available())                                                                    \
      GTEST_SKIP() << (atelier::comm::device_facts().cuda_built ? "no GPU visible to this CUDA LibTorch" \
                                                                : "this LibTorch build has no CUDA (CPU-only)"); \
  } while (0)

#define REQUIRE_NCCL()                                                                                   \
  do {                                                                                                   \
    const auto built = atelier::comm::compiled_backends();                                              \
    if (std::find(built.begin(), built.end(), "nccl") == built.end())                                    \
      GTEST_SKIP() << "this build has no NCCL backend";                                                  \
  } while (0)

namespace atelier::testing_support {

// NCCL on cuda:0 at world size 1 through the TCP rendezvous (torchrun-style
// variables, a random port), with collectives that time out after `timeout_s`.
inline std::shared_ptr<comm::Communicator> nccl_at_world_size_one(double timeout_s) {
  comm::Environment env;
  env.launcher = comm::Launcher::Torchrun;
  env.master_addr = "127.0.0.1";
  env.master_port = 29000 + static_cast<int>(std::random_device{}() % 2000);
  comm::CommOptions options;
  options.backend = "nccl";
  options.device = torch::Device("cuda:0");
  options.timeout_s = timeout_s;
  return comm::make_communicator(env, options);
}

// A small two-layer net on `device` (seed 5) whose gradients a reducer over
// `communicator` averages in several buckets.
struct ReducedNet {
  ReducedNet(std::shared_ptr<comm::Communicator> communicator, const torch::Device& device) {
    torch::manual_seed(5);
    net = torch::nn::Sequential(torch::nn::Linear(64, 64), torch::nn::ReLU(), torch::nn::Linear(64, 8));
    net->to(device);
    parameters = net->parameters();
    comm::ReducerOptions options;
    options.bucket_mb = 4096.0 / (1 << 20);  // several buckets
    reducer = std::make_unique<comm::GradientReducer>(std::move(communicator), parameters, options);
  }
  torch::nn::Sequential net{nullptr};
  std::vector<torch::Tensor> parameters;
  std::unique_ptr<comm::GradientReducer> reducer;
};

}  // namespace atelier::testing_support
