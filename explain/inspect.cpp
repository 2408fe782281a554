// Looking inside the networks: Grad-CAM on the critic, feature maps, AdaIN
// statistics, the style loss per layer, the alpha sweep, occlusion of the
// style image and adversarial probing of the content image.
#include <algorithm>
#include <cmath>
#include <map>

#include "explain/explain.h"

namespace atelier::explain {
namespace {

std::vector<double> to_vector(const torch::Tensor& t) {
  const auto v = t.detach().to(torch::kCPU, torch::kDouble).contiguous().view(-1);
  return {v.data_ptr<double>(), v.data_ptr<double>() + v.numel()};
}

std::vector<int64_t> to_indices(const torch::Tensor& t) {
  const auto v = t.detach().to(torch::kCPU, torch::kLong).contiguous().view(-1);
  return {v.data_ptr<int64_t>(), v.data_ptr<int64_t>() + v.numel()};
}

// Runs `net` on x and returns the output of layer `stop` (the whole net when -1).
torch::Tensor run_until(torch::nn::Sequential& net, torch::Tensor x, int64_t stop) {
  int64_t i = 0;
  for (auto& layer : *net) {
    x = layer.forward(x);
    if (i++ == stop) break;
  }
  return x;
}

// The encoder's tap names (VGG: relu1_1 .. relu4_1; SqueezeNet: relu1,
// fire1, ...) -> its layer of that name (torchvision VGG: encoder.1, .6, .11, .20).
std::map<std::string, std::string> encoder_aliases(const models::EncoderImpl& encoder) {
  std::map<std::string, std::string> aliases;
  for (const auto& [name, index] : encoder.named_taps()) aliases[name] = "encoder." + std::to_string(index);
  return aliases;
}

// "prefix.<n>" -> n when 0 <= n < count, else ExplainError listing the range.
int64_t layer_index(const std::string& name, const std::string& prefix, int64_t count) {
  const std::string digits = name.substr(prefix.size() + 1);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 6 ||
      std::stoll(digits) >= count)
    throw ExplainError("unknown layer '" + name + "': " + prefix + " layers are " + prefix + ".0 .. " + prefix +
                       "." + std::to_string(count - 1));
  return std::stoll(digits);
}

// The encoder as one Sequential-like walk: layer indices run on across slices.
torch::Tensor encoder_until(models::EncoderImpl& encoder, const torch::Tensor& images, int64_t stop) {
  auto x = encoder.input(images);
  int64_t i = 0;
  for (auto& slice : encoder.slices)
    for (auto& layer : *slice) {
      x = layer.forward(x);
      if (i++ == stop) return x;
    }
  return x;
}

int64_t encoder_size(models::EncoderImpl& e) {
  size_t size = 0;
  for (auto& slice : e.slices) size += slice->size();
  return static_cast<int64_t>(size);
}

}  // namespace

GradCam grad_cam(torch::nn::Sequential& net, int64_t layer, const torch::Tensor& image) {
  const auto size = static_cast<int64_t>(net->size());
  if (layer < 0 || layer >= size)
    throw ExplainError("grad_cam layer " + std::to_string(layer) + " is not in 0.." + std::to_string(size - 1));
  if (image.dim() != 3) throw ExplainError("grad_cam expects a [C, H, W] image");
  auto x = image.detach().unsqueeze(0).requires_grad_(true);
  torch::Tensor activation;
  int64_t i = 0;
  for (auto& module : *net) {
    x = module.forward(x);
    if (i++ == layer) activation = x;
  }
  const auto score = x.mean();
  const auto grad = torch::autograd::grad({score}, {activation})[0];
  const auto weights = grad.mean({2, 3}, /*keepdim=*/true);  // [1, C, 1, 1]
  auto cam = torch::relu((weights * activation).sum(1, /*keepdim=*/true)).detach();
  cam = torch::nn::functional::interpolate(
      cam, torch::nn::functional::InterpolateFuncOptions()
               .size(std::vector<int64_t>{image.size(1), image.size(2)})
               .mode(torch::kBilinear)
               .align_corners(false))[0][0];
  const double peak = cam.max().item<double>();
  GradCam result;
  result.map = peak > 0 ? cam / peak : cam;
  result.score = score.item<double>();
  result.channel_weights = to_vector(weights);
  return result;
}

std::vector<std::string> layer_names(Networks& nets) {
  std::vector<std::string> names;
  for (const auto& [alias, name] : encoder_aliases(*nets.generator->encoder)) names.push_back(alias);
  const int64_t e = encoder_size(*nets.generator->encoder);
  for (int64_t i = 0; i < e; ++i) names.push_back("encoder." + std::to_string(i));
  for (size_t i = 0; i < nets.generator->decoder->layers->size(); ++i) names.push_back("decoder." + std::to_string(i));
  for (size_t i = 0; i < nets.discriminator->layers->size(); ++i)
    names.push_back("discriminator." + std::to_string(i));
  return names;
}

