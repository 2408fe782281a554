// What every model family shares: the learning-rate schedule, Adam's
// options, gradient clipping, the replicated state, and the family factory.
#include "trainer/gan_model.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

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

torch::Tensor micro_batch_share(const torch::Tensor& loss, size_t micro_batches) {
  return micro_batches == 1 ? loss : loss / static_cast<double>(micro_batches);
}

void set_adam_lr(torch::optim::Adam& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
}

void clip_gradients(const std::vector<torch::Tensor>& parameters, double max_norm) {
  if (max_norm > 0) torch::nn::utils::clip_grad_norm_(parameters, max_norm);
}

bool loss_scaling_on(const TrainOptions& train) {
  return train.loss_scale == LossScale::Dynamic ||
         (train.loss_scale == LossScale::Auto && train.precision == Precision::FP16);
}

void GanModel::init_loss_scaling(const TrainOptions& train) {
  if (!loss_scaling_on(train)) return;
  LossScaleOptions options;
  options.init = train.loss_scale_init;
  options.growth_interval = train.loss_scale_growth_interval;
  scaler_g_ = LossScaler(options);
  scaler_d_ = LossScaler(options);
}

bool GanModel::finish_update(LossScaler& scaler, torch::optim::Optimizer& optimizer,
                             const std::vector<torch::Tensor>& parameters, double grad_clip) {
  const bool finite = scaler.unscale(parameters);
  if (finite) {
    clip_gradients(parameters, grad_clip);
    optimizer.step();
  }
  scaler.update(!finite);
  return finite;
}

namespace {
constexpr const char* kLossScaleFile = "loss_scale.json";
}

void GanModel::add_loss_scale_state(std::vector<checkpoint::StateFile>& files) const {
  if (!scaler_g_.enabled()) return;
  files.push_back({kLossScaleFile, "{\"g\": " + scaler_g_.write() + ", \"d\": " + scaler_d_.write() + "}\n", {}});
}

// A checkpoint without the file (written with loss scaling off) leaves the
// scalers at train.loss_scale_init.
void GanModel::load_loss_scale_state(const std::filesystem::path& dir) {
  const auto path = dir / kLossScaleFile;
  if (!scaler_g_.enabled() || !std::filesystem::exists(path)) return;
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  try {
    const auto j = nlohmann::json::parse(text.str());
    scaler_g_.read(j.at("g").dump());
    scaler_d_.read(j.at("d").dump());
  } catch (const nlohmann::json::exception& e) {
    throw TrainError("checkpoint file '" + path.string() + "' is not a loss scaler's state: " + e.what());
  } catch (const std::runtime_error& e) {
    throw TrainError("checkpoint file '" + path.string() + "': " + e.what());
  }
}

StepLosses GanModel::with_loss_scale(StepLosses losses) const {
  if (!scaler_g_.enabled()) return losses;
  losses.loss_scale_g = scaler_g_.value();
  losses.loss_scale_d = scaler_d_.value();
  losses.overflow_skips = scaler_g_.skipped() + scaler_d_.skipped();
  return losses;
}

std::vector<torch::Tensor> parameters_and_buffers(const std::vector<torch::nn::Module*>& networks) {
  std::vector<torch::Tensor> out;
  for (const auto* network : networks) {
    for (const auto& p : network->parameters()) out.push_back(p);
    for (const auto& b : network->buffers()) out.push_back(b);
  }
  return out;
}

Autocast::Autocast(Precision precision, torch::DeviceType device)
    : on_(precision != Precision::FP32), cuda_(device == torch::kCUDA) {
  if (!on_) return;
  if (!cuda_ && precision == Precision::FP16)
    throw TrainError("train.precision fp16 needs a CUDA device: CPU autocast has no float16 (use bf16 on CPUs)");
  if (cuda_) {
    was_enabled_ = at::autocast::is_enabled();
    was_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(precision == Precision::FP16 ? at::kHalf : at::kBFloat16);
  } else {
    was_enabled_ = at::autocast::is_cpu_enabled();
    was_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  }
  at::autocast::increment_nesting();
}

Autocast::~Autocast() {
  if (!on_) return;
  // The cache holds bf16 copies of the weights; the optimiser step that
  // follows changes the weights, so the copies must not outlive the block.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(was_enabled_);
    at::autocast::set_autocast_gpu_dtype(was_dtype_);
  } else {
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(was_dtype_);
  }
}

bool has_native_bf16(const std::string& cpu_flags) {
  std::istringstream words(cpu_flags);
  for (std::string flag; words >> flag;)
    if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
  return false;
}

std::string cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.compare(0, 5, "flags") == 0) return line.substr(line.find(':') + 1);
  return "";
}

torch::Tensor laid_out(const TrainOptions& train, const torch::Tensor& images) {
  return train.channels_last ? images.contiguous(at::MemoryFormat::ChannelsLast) : images;
}

void GanModel::place(torch::Device device, bool channels_last) {
  torch::NoGradGuard no_grad;  // the same tensors (the optimisers hold them), moved or laid out anew
  for (auto& t : state_tensors()) {
    auto moved = t.to(device);
    if (channels_last && moved.dim() == 4) moved = moved.contiguous(at::MemoryFormat::ChannelsLast);
    if (!moved.is_same(t)) t.set_data(moved);
  }
  device_ = device;
}

std::unique_ptr<GanModel> make_model(const Config& config, std::shared_ptr<comm::Communicator> comm,
                                     torch::Device device) {
  std::unique_ptr<GanModel> model;
  if (config.model.family == "adain") model = std::make_unique<AdaINGAN>(config, std::move(comm), device);
  if (config.model.family == "cyclegan") model = std::make_unique<CycleGAN>(config, std::move(comm), device);
  if (!model)
    throw TrainError("model.family '" + config.model.family + "' is not built (allowed: adain, cyclegan)");
  return model;
}

}  // namespace atelier::trainer
