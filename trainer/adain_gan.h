// The AdaIN-GAN training step and its state: generator, discriminator and
// their Adam optimisers. Private to trainer/.
#pragma once

#include <filesystem>
#include <memory>

#include "checkpoint/checkpoint.h"
#include "trainer/trainer.h"

namespace atelier::trainer {

struct StepLosses {
  double d = 0;        // discriminator loss
  double g = 0;        // total generator loss
  double adv = 0;      // generator adversarial term (unweighted)
  double content = 0;  // content term (unweighted)
  double style = 0;    // style term (unweighted)
  double tv = 0;       // total-variation term (unweighted)
};

class AdaINGAN {
 public:
  // Builds the networks and optimisers; weights come from the global torch
  // RNG, which the caller seeds. With a communicator of more than one rank,
  // call sync_replicas() before the first step; each step then averages G's
  // and D's gradients across ranks (one GradientReducer per network).
  explicit AdaINGAN(const Config& config, std::shared_ptr<comm::Communicator> comm = nullptr);

  // Rank 0's parameters and buffers on every rank, so replicas start equal.
  void sync_replicas();
  // Every parameter and buffer of G and D (what replicas must agree on).
  std::vector<torch::Tensor> state_tensors();

  // One discriminator update, then one generator update, at learning rates
  // scaled by `lr_scale`.
  StepLosses step(const torch::Tensor& content, const torch::Tensor& style, double lr_scale);

  // Stylised images for samples, without gradients.
  torch::Tensor stylize(const torch::Tensor& content, const torch::Tensor& style);

  // Networks and optimiser moments serialised in memory, as the files
  // generator.pt, discriminator.pt, optimizer_g.pt, optimizer_d.pt; load()
  // reads them back from a checkpoint directory.
  std::vector<checkpoint::StateFile> snapshot();
  void load(const std::filesystem::path& dir);

  models::AdaINGenerator generator{nullptr};
  models::PatchDiscriminator discriminator{nullptr};

 private:
  void set_lr(double scale);

  Config config_;
  std::shared_ptr<comm::Communicator> comm_;
  std::unique_ptr<comm::GradientReducer> reducer_g_;  // null in a world of one
  std::unique_ptr<comm::GradientReducer> reducer_d_;
  std::unique_ptr<torch::optim::Adam> optimizer_g_;
  std::unique_ptr<torch::optim::Adam> optimizer_d_;
};

}  // namespace atelier::trainer
