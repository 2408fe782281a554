// The AdaIN-GAN training step and its state: generator, discriminator and
// their Adam optimisers. Private to trainer/.
#pragma once

#include <filesystem>
#include <memory>

#include "trainer/gan_model.h"

namespace atelier::trainer {

class AdaINGAN : public GanModel {
 public:
  // Builds the networks and optimisers; weights come from the global torch
  // RNG, which the caller seeds. With a communicator of more than one rank,
  // call sync_replicas() before the first step; each step then averages G's
  // and D's gradients across ranks (one GradientReducer per network).
  explicit AdaINGAN(const Config& config, std::shared_ptr<comm::Communicator> comm = nullptr,
                    torch::Device device = torch::kCPU);

  void sync_replicas() override;
  std::vector<torch::Tensor> state_tensors() override;

  // One discriminator update, then one generator update, each over every
  // micro-batch. Terms: adv, content, style, tv.
  using GanModel::step;
  StepLosses step(const std::vector<MicroBatch>& micro, double lr_scale) override;

  // Stylised images for samples, without gradients.
  torch::Tensor stylize(const torch::Tensor& content, const torch::Tensor& style);
  // content | style | stylised
  std::vector<torch::Tensor> sample_columns(const torch::Tensor& content, const torch::Tensor& style) override;
  std::string sample_tag() const override { return "samples/content_style_stylised"; }
  std::string sample_legend() const override { return "content | style | stylised"; }

  // generator.pt, discriminator.pt, optimizer_g.pt, optimizer_d.pt.
  std::vector<checkpoint::StateFile> snapshot() override;
  std::string load(const std::filesystem::path& dir, const RankShare& share) override;

  models::AdaINGenerator* adain_generator() override { return &generator; }

  models::AdaINGenerator generator{nullptr};
  models::PatchDiscriminator discriminator{nullptr};

 private:
  struct Pass;
  // D's update over every micro-batch (returns its mean loss), keeping each
  // micro-batch's generator pass in `passes` for G's update.
  double discriminator_step(const std::vector<MicroBatch>& micro, std::vector<Pass>& passes);
  StepLosses generator_step(std::vector<Pass>& passes);

  Config config_;
  std::shared_ptr<comm::Communicator> comm_;
  std::unique_ptr<comm::GradientReducer> reducer_g_;  // null in a world of one
  std::unique_ptr<comm::GradientReducer> reducer_d_;
  std::unique_ptr<torch::optim::Adam> optimizer_g_;
  std::unique_ptr<torch::optim::Adam> optimizer_d_;
};

}  // namespace atelier::trainer