torch::Tensor layer_activation(Networks& nets, const std::string& layer, const torch::Tensor& content,
                               const torch::Tensor& style) {
  torch::NoGradGuard no_grad;
  auto& g = *nets.generator;
  const auto aliases = encoder_aliases(*g.encoder);
  const auto alias = aliases.find(layer);
  const std::string name = alias == aliases.end() ? layer : alias->second;
  const auto c = content.unsqueeze(0), s = style.unsqueeze(0);
  if (name.rfind("encoder.", 0) == 0)
    return encoder_until(*g.encoder, c, layer_index(name, "encoder", encoder_size(*g.encoder)));
  if (name.rfind("decoder.", 0) == 0) {
    const auto stop = layer_index(name, "decoder", static_cast<int64_t>(g.decoder->layers->size()));
    return run_until(g.decoder->layers, models::adain(g.encoder->forward(c), g.encoder->forward(s)), stop);
  }
  if (name.rfind("discriminator.", 0) == 0) {
    const auto stop = layer_index(name, "discriminator", static_cast<int64_t>(nets.discriminator->layers->size()));
    return run_until(nets.discriminator->layers, g.forward(c, s), stop);
  }
  std::string taps;
  for (const auto& [tap, index] : g.encoder->named_taps()) taps += tap + ", ";
  throw ExplainError("unknown layer '" + layer + "' (use " + taps + "encoder.<i>, decoder.<i> or discriminator.<i>)");
}

TopChannels top_channels(const torch::Tensor& activation, int64_t k) {
  if (activation.dim() != 4 || activation.size(0) != 1)
    throw ExplainError("top_channels expects a [1, C, h, w] activation");
  const auto means = activation[0].mean({1, 2});
  const auto [values, indices] = means.topk(std::min(k, means.size(0)));
  return {to_indices(indices), to_vector(values), activation[0].index_select(0, indices).detach()};
}

AdaINShift adain_shift(const torch::Tensor& content_features, const torch::Tensor& style_features, int64_t k) {
  const auto [cm, cs] = models::channel_mean_std(content_features.detach());
  const auto [sm, ss] = models::channel_mean_std(style_features.detach());
  const auto dm = (sm - cm).abs().view(-1), ds = (ss - cs).abs().view(-1);
  const auto shift = dm + ds;
  const auto top = std::get<1>(shift.topk(std::min(k, shift.size(0))));
  const auto pick = [&](const torch::Tensor& t) { return to_vector(t.view(-1).index_select(0, top)); };
  AdaINShift result;
  result.channels = to_indices(top);
  result.content_mean = pick(cm);
  result.style_mean = pick(sm);
  result.content_std = pick(cs);
  result.style_std = pick(ss);
  result.shift = pick(shift);
  result.mean_shift_total = dm.sum().item<double>();
  result.std_shift_total = ds.sum().item<double>();
  return result;
}

StyleContribution style_contribution(const std::vector<torch::Tensor>& output_features,
                                     const std::vector<torch::Tensor>& style_features,
                                     models::StyleStatistics kind, int64_t groups) {
  if (output_features.size() != style_features.size() || output_features.empty())
    throw ExplainError("style_contribution needs the same non-zero number of output and style layers");
  if (groups < 1) throw ExplainError("style_contribution needs groups >= 1");
  torch::NoGradGuard no_grad;
  const bool mean_std = kind != models::StyleStatistics::Gram;
  const bool gram = kind != models::StyleStatistics::MeanStd;
  StyleContribution result;
  for (size_t l = 0; l < output_features.size(); ++l) {
    const auto& o = output_features[l];
    const auto& s = style_features[l];
    const int64_t n = o.size(0), channels = o.size(1);
    // Per-channel squared errors whose sum over channels is this layer's
    // term of models::style_loss (each MSE is a mean over N*C or N*C*C).
    auto per_channel = torch::zeros({channels}, o.options().dtype(torch::kDouble));
    if (mean_std) {
      const auto [om, os] = models::channel_mean_std(o);
      const auto [sm, ss] = models::channel_mean_std(s);
      per_channel += (((om - sm).pow(2) + (os - ss).pow(2)).sum(0).view(-1) / static_cast<double>(n * channels))
                         .to(torch::kDouble);
    }
    if (gram) {
      const auto rows = (models::gram_matrix(o) - models::gram_matrix(s)).pow(2).sum(std::vector<int64_t>{0, 2});
      per_channel += (rows / static_cast<double>(n * channels * channels)).to(torch::kDouble);
    }
    const int64_t g = std::min(groups, channels);
    std::vector<double> parts(static_cast<size_t>(g), 0.0);
    const auto values = to_vector(per_channel);
    for (int64_t c = 0; c < channels; ++c) parts[static_cast<size_t>(c * g / channels)] += values[c];
    result.per_group.push_back(parts);
    result.per_layer.push_back(per_channel.sum().item<double>());
    result.total += result.per_layer.back();
  }
  return result;
}

