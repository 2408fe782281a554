// The CycleGAN training step and its state: two ResNet generators, two
// PatchGANs, their history pools and the two Adam optimisers, as the
// reference implementation (Zhu et al. 2017) trains them. Private to trainer/.
//
// Domain A is the content images, domain B the style images. Names follow
// the reference: G_A: A -> B, G_B: B -> A, D_A judges domain B (real B
// against G_A(A)), D_B judges domain A.
#pragma once

#include <array>
#include <filesystem>
#include <memory>

#include "trainer/gan_model.h"

namespace atelier::trainer {

class CycleGAN : public GanModel {
 public:
  explicit CycleGAN(const Config& config, std::shared_ptr<comm::Communicator> comm = nullptr,
                    torch::Device device = torch::kCPU);

  void sync_replicas() override;
  std::vector<torch::Tensor> state_tensors() override;

  // One generator update (LSGAN or the configured adversarial loss, cycle
  // L1 x lambda, identity L1 x lambda x identity_weight), then one update of
  // both discriminators on pooled fakes, each loss halved. Terms (unweighted):
  // d_a, d_b, adv_a, adv_b, cycle_a, cycle_b, idt_a, idt_b.
  // Over several micro-batches, each network's gradients accumulate
  // before its one update, and the pools answer them in order.
  using GanModel::step;
  StepLosses step(const std::vector<MicroBatch>& micro, double lr_scale) override;

  // A | G_A(A) | G_B(G_A(A)) | B | G_B(B) | G_A(G_B(B))
  std::vector<torch::Tensor> sample_columns(const torch::Tensor& real_a, const torch::Tensor& real_b) override;
  std::string sample_tag() const override { return "samples/a_fakeB_recA_b_fakeA_recB"; }
  std::string sample_legend() const override { return "A | G_A(A) | G_B(G_A(A)) | B | G_B(B) | G_A(G_B(B))"; }

  // generator_a.pt, generator_b.pt, discriminator_a.pt, discriminator_b.pt,
  // optimizer_g.pt, optimizer_d.pt; each rank's pools as pools.pt. A job
  // on another number of ranks deals the saved ranks' pools out
  // (trainer/elastic.h).
  std::vector<checkpoint::StateFile> snapshot() override;
  std::vector<checkpoint::StateFile> snapshot_own() override;
  std::string load(const std::filesystem::path& dir, const RankShare& share) override;
  Translators cyclegan_generators() override { return {&g_a, &g_b}; }

  models::ResnetGenerator g_a{nullptr};
  models::ResnetGenerator g_b{nullptr};
  models::PatchDiscriminator d_a{nullptr};
  models::PatchDiscriminator d_b{nullptr};
  models::ImagePool pool_a;  // generated A images (G_B's), which D_B learns from
  models::ImagePool pool_b;  // generated B images (G_A's), which D_A learns from

 private:
  struct Pass;
  // The generators' update over every micro-batch (terms adv_*, cycle_*,
  // idt_*), leaving each pass's generated images in it.
  StepLosses generators_step(std::vector<Pass>& passes);
  // Both critics' update on the pooled images: mean D_A, D_B and total losses.
  std::array<double, 3> discriminators_step(const std::vector<Pass>& passes);
  // Pools for this rank from the checkpoint's per-rank files; what was dealt, in words.
  std::string load_pools(const std::filesystem::path& dir, const RankShare& share);
  std::vector<torch::nn::Module*> networks();  // G_A, G_B, D_A, D_B
  std::vector<torch::Tensor> generator_parameters() const;
  std::vector<torch::Tensor> discriminator_parameters() const;
  void discriminators_require_grad(bool on);

  Config config_;
  std::shared_ptr<comm::Communicator> comm_;
  std::unique_ptr<torch::optim::Adam> optimizer_g_;  // G_A and G_B together
  std::unique_ptr<torch::optim::Adam> optimizer_d_;  // D_A and D_B together
  std::unique_ptr<comm::GradientReducer> reducer_g_;  // null in a world of one
  std::unique_ptr<comm::GradientReducer> reducer_d_;
};

}  // namespace atelier::trainer
