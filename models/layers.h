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
