#include "trainer/cycle_gan.h"

#include "trainer/elastic.h"

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

CycleGAN::CycleGAN(const Config& config, std::shared_ptr<comm::Communicator> comm, torch::Device device)
    : pool_a(config.model.pool_size), pool_b(config.model.pool_size), config_(config), comm_(std::move(comm)) {
  init_loss_scaling(config.train);
  g_a = models::ResnetGenerator(config.model.resnet);
  g_b = models::ResnetGenerator(config.model.resnet);
  d_a = models::PatchDiscriminator(config.model.discriminator);
  d_b = models::PatchDiscriminator(config.model.discriminator);
  // On the device before the optimisers and reducers see the parameters.
  place(device, config.train.channels_last);
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

// One micro-batch of both domains as the step uses it, and the generated
// images the discriminators will judge (fp32, detached).
struct CycleGAN::Pass {
  torch::Tensor real_a, real_b;
  torch::Tensor fake_a, fake_b;      // G_B(B), G_A(A)
  torch::Tensor pooled_a, pooled_b;  // what the pools answered for them
};

StepLosses CycleGAN::step(const std::vector<MicroBatch>& micro, double lr_scale) {
  set_adam_lr(*optimizer_g_, config_.optim.lr_g * lr_scale);
  set_adam_lr(*optimizer_d_, config_.optim.lr_d * lr_scale);
  for (auto* network : networks()) network->train();
  std::vector<Pass> passes;
  for (const auto& batch : micro)
    passes.push_back({laid_out(config_.train, batch.content), laid_out(config_.train, batch.style), {}, {}, {}, {}});
  auto losses = generators_step(passes);
  // Pool B answers every micro-batch before pool A, as it would answer one
  // batch of all their images: the pools draw from one generator, so k
  // micro-batches make the same draws as one batch k times larger.
  // The pools keep fp32 images whatever the precision, so a checkpoint's
  // pools do not depend on it.
  for (auto& pass : passes) pass.pooled_b = pool_b.query(pass.fake_b);
  for (auto& pass : passes) pass.pooled_a = pool_a.query(pass.fake_a);
  const auto critics = discriminators_step(passes);
  losses.d = critics[2];
  losses.terms.insert(losses.terms.begin(), {{"d_a", critics[0]}, {"d_b", critics[1]}});
  return with_loss_scale(losses);
}

StepLosses CycleGAN::generators_step(std::vector<Pass>& passes) {
  const auto& loss = config_.loss;
  const size_t k = passes.size();
  // Generators: fool both critics, come back round the cycle, leave images
  // already in the target domain alone.
  discriminators_require_grad(false);
  optimizer_g_->zero_grad();
  const double lambda = loss.cycle_weight;
  const double lambda_idt = loss.identity_weight * lambda;
  std::vector<double> sums(7, 0.0);  // g, adv_a, adv_b, cycle_a, cycle_b, idt_a, idt_b
  for (size_t j = 0; j < k; ++j) {
    auto& pass = passes[j];
    const auto& real_a = pass.real_a;
    const auto& real_b = pass.real_b;
    torch::Tensor fake_a, fake_b, adv_a, adv_b, cycle_a, cycle_b, loss_g;
    torch::Tensor idt_a = torch::zeros({}), idt_b = torch::zeros({});
    {
      const Autocast autocast(config_.train.precision, device_.type());
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
    // Only the last micro-batch's backward is reduced, with what the
    // others left in .grad (DDP's no_sync).
    if (reducer_g_ && j + 1 == k) reducer_g_->prepare(/*accumulated=*/k > 1);
    scaler_g_.scale(micro_batch_share(loss_g, k)).backward();
    pass.fake_a = fake_a.detach().to(torch::kFloat);
    pass.fake_b = fake_b.detach().to(torch::kFloat);
    const torch::Tensor terms[] = {loss_g, adv_a, adv_b, cycle_a, cycle_b, idt_a, idt_b};
    for (size_t t = 0; t < sums.size(); ++t) sums[t] += terms[t].item<double>();
  }
  if (reducer_g_) reducer_g_->finalize();
  finish_update(scaler_g_, *optimizer_g_, generator_parameters(), config_.optim.grad_clip);
  discriminators_require_grad(true);
  for (auto& sum : sums) sum /= static_cast<double>(k);
  return {0, sums[0], {{"adv_a", sums[1]}, {"adv_b", sums[2]}, {"cycle_a", sums[3]}, {"cycle_b", sums[4]},
                       {"idt_a", sums[5]}, {"idt_b", sums[6]}}};
}

// Discriminators: real images against generated ones from the pools. The
// two losses share no weights, so one backward of their sum gives each
// critic exactly its own gradient. Returns the mean losses of D_A, D_B and
// their sum.
std::array<double, 3> CycleGAN::discriminators_step(const std::vector<Pass>& passes) {
  const size_t k = passes.size();
  optimizer_d_->zero_grad();
  std::array<double, 3> sums = {0, 0, 0};
  for (size_t j = 0; j < k; ++j) {
    const auto& pass = passes[j];
    torch::Tensor loss_d_a, loss_d_b, loss_d;
    {
      const Autocast autocast(config_.train.precision, device_.type());
      loss_d_a = judge(d_a, config_.loss.adversarial, pass.real_b, pass.pooled_b);
      loss_d_b = judge(d_b, config_.loss.adversarial, pass.real_a, pass.pooled_a);
      loss_d = loss_d_a + loss_d_b;
    }
    if (reducer_d_ && j + 1 == k) reducer_d_->prepare(/*accumulated=*/k > 1);
    scaler_d_.scale(micro_batch_share(loss_d, k)).backward();
    sums[0] += loss_d_a.item<double>();
    sums[1] += loss_d_b.item<double>();
    sums[2] += loss_d.item<double>();
  }
  if (reducer_d_) reducer_d_->finalize();
  finish_update(scaler_d_, *optimizer_d_, discriminator_parameters(), config_.optim.grad_clip);
  for (auto& sum : sums) sum /= static_cast<double>(k);
  return sums;
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
  std::vector<checkpoint::StateFile> files = {
      copied("generator_a.pt", *g_a),          copied("generator_b.pt", *g_b),
      copied("discriminator_a.pt", *d_a),      copied("discriminator_b.pt", *d_b),
      copied("optimizer_g.pt", *optimizer_g_), copied("optimizer_d.pt", *optimizer_d_)};
  add_loss_scale_state(files);
  return files;
}

// Each rank keeps its own pools (as each process of the reference does).
std::vector<checkpoint::StateFile> CycleGAN::snapshot_own() {
  std::vector<torch::Tensor> pools = {pool_a.state().to(torch::kCPU), pool_b.state().to(torch::kCPU)};
  return {serialised("pools.pt", pools)};
}

std::string CycleGAN::load(const fs::path& dir, const RankShare& share) {
  torch::load(g_a, (dir / "generator_a.pt").string(), device_);
  torch::load(g_b, (dir / "generator_b.pt").string(), device_);
  torch::load(d_a, (dir / "discriminator_a.pt").string(), device_);
  torch::load(d_b, (dir / "discriminator_b.pt").string(), device_);
  torch::load(*optimizer_g_, (dir / "optimizer_g.pt").string(), device_);
  torch::load(*optimizer_d_, (dir / "optimizer_d.pt").string(), device_);
  load_loss_scale_state(dir);
  return load_pools(dir, share);
}

namespace {

// Rank `rank`'s pools.pt of checkpoint `dir`: [pool A, pool B].
std::vector<torch::Tensor> saved_pools(const fs::path& dir, int rank) {
  const auto file = dir / ("rank-" + std::to_string(rank)) / "pools.pt";
  if (!fs::exists(file))
    throw TrainError("checkpoint " + dir.string() + " has no history pools for rank " + std::to_string(rank) + " (" +
                     file.string() + ")");
  std::vector<torch::Tensor> pools;
  torch::load(pools, file.string());
  if (pools.size() != 2) throw TrainError("history pools in " + file.string() + " are not two tensors");
  return pools;
}

int64_t images_in(const torch::Tensor& pool) { return pool.numel() == 0 ? 0 : pool.size(0); }

}  // namespace

std::string CycleGAN::load_pools(const fs::path& dir, const RankShare& share) {
  if (share.same_world()) {
    const auto pools = saved_pools(dir, share.rank);
    pool_a.load_state(pools[0].to(device_));
    pool_b.load_state(pools[1].to(device_));
    return "";
  }
  // Every new rank reads every saved rank's pools and keeps its deal.
  std::vector<torch::Tensor> saved_a, saved_b;
  std::vector<int64_t> sizes_a, sizes_b;
  for (int q = 0; q < share.saved_world_size; ++q) {
    auto pools = saved_pools(dir, q);
    sizes_a.push_back(images_in(pools[0]));
    sizes_b.push_back(images_in(pools[1]));
    saved_a.push_back(std::move(pools[0]));
    saved_b.push_back(std::move(pools[1]));
  }
  const int64_t capacity = config_.model.pool_size;
  pool_a.load_state(deal_pool(saved_a, share.rank, share.world_size, capacity).to(device_));
  pool_b.load_state(deal_pool(saved_b, share.rank, share.world_size, capacity).to(device_));
  int64_t total_a = 0, total_b = 0;
  for (size_t q = 0; q < sizes_a.size(); ++q) total_a += sizes_a[q], total_b += sizes_b[q];
  const auto dropped_a = pool_images_dropped(sizes_a, share.world_size, capacity);
  const auto dropped_b = pool_images_dropped(sizes_b, share.world_size, capacity);
  std::string note = "history pools: the " + std::to_string(total_a) + " + " + std::to_string(total_b) +
                     " images (pool A + pool B) of " + std::to_string(share.saved_world_size) +
                     " saved rank(s) dealt out to " + std::to_string(share.world_size) + " rank(s), round robin";
  if (dropped_a + dropped_b > 0)
    note += "; " + std::to_string(dropped_a) + " + " + std::to_string(dropped_b) +
            " did not fit pools of model.pool_size " + std::to_string(capacity) + " and were dropped";
  else
    note += "; none dropped";
  return note;
}

}  // namespace atelier::trainer
