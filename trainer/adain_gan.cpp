#include "trainer/adain_gan.h"

namespace atelier::trainer {
namespace fs = std::filesystem;

AdaINGAN::AdaINGAN(const Config& config, std::shared_ptr<comm::Communicator> comm, torch::Device device)
    : config_(config), comm_(std::move(comm)) {
  init_loss_scaling(config.train);
  generator = models::AdaINGenerator(config.model.generator);
  discriminator = models::PatchDiscriminator(config.model.discriminator);
  // On the device before the optimisers and reducers see the parameters.
  place(device, config.train.channels_last);
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

// One micro-batch's inputs and generator output, kept from the
// discriminator's pass to the generator's.
struct AdaINGAN::Pass {
  std::vector<torch::Tensor> style_features;  // the frozen encoder's, of the style images
  torch::Tensor target;                       // AdaIN of the content features
  torch::Tensor fake;                         // the decoder's output, with its graph
};

StepLosses AdaINGAN::step(const std::vector<MicroBatch>& micro, double lr_scale) {
  set_adam_lr(*optimizer_g_, config_.optim.lr_g * lr_scale);
  set_adam_lr(*optimizer_d_, config_.optim.lr_d * lr_scale);
  generator->train();
  discriminator->train();
  // Each micro-batch's decoder graph lives until its generator backward:
  // D steps on the whole global batch before G's losses see the new D.
  std::vector<Pass> passes;
  const double loss_d = discriminator_step(micro, passes);
  auto losses = generator_step(passes);
  losses.d = loss_d;
  return with_loss_scale(losses);
}

double AdaINGAN::discriminator_step(const std::vector<MicroBatch>& micro, std::vector<Pass>& passes) {
  const auto precision = config_.train.precision;
  const size_t k = micro.size();
  optimizer_d_->zero_grad();
  double sum = 0;
  for (size_t j = 0; j < k; ++j) {
    const auto content = laid_out(config_.train, micro[j].content), style = laid_out(config_.train, micro[j].style);
    Pass pass;
    torch::Tensor loss_d;
    {
      const Autocast autocast(precision, device_.type());
      // The encoder is frozen: its features of the inputs are constants,
      // computed once and shared by AdaIN, the content target and the style loss.
      {
        torch::NoGradGuard no_grad;
        auto encoded_style = generator->encoder->encode(style);
        pass.style_features = std::move(encoded_style.style);
        pass.target = models::adain(generator->encoder->forward(content), encoded_style.content);
      }
      pass.fake = generator->decoder->decode(pass.target, content);
      // Discriminator: real style images against detached stylised ones.
      loss_d = models::discriminator_loss(config_.loss.adversarial, discriminator->forward(style),
                                          discriminator->forward(pass.fake.detach()));
    }
    // Only the last micro-batch's backward is reduced, with what the
    // others left in .grad (DDP's no_sync).
    if (reducer_d_ && j + 1 == k) reducer_d_->prepare(/*accumulated=*/k > 1);
    scaler_d_.scale(micro_batch_share(loss_d, k)).backward();
    sum += loss_d.item<double>();
    passes.push_back(std::move(pass));
  }
  // The average over ranks replaces this rank's gradient before clipping,
  // so every replica clips and steps identically.
  if (reducer_d_) reducer_d_->finalize();
  finish_update(scaler_d_, *optimizer_d_, discriminator->parameters(), config_.optim.grad_clip);
  return sum / static_cast<double>(k);
}

StepLosses AdaINGAN::generator_step(std::vector<Pass>& passes) {
  const auto& loss = config_.loss;
  const size_t k = passes.size();
  // Generator: fool D, keep the content, match the style statistics.
  optimizer_g_->zero_grad();
  double adv_sum = 0, content_sum = 0, style_sum = 0, tv_sum = 0, g_sum = 0;
  for (size_t j = 0; j < k; ++j) {
    auto& pass = passes[j];
    torch::Tensor adv, content_term, style_term, tv, loss_g;
    {
      const Autocast autocast(config_.train.precision, device_.type());
      adv = models::generator_adversarial_loss(loss.adversarial, discriminator->forward(pass.fake));
      const auto output = generator->encoder->encode(pass.fake);
      content_term = models::content_loss(output.content, pass.target);
      style_term = models::style_loss(output.style, pass.style_features, loss.style_statistics);
      tv = models::total_variation_loss(pass.fake);
      loss_g = loss.adversarial_weight * adv + loss.content_weight * content_term +
               loss.style_weight * style_term + loss.tv_weight * tv;
    }
    // Only G's reducer is armed: the gradients this backward leaves on D's
    // parameters are cleared by the next D step and never reduced.
    if (reducer_g_ && j + 1 == k) reducer_g_->prepare(/*accumulated=*/k > 1);
    scaler_g_.scale(micro_batch_share(loss_g, k)).backward();
    pass = {};  // this micro-batch's graph is spent
    adv_sum += adv.item<double>();
    content_sum += content_term.item<double>();
    style_sum += style_term.item<double>();
    tv_sum += tv.item<double>();
    g_sum += loss_g.item<double>();
  }
  if (reducer_g_) reducer_g_->finalize();
  finish_update(scaler_g_, *optimizer_g_, generator->trainable_parameters(), config_.optim.grad_clip);
  const double n = static_cast<double>(k);
  return {0, g_sum / n, {{"adv", adv_sum / n}, {"content", content_sum / n}, {"style", style_sum / n}, {"tv", tv_sum / n}}};
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
  std::vector<checkpoint::StateFile> files = {copied("generator.pt", *generator),
                                              copied("discriminator.pt", *discriminator),
                                              copied("optimizer_g.pt", *optimizer_g_),
                                              copied("optimizer_d.pt", *optimizer_d_)};
  add_loss_scale_state(files);
  return files;
}

std::string AdaINGAN::load(const fs::path& dir, const RankShare& /*share: nothing per rank*/) {
  torch::load(generator, (dir / "generator.pt").string(), device_);
  torch::load(discriminator, (dir / "discriminator.pt").string(), device_);
  torch::load(*optimizer_g_, (dir / "optimizer_g.pt").string(), device_);
  torch::load(*optimizer_d_, (dir / "optimizer_d.pt").string(), device_);
  load_loss_scale_state(dir);
  return "";
}

}  // namespace atelier::trainer
