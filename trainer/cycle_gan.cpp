#include "trainer/cycle_gan.h"

namespace atelier::trainer {
namespace fs = std::filesystem;
namespace {

std::vector<torch::Tensor> joined(const torch::nn::Module& a, const torch::nn::Module& b) {
  auto out = a.parameters();
  const auto more = b.parameters();
  out.insert(out.end(), more.begin(), more.end());
  return out;
}

// The reference halves each discriminator's loss "so D learns slower than G";
// discriminator_loss already returns 0.5 * (real term + fake term).
torch::Tensor judge(models::PatchDiscriminator& d, models::Adversarial kind, const torch::Tensor& real,
                    const torch::Tensor& fake) {
  return models::discriminator_loss(kind, d->forward(real), d->forward(fake.detach()));
}

}  // namespace

CycleGAN::CycleGAN(const Config& config, std::shared_ptr<comm::Communicator> comm)
    : pool_a(config.model.pool_size), pool_b(config.model.pool_size), config_(config), comm_(std::move(comm)) {
  g_a = models::ResnetGenerator(config.model.resnet);
  g_b = models::ResnetGenerator(config.model.resnet);
  d_a = models::PatchDiscriminator(config.model.discriminator);
  d_b = models::PatchDiscriminator(config.model.discriminator);
  optimizer_g_ = std::make_unique<torch::optim::Adam>(generator_parameters(),
                                                      adam_options(config.optim.lr_g, config.optim));
  optimizer_d_ = std::make_unique<torch::optim::Adam>(discriminator_parameters(),
                                                      adam_options(config.optim.lr_d, config.optim));
  if (comm_ && comm_->world_size() > 1) {
    const comm::ReducerOptions reduce{config.dist.bucket_mb, config.dist.compression};
    reducer_g_ = std::make_unique<comm::GradientReducer>(comm_, generator_parameters(), reduce);
    reducer_d_ = std::make_unique<comm::GradientReducer>(comm_, discriminator_parameters(), reduce);
  }
}

std::vector<torch::Tensor> CycleGAN::generator_parameters() const { return joined(*g_a, *g_b); }
std::vector<torch::Tensor> CycleGAN::discriminator_parameters() const { return joined(*d_a, *d_b); }

std::vector<torch::nn::Module*> CycleGAN::networks() { return {g_a.get(), g_b.get(), d_a.get(), d_b.get()}; }

std::vector<torch::Tensor> CycleGAN::state_tensors() { return parameters_and_buffers(networks()); }

void CycleGAN::sync_replicas() {
  if (comm_ && comm_->world_size() > 1) comm::broadcast_from_rank0(*comm_, state_tensors());
}

// The generator step needs no gradients of D's weights (as the reference's
// set_requires_grad(D, False)): backward then stops at D's inputs.
void CycleGAN::discriminators_require_grad(bool on) {
  for (auto& p : discriminator_parameters()) p.set_requires_grad(on);
}

StepLosses CycleGAN::step(const torch::Tensor& real_a_in, const torch::Tensor& real_b_in, double lr_scale) {
  const auto& loss = config_.loss;
  const auto real_a = laid_out(config_.train, real_a_in), real_b = laid_out(config_.train, real_b_in);
  set_adam_lr(*optimizer_g_, config_.optim.lr_g * lr_scale);
  set_adam_lr(*optimizer_d_, config_.optim.lr_d * lr_scale);
  for (auto* network : networks()) network->train();

  // Generators: fool both critics, come back round the cycle, leave images
  // already in the target domain alone.
  discriminators_require_grad(false);
  optimizer_g_->zero_grad();
  const double lambda = loss.cycle_weight;
  const double lambda_idt = loss.identity_weight * lambda;
  torch::Tensor fake_a, fake_b, adv_a, adv_b, cycle_a, cycle_b, loss_g;
  torch::Tensor idt_a = torch::zeros({}), idt_b = torch::zeros({});
  {
    const Autocast autocast(config_.train.precision);
    fake_b = g_a->forward(real_a);
    const auto rec_a = g_b->forward(fake_b);
    fake_a = g_b->forward(real_b);
    const auto rec_b = g_a->forward(fake_a);
    if (lambda_idt > 0) {  // the reference skips the identity passes when the weight is 0
      idt_a = models::l1_loss(g_a->forward(real_b), real_b);
      idt_b = models::l1_loss(g_b->forward(real_a), real_a);
    }
    adv_a = models::generator_adversarial_loss(loss.adversarial, d_a->forward(fake_b));
    adv_b = models::generator_adversarial_loss(loss.adversarial, d_b->forward(fake_a));
    cycle_a = models::l1_loss(rec_a, real_a);
    cycle_b = models::l1_loss(rec_b, real_b);
    loss_g = loss.adversarial_weight * (adv_a + adv_b) + lambda * (cycle_a + cycle_b) +
             lambda_idt * (idt_a + idt_b);
  }
  if (reducer_g_) reducer_g_->prepare();
  loss_g.backward();
  if (reducer_g_) reducer_g_->finalize();
  clip_gradients(generator_parameters(), config_.optim.grad_clip);
  optimizer_g_->step();
  discriminators_require_grad(true);

  // Discriminators: real images against generated ones from the pools. The
  // two losses share no weights, so one backward of their sum gives each
  // critic exactly its own gradient.
  // The pools keep fp32 images whatever the precision, so a checkpoint's
  // pools do not depend on it.
  optimizer_d_->zero_grad();
  torch::Tensor loss_d_a, loss_d_b, loss_d;
  {
    const Autocast autocast(config_.train.precision);
    loss_d_a = judge(d_a, loss.adversarial, real_b, pool_b.query(fake_b.to(torch::kFloat)));
    loss_d_b = judge(d_b, loss.adversarial, real_a, pool_a.query(fake_a.to(torch::kFloat)));
    loss_d = loss_d_a + loss_d_b;
  }
  if (reducer_d_) reducer_d_->prepare();
  loss_d.backward();
  if (reducer_d_) reducer_d_->finalize();
  clip_gradients(discriminator_parameters(), config_.optim.grad_clip);
  optimizer_d_->step();

  return {loss_d.item<double>(),
          loss_g.item<double>(),
          {{"d_a", loss_d_a.item<double>()},
           {"d_b", loss_d_b.item<double>()},
           {"adv_a", adv_a.item<double>()},
           {"adv_b", adv_b.item<double>()},
           {"cycle_a", cycle_a.item<double>()},
           {"cycle_b", cycle_b.item<double>()},
           {"idt_a", idt_a.item<double>()},
           {"idt_b", idt_b.item<double>()}}};
}

std::vector<torch::Tensor> CycleGAN::sample_columns(const torch::Tensor& real_a, const torch::Tensor& real_b) {
  torch::NoGradGuard no_grad;
  g_a->eval();
  g_b->eval();
  const auto fake_b = g_a->forward(real_a);
  const auto fake_a = g_b->forward(real_b);
  std::vector<torch::Tensor> columns = {real_a, fake_b, g_b->forward(fake_b), real_b, fake_a, g_a->forward(fake_a)};
  g_a->train();
  g_b->train();
  return columns;
}

std::vector<checkpoint::StateFile> CycleGAN::snapshot() {
  return {copied("generator_a.pt", *g_a),          copied("generator_b.pt", *g_b),
          copied("discriminator_a.pt", *d_a),      copied("discriminator_b.pt", *d_b),
          copied("optimizer_g.pt", *optimizer_g_), copied("optimizer_d.pt", *optimizer_d_)};
}

// Each rank keeps its own pools (as each process of the reference does).
std::vector<checkpoint::StateFile> CycleGAN::snapshot_own() {
  std::vector<torch::Tensor> pools = {pool_a.state(), pool_b.state()};
  return {serialised("pools.pt", pools)};
}

void CycleGAN::load(const fs::path& dir, const fs::path& rank_dir) {
  torch::load(g_a, (dir / "generator_a.pt").string());
  torch::load(g_b, (dir / "generator_b.pt").string());
  torch::load(d_a, (dir / "discriminator_a.pt").string());
  torch::load(d_b, (dir / "discriminator_b.pt").string());
  torch::load(*optimizer_g_, (dir / "optimizer_g.pt").string());
  torch::load(*optimizer_d_, (dir / "optimizer_d.pt").string());
  const auto pools_file = rank_dir / "pools.pt";
  if (!fs::exists(pools_file))
    throw TrainError("checkpoint " + dir.string() + " has no history pools for this rank (" + pools_file.string() + ")");
  std::vector<torch::Tensor> pools;
  torch::load(pools, pools_file.string());
  if (pools.size() != 2) throw TrainError("history pools in " + pools_file.string() + " are not two tensors");
  pool_a.load_state(pools[0]);
  pool_b.load_state(pools[1]);
}

}  // namespace atelier::trainer
