#include "trainer/loss_scaler.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace atelier::trainer {

LossScaler::LossScaler(LossScaleOptions options) : enabled_(true), options_(options), scale_(options.init) {
  if (!(options.init > 0) || !std::isfinite(options.init) || !(options.growth_factor > 1) ||
      !(options.backoff_factor > 0 && options.backoff_factor < 1) || options.growth_interval < 1)
    throw std::invalid_argument("loss scaling needs a finite scale > 0, growth > 1, 0 < backoff < 1 and an interval >= 1");
}

torch::Tensor LossScaler::scale(const torch::Tensor& loss) const { return enabled_ ? loss * scale_ : loss; }

bool LossScaler::unscale(const std::vector<torch::Tensor>& parameters) const {
  if (!enabled_) return true;
  torch::NoGradGuard no_grad;
  torch::Tensor overflow;
  for (const auto& p : parameters) {
    auto grad = p.grad();
    if (!grad.defined()) continue;
    grad.mul_(1.0 / scale_);
    // One flag on the gradients' device, read once: no sync per tensor.
    const auto bad = torch::isfinite(grad).logical_not().any();
    overflow = overflow.defined() ? overflow.logical_or(bad) : bad;
  }
  return !overflow.defined() || !overflow.item<bool>();
}

void LossScaler::update(bool overflowed) {
  if (!enabled_) return;
  if (overflowed) {
    scale_ *= options_.backoff_factor;
    tracker_ = 0;
    ++skipped_;
    return;
  }
  if (++tracker_ >= options_.growth_interval) {
    // The loss is a float: a scale past float's range would make every loss inf.
    const double grown = scale_ * options_.growth_factor;
    if (grown <= std::numeric_limits<float>::max()) scale_ = grown;
    tracker_ = 0;
  }
}

std::string LossScaler::write() const {
  return nlohmann::json{{"scale", scale_}, {"growth_tracker", tracker_}, {"skipped", skipped_}}.dump();
}

void LossScaler::read(const std::string& text) {
  try {
    const auto j = nlohmann::json::parse(text);
    const double scale = j.at("scale").get<double>();
    const auto tracker = j.at("growth_tracker").get<int64_t>();
    const auto skipped = j.at("skipped").get<int64_t>();
    if (!(scale > 0) || !std::isfinite(scale) || tracker < 0 || skipped < 0)
      throw std::runtime_error("scale " + std::to_string(scale) + ", growth_tracker " + std::to_string(tracker) +
                               ", skipped " + std::to_string(skipped) + " are not a loss scaler's state");
    scale_ = scale;
    tracker_ = tracker;
    skipped_ = skipped;
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("not a loss scaler's state: ") + e.what());
  }
}

}  // namespace atelier::trainer
