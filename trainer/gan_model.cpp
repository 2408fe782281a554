// What every model family shares: the learning-rate schedule, Adam's
// options, gradient clipping, the replicated state, and the family factory.
#include "trainer/gan_model.h"

#include <algorithm>

#include "trainer/adain_gan.h"
#include "trainer/cycle_gan.h"

namespace atelier::trainer {

double lr_factor(const OptimConfig& optim, int64_t step, int64_t total) {
  if (optim.schedule == Schedule::Constant || step < optim.decay_start) return 1.0;
  // Linear decay from 1 at decay_start to 0 after the last step, as in
  // CycleGAN's "linear" policy.
  const double span = static_cast<double>(total - optim.decay_start);
  return std::max(0.0, 1.0 - static_cast<double>(step - optim.decay_start) / span);
}

torch::optim::AdamOptions adam_options(double lr, const OptimConfig& optim) {
  return torch::optim::AdamOptions(lr).betas(std::make_tuple(optim.beta1, optim.beta2)).eps(optim.eps);
}

void set_adam_lr(torch::optim::Adam& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
}

void clip_gradients(const std::vector<torch::Tensor>& parameters, double max_norm) {
  if (max_norm > 0) torch::nn::utils::clip_grad_norm_(parameters, max_norm);
}

std::vector<torch::Tensor> parameters_and_buffers(const std::vector<torch::nn::Module*>& networks) {
  std::vector<torch::Tensor> out;
  for (const auto* network : networks) {
    for (const auto& p : network->parameters()) out.push_back(p);
    for (const auto& b : network->buffers()) out.push_back(b);
  }
  return out;
}

std::unique_ptr<GanModel> make_model(const Config& config, std::shared_ptr<comm::Communicator> comm) {
  if (config.model.family == "adain") return std::make_unique<AdaINGAN>(config, std::move(comm));
  if (config.model.family == "cyclegan") return std::make_unique<CycleGAN>(config, std::move(comm));
  throw TrainError("model.family '" + config.model.family + "' is not built (allowed: adain, cyclegan)");
}

}  // namespace atelier::trainer