AlphaSweep alpha_sweep(models::AdaINGenerator& generator, const torch::Tensor& content, const torch::Tensor& style,
                       int64_t points, models::StyleStatistics kind) {
  if (points < 2) throw ExplainError("alpha_sweep needs at least 2 points");
  torch::NoGradGuard no_grad;
  const auto c = content.unsqueeze(0), s = style.unsqueeze(0);
  const auto content_features = generator->encoder->forward(c);
  const auto style_features = generator->encoder->forward_features(s);
  AlphaSweep result;
  for (int64_t i = 0; i < points; ++i) {
    const double alpha = static_cast<double>(i) / static_cast<double>(points - 1);
    const auto out = generator->forward(c, s, alpha);
    const auto features = generator->encoder->encode(out);
    result.alphas.push_back(alpha);
    result.outputs.push_back(out[0]);
    result.content_loss.push_back(models::content_loss(features.content, content_features).item<double>());
    result.style_loss.push_back(models::style_loss(features.style, style_features, kind).item<double>());
  }
  return result;
}

Occlusion occlusion(const ImageFunction& f, const FeatureFunction& features, const torch::Tensor& content,
                    const torch::Tensor& style, int64_t patch) {
  if (patch < 1) throw ExplainError("occlusion needs a patch size >= 1");
  torch::NoGradGuard no_grad;
  const int64_t h = style.size(1), w = style.size(2);
  const int64_t rows = (h + patch - 1) / patch, cols = (w + patch - 1) / patch;
  std::vector<torch::Tensor> styles = {style};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      auto masked = style.clone();
      masked.slice(1, r * patch, std::min(h, (r + 1) * patch)).slice(2, c * patch, std::min(w, (c + 1) * patch)).fill_(0.0);
      styles.push_back(masked);
    }
  // Chunks keep memory flat at large sizes; statistics are per image.
  std::vector<torch::Tensor> stats;
  constexpr int64_t kChunk = 8;
  for (size_t start = 0; start < styles.size(); start += kChunk) {
    const auto batch = torch::stack(std::vector<torch::Tensor>(
        styles.begin() + static_cast<long>(start), styles.begin() + static_cast<long>(std::min(styles.size(), start + kChunk))));
    const auto out = f(content.unsqueeze(0).expand({batch.size(0), -1, -1, -1}), batch);
    std::vector<torch::Tensor> per_layer;
    for (const auto& feature : features(out)) {
      const auto [m, s] = models::channel_mean_std(feature);
      per_layer.push_back(torch::cat({m.flatten(1), s.flatten(1)}, 1));
    }
    stats.push_back(torch::cat(per_layer, 1));
  }
  const auto all = torch::cat(stats, 0);
  const auto change = (all.slice(0, 1) - all.slice(0, 0, 1)).pow(2).sum(1).sqrt();
  return {change.view({rows, cols}), patch};
}

Probe adversarial_probe(const ImageFunction& f, const torch::Tensor& content, const torch::Tensor& style,
                        const ProbeOptions& options) {
  if (options.budgets.empty() || options.steps < 1) throw ExplainError("adversarial_probe needs budgets and steps >= 1");
  const auto c = content.detach().unsqueeze(0), s = style.detach().unsqueeze(0);
  torch::Tensor clean;
  {
    torch::NoGradGuard no_grad;
    clean = f(c, s);
  }
  const auto rms_change = [&](const torch::Tensor& delta) { return (f(c + delta, s) - clean).pow(2).mean(); };
  // One signed-gradient step of `step` from delta, projected onto the
  // L-inf ball and the image range.
  const auto ascend = [&](torch::Tensor delta, double step, double eps) {
    delta = delta.detach().requires_grad_(true);
    const auto grad = torch::autograd::grad({rms_change(delta)}, {delta})[0];
    delta = (delta + step * grad.sign()).clamp(-eps, eps);
    return ((c + delta).clamp(-1, 1) - c).detach();
  };
  at::Generator gen = at::detail::createCPUGenerator(0);
  Probe result;
  result.budgets = options.budgets;
  for (const double budget : options.budgets) {
    const double eps = 2 * budget;  // [0, 1] units -> the [-1, 1] image range
    // The change is 0 with zero gradient at delta = 0, so both attacks start
    // from a random point of the ball (R+FGSM, Tramer et al. 2018).
    const auto start = ((torch::rand(c.sizes(), gen) * 2 - 1) * eps).to(c.device());
    const auto fgsm = ascend(start, eps, eps);
    auto pgd = start;
    for (int64_t i = 0; i < options.steps; ++i) pgd = ascend(pgd, 2.5 * eps / static_cast<double>(options.steps), eps);
    torch::NoGradGuard no_grad;
    result.fgsm_change.push_back(std::sqrt(rms_change(fgsm).item<double>()));
    result.pgd_change.push_back(std::sqrt(rms_change(pgd).item<double>()));
  }
  double prev_budget = 0, prev_change = 0;
  for (size_t i = 0; i < result.budgets.size(); ++i) {
    const double change = std::max(result.pgd_change[i], result.fgsm_change[i]);
    if (change >= options.target_change) {
      const double t = (options.target_change - prev_change) / (change - prev_change);
      result.smallest_budget = prev_budget + t * (result.budgets[i] - prev_budget);
      break;
    }
    prev_budget = result.budgets[i];
    prev_change = change;
  }
  return result;
}

}  // namespace atelier::explain
