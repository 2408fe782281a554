#include "trainer/adain_gan.h"

namespace atelier::trainer {
namespace fs = std::filesystem;

AdaINGAN::AdaINGAN(const Config& config, std::shared_ptr<comm::Communicator> comm)
    : config_(config), comm_(std::move(comm)) {
  generator = models::AdaINGenerator(config.model.generator);
  discriminator = models::PatchDiscriminator(config.model.discriminator);
  optimizer_g_ = std::make_unique<torch::optim::Adam>(generator->trainable_parameters(),
                                                      adam_options(config.optim.lr_g, config.optim));
  optimizer_d_ = std::make_unique<torch::optim::Adam>(discriminator->parameters(),
                                                      adam_options(config.optim.lr_d, config.optim));
  if (comm_ && comm_->world_size() > 1) {
    const comm::ReducerOptions reduce{config.dist.bucket_mb, config.dist.compression};
    reducer_d_ = std::make_unique<comm::GradientReducer>(comm_, discriminator->parameters(), reduce);
    reducer_g_ = std::make_unique<comm::GradientReducer>(comm_, generator->trainable_parameters(), reduce);
  }
}

std::vector<torch::Tensor> AdaINGAN::state_tensors() {
  return parameters_and_buffers({generator.get(), discriminator.get()});
}

void AdaINGAN::sync_replicas() {
  if (comm_ && comm_->world_size() > 1) comm::broadcast_from_rank0(*comm_, state_tensors());
}

StepLosses AdaINGAN::step(const torch::Tensor& content_in, const torch::Tensor& style_in, double lr_scale) {
  const auto& loss = config_.loss;
  const auto precision = config_.train.precision;
  const auto content = laid_out(config_.train, content_in), style = laid_out(config_.train, style_in);
  set_adam_lr(*optimizer_g_, config_.optim.lr_g * lr_scale);
  set_adam_lr(*optimizer_d_, config_.optim.lr_d * lr_scale);
  generator->train();
  discriminator->train();

  // The encoder is frozen: its features of the inputs are constants, computed
  // once and shared by AdaIN, the content target and the style loss.
  std::vector<torch::Tensor> style_features;
  torch::Tensor target, fake, loss_d;
  {
    const Autocast autocast(precision);
    {
      torch::NoGradGuard no_grad;
      style_features = generator->encoder->forward_features(style);
      target = models::adain(generator->encoder->forward(content), style_features.back());
    }
    fake = generator->decoder->forward(target);
    // Discriminator: real style images against detached stylised ones.
    loss_d = models::discriminator_loss(loss.adversarial, discriminator->forward(style),
                                        discriminator->forward(fake.detach()));
  }
  optimizer_d_->zero_grad();
  if (reducer_d_) reducer_d_->prepare();
  loss_d.backward();
  // The average over ranks replaces this rank's gradient before clipping,
  // so every replica clips and steps identically.
  if (reducer_d_) reducer_d_->finalize();
  clip_gradients(discriminator->parameters(), config_.optim.grad_clip);
  optimizer_d_->step();

  // Generator: fool D, keep the content, match the style statistics.
  optimizer_g_->zero_grad();
  torch::Tensor adv, content_term, style_term, tv, loss_g;
  {
    const Autocast autocast(precision);
    adv = models::generator_adversarial_loss(loss.adversarial, discriminator->forward(fake));
    const auto output_features = generator->encoder->forward_features(fake);
    content_term = models::content_loss(output_features.back(), target);
    style_term = models::style_loss(output_features, style_features, loss.style_statistics);
    tv = models::total_variation_loss(fake);
    loss_g = loss.adversarial_weight * adv + loss.content_weight * content_term +
             loss.style_weight * style_term + loss.tv_weight * tv;
  }
  // Only G's reducer is armed: the gradients this backward leaves on D's
  // parameters are cleared by the next D step and never reduced.
  if (reducer_g_) reducer_g_->prepare();
  loss_g.backward();
  if (reducer_g_) reducer_g_->finalize();
  clip_gradients(generator->trainable_parameters(), config_.optim.grad_clip);
  optimizer_g_->step();

  return {loss_d.item<double>(),
          loss_g.item<double>(),
          {{"adv", adv.item<double>()},
           {"content", content_term.item<double>()},
           {"style", style_term.item<double>()},
           {"tv", tv.item<double>()}}};
}

torch::Tensor AdaINGAN::stylize(const torch::Tensor& content, const torch::Tensor& style) {
  torch::NoGradGuard no_grad;
  generator->eval();
  auto out = generator->forward(content, style);
  generator->train();
  return out;
}

std::vector<torch::Tensor> AdaINGAN::sample_columns(const torch::Tensor& content, const torch::Tensor& style) {
  return {content, style, stylize(content, style)};
}

std::vector<checkpoint::StateFile> AdaINGAN::snapshot() {
  return {copied("generator.pt", *generator), copied("discriminator.pt", *discriminator),
          copied("optimizer_g.pt", *optimizer_g_), copied("optimizer_d.pt", *optimizer_d_)};
}

void AdaINGAN::load(const fs::path& dir, const fs::path& /*rank_dir*/) {
  torch::load(generator, (dir / "generator.pt").string());
  torch::load(discriminator, (dir / "discriminator.pt").string());
  torch::load(*optimizer_g_, (dir / "optimizer_g.pt").string());
  torch::load(*optimizer_d_, (dir / "optimizer_d.pt").string());
}

}  // namespace atelier::trainer
