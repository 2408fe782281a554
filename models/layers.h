// Building blocks shared by the networks of models/. Private to models/.
#pragma once

#include "models/models.h"

#include <ATen/CPUGeneratorImpl.h>

namespace atelier::models {

// Appends the normalisation layer `norm` over `channels` (nothing for None).
// Instance norm is non-affine and keeps no running statistics, as in
// pix2pix/CycleGAN: every image is normalised by its own statistics in
// training and evaluation.
void add_norm(torch::nn::Sequential& layers, Norm norm, int64_t channels);

// The loss networks' input statistics: ImageNet's mean and std as buffers
// "imagenet_mean" / "imagenet_std" ([1, 3, 1, 1]; buffers, not parameters:
// they move with .to(device) and land in checkpoints, but no optimiser may
// touch them), and RGB in [0, 1] normalised with them.
void register_imagenet_statistics(torch::nn::Module& module);
torch::Tensor imagenet_normalised(torch::nn::Module& module, const torch::Tensor& x01);

// Every Conv2d under `module`, in registration order (network order for
// the loss networks, which register their layers in order).
std::vector<torch::nn::Conv2d> convolutions(torch::nn::Module& module);

// LibTorch's Conv2d constructor draws its default init from the global CPU
// RNG. The loss networks overwrite those weights anyway, but the draws would
// still shift every later random number of a seeded run, so building one
// restores the generator's state afterwards.
class GlobalRngStateGuard {
 public:
  GlobalRngStateGuard()
      : generator_(at::detail::getDefaultCPUGenerator()), state_(generator_.get_state()) {}
  ~GlobalRngStateGuard() {
    try {
      generator_.set_state(state_);
    } catch (...) {
      // Destructors never throw; a failed restore only costs reproducibility.
    }
  }
  GlobalRngStateGuard(const GlobalRngStateGuard&) = delete;
  GlobalRngStateGuard& operator=(const GlobalRngStateGuard&) = delete;

 private:
  at::Generator generator_;
  torch::Tensor state_;
};

}  // namespace atelier::models
