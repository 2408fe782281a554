// The losses that train the generator and the critic. Each follows the
// formula written next to its declaration in models.h.
#include "models/models.h"

#include <sstream>

namespace atelier::models {
namespace {

torch::Tensor bce_with_logits(const torch::Tensor& logits, double target) {
  return torch::binary_cross_entropy_with_logits(logits, torch::full_like(logits, target));
}

std::string shape_string(const torch::Tensor& tensor) {
  std::ostringstream out;
  out << tensor.sizes();
  return out.str();
}

}  // namespace

Adversarial parse_adversarial(const std::string& name) {
  if (name == "bce") return Adversarial::BCE;
  if (name == "lsgan") return Adversarial::LSGAN;
  if (name == "hinge") return Adversarial::Hinge;
  throw ModelError("unknown adversarial loss '" + name + "' (allowed: bce, lsgan, hinge)");
}

torch::Tensor discriminator_loss(Adversarial kind, const torch::Tensor& real_logits,
                                 const torch::Tensor& fake_logits) {
  switch (kind) {
    case Adversarial::BCE:
      return 0.5 * (bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0));
    case Adversarial::LSGAN:
      return 0.5 * ((real_logits - 1.0).square().mean() + fake_logits.square().mean());
    case Adversarial::Hinge:
      return torch::relu(1.0 - real_logits).mean() + torch::relu(1.0 + fake_logits).mean();
  }
  throw ModelError("discriminator_loss: invalid adversarial loss kind");
}

torch::Tensor generator_adversarial_loss(Adversarial kind, const torch::Tensor& fake_logits) {
  switch (kind) {
    case Adversarial::BCE:
      return bce_with_logits(fake_logits, 1.0);
    case Adversarial::LSGAN:
      return (fake_logits - 1.0).square().mean();
    case Adversarial::Hinge:
      return -fake_logits.mean();
  }
  throw ModelError("generator_adversarial_loss: invalid adversarial loss kind");
}

torch::Tensor content_loss(const torch::Tensor& output_features, const torch::Tensor& target) {
  return torch::mse_loss(output_features, target);
}

StyleStatistics parse_style_statistics(const std::string& name) {
  if (name == "meanstd") return StyleStatistics::MeanStd;
  if (name == "gram") return StyleStatistics::Gram;
  if (name == "both") return StyleStatistics::Both;
  throw ModelError("unknown style statistics '" + name + "' (allowed: meanstd, gram, both)");
}

torch::Tensor gram_matrix(const torch::Tensor& features) {
  if (features.dim() != 4) {
    throw ModelError("gram_matrix expects NCHW features, got shape " + shape_string(features));
  }
  const auto n = features.size(0);
  const auto c = features.size(1);
  const auto flat = features.reshape({n, c, -1});
  // Normalising by C*H*W keeps the loss comparable across layers of
  // different sizes, so one style weight serves all four.
  return torch::bmm(flat, flat.transpose(1, 2)) / static_cast<double>(flat.size(2) * c);
}

torch::Tensor style_loss(const std::vector<torch::Tensor>& output_features,
                         const std::vector<torch::Tensor>& style_features, StyleStatistics kind) {
  if (output_features.size() != style_features.size()) {
    throw ModelError("style_loss got " + std::to_string(output_features.size()) +
                     " output feature layers but " + std::to_string(style_features.size()) +
                     " style feature layers");
  }
  if (output_features.empty()) throw ModelError("style_loss needs at least one feature layer");
  const bool use_mean_std = kind == StyleStatistics::MeanStd || kind == StyleStatistics::Both;
  const bool use_gram = kind == StyleStatistics::Gram || kind == StyleStatistics::Both;
  torch::Tensor total;
  for (size_t i = 0; i < output_features.size(); ++i) {
    torch::Tensor layer_loss;
    if (use_mean_std) {
      const auto [output_mean, output_std] = channel_mean_std(output_features[i]);
      const auto [style_mean, style_std] = channel_mean_std(style_features[i]);
      layer_loss =
          torch::mse_loss(output_mean, style_mean) + torch::mse_loss(output_std, style_std);
    }
    if (use_gram) {
      const auto gram = torch::mse_loss(gram_matrix(output_features[i]),
                                        gram_matrix(style_features[i]));
      layer_loss = layer_loss.defined() ? layer_loss + gram : gram;
    }
    total = total.defined() ? total + layer_loss : layer_loss;
  }
  return total;
}

torch::Tensor l1_loss(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes())
    throw ModelError("l1_loss needs equal shapes, got " + shape_string(a) + " and " + shape_string(b));
  return (a - b).abs().mean();
}

torch::Tensor total_variation_loss(const torch::Tensor& images) {
  // A single row or column has no neighbours; the mean over nothing is NaN.
  if (images.dim() < 2 || images.size(-1) < 2 || images.size(-2) < 2) {
    throw ModelError("total_variation_loss needs images at least 2x2, got shape " +
                     shape_string(images));
  }
  const auto width = images.size(-1);
  const auto height = images.size(-2);
  const auto dx = images.narrow(-1, 1, width - 1) - images.narrow(-1, 0, width - 1);
  const auto dy = images.narrow(-2, 1, height - 1) - images.narrow(-2, 0, height - 1);
  return dx.abs().mean() + dy.abs().mean();
}

}  // namespace atelier::models
