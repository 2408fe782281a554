// Gradient attributions: saliency, SmoothGrad, Integrated Gradients, and the
// trust checks that judge them (rank correlation, deletion curve).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <tuple>

#include "explain/explain.h"

namespace atelier::explain {
namespace {

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

void check_image(const torch::Tensor& image, const char* what) {
  if (image.dim() != 3 || image.size(0) != 3)
    throw ExplainError(std::string(what) + " must be a [3, H, W] image, got shape " + shape_of(image));
}

// The output for the unperturbed inputs [1, 3, H, W]: what region_score projects on.
torch::Tensor reference_output(const ImageFunction& f, const torch::Tensor& content, const torch::Tensor& style) {
  torch::NoGradGuard no_grad;
  return f(content.unsqueeze(0), style.unsqueeze(0)).detach();
}

// Gradients of the summed region score with respect to both inputs (zeros
// for an input f does not use).
std::pair<torch::Tensor, torch::Tensor> input_gradients(const ImageFunction& f, const torch::Tensor& content,
                                                        const torch::Tensor& style, const torch::Tensor& reference,
                                                        const Region& region) {
  auto c = content.detach().clone().requires_grad_(true);
  auto s = style.detach().clone().requires_grad_(true);
  const auto score = region_score(f(c, s), reference, region).sum();
  auto grads = torch::autograd::grad({score}, {c, s}, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/true);
  for (size_t i = 0; i < 2; ++i)
    if (!grads[i].defined()) grads[i] = torch::zeros_like(i == 0 ? c : s);
  return {grads[0].detach(), grads[1].detach()};
}

torch::Tensor gaussian_kernel(double sigma) {
  const int64_t radius = static_cast<int64_t>(std::ceil(3 * sigma));
  auto x = torch::arange(-radius, radius + 1, torch::kFloat);
  auto k = torch::exp(-(x * x) / (2 * sigma * sigma));
  return k / k.sum();
}

}  // namespace

namespace {
torch::Tensor crop(const torch::Tensor& images, const Region& region) {
  using torch::indexing::Slice;
  if (region.empty()) return images;
  if (region.y < 0 || region.x < 0 || region.y + region.h > images.size(2) || region.x + region.w > images.size(3))
    throw ExplainError("region (y " + std::to_string(region.y) + ", x " + std::to_string(region.x) + ", h " +
                       std::to_string(region.h) + ", w " + std::to_string(region.w) + ") lies outside the " +
                       std::to_string(images.size(2)) + "x" + std::to_string(images.size(3)) + " output");
  return images.index({Slice(), Slice(), Slice(region.y, region.y + region.h), Slice(region.x, region.x + region.w)});
}
}  // namespace

torch::Tensor region_score(const torch::Tensor& output, const torch::Tensor& reference, const Region& region) {
  if (output.dim() != 4) throw ExplainError("region_score expects [N, C, H, W] output, got " + shape_of(output));
  if (reference.dim() != 4 || reference.size(0) != 1 || reference.sizes().slice(1) != output.sizes().slice(1))
    throw ExplainError("region_score expects a [1, C, H, W] reference like the output, got " + shape_of(reference));
  auto pattern = crop(reference, region).detach();
  pattern = pattern - pattern.mean({2, 3}, /*keepdim=*/true);
  return (crop(output, region) * pattern).mean({1, 2, 3});
}

torch::Tensor pixel_map(const torch::Tensor& attribution) { return attribution.abs().sum(0); }

InputAttribution saliency(const ImageFunction& f, const torch::Tensor& content, const torch::Tensor& style,
                          const Region& region) {
  check_image(content, "content");
  check_image(style, "style");
  const auto reference = reference_output(f, content, style);
  auto [gc, gs] = input_gradients(f, content.unsqueeze(0), style.unsqueeze(0), reference, region);
  return {gc[0], gs[0]};
}

InputAttribution smoothgrad(const ImageFunction& f, const torch::Tensor& content, const torch::Tensor& style,
                            const Region& region, const SmoothGradOptions& options) {
  check_image(content, "content");
  check_image(style, "style");
  if (options.samples < 1) throw ExplainError("smoothgrad needs at least one sample");
  at::Generator gen = at::detail::createCPUGenerator(options.seed);
  const auto n = options.samples;
  // Drawn on the host from the seed, so every device sees the same noise.
  const auto noise_c = (torch::randn({n, 3, content.size(1), content.size(2)}, gen) * options.sigma).to(content.device());
  const auto noise_s = (torch::randn({n, 3, style.size(1), style.size(2)}, gen) * options.sigma).to(style.device());
  // Per-sample scores are independent, so one batch gives every sample's gradient.
  const auto reference = reference_output(f, content, style);
  auto [gc, gs] =
      input_gradients(f, content.unsqueeze(0) + noise_c, style.unsqueeze(0) + noise_s, reference, region);
  return {gc.mean(0), gs.mean(0)};
}

Baseline parse_baseline(const std::string& name) {
  if (name == "black") return Baseline::Black;
  if (name == "blurred") return Baseline::Blurred;
  throw ExplainError("unknown baseline '" + name + "' (allowed: black, blurred)");
}

torch::Tensor make_baseline(const torch::Tensor& image, Baseline kind) {
  check_image(image, "baseline image");
  if (kind == Baseline::Black) return torch::full_like(image, -1.0);
  // Strong enough to remove edges and texture, mild enough to keep the
  // layout's colours: what "the image without its detail" means.
  const double sigma = std::max<double>(1.0, static_cast<double>(std::min(image.size(1), image.size(2))) / 8);
  auto k = gaussian_kernel(sigma).to(image.device());
  const int64_t r = (k.size(0) - 1) / 2;
  auto x = image.unsqueeze(0);
  // Edge replication: no dark frame (zeros) and valid for any kernel size.
  const auto pad = [](const torch::Tensor& t, int64_t left, int64_t top) {
    return torch::nn::functional::pad(
        t, torch::nn::functional::PadFuncOptions({left, left, top, top}).mode(torch::kReplicate));
  };
  const auto per_channel = torch::nn::functional::Conv2dFuncOptions().groups(3);
  x = torch::nn::functional::conv2d(pad(x, r, 0), k.view({1, 1, 1, -1}).repeat({3, 1, 1, 1}), per_channel);
  x = torch::nn::functional::conv2d(pad(x, 0, r), k.view({1, 1, -1, 1}).repeat({3, 1, 1, 1}), per_channel);
  return x[0];
}

namespace {

// Weighted sum of the input gradients at the path points baseline +
// alpha * (input - baseline), evaluated `batch` points per pass.
struct PathIntegral {
  const ImageFunction& f;
  torch::Tensor input, baseline, other, reference;
  bool on_content;
  Region region;
  int64_t batch;

  torch::Tensor gradient_sum(const std::vector<double>& alphas, const std::vector<double>& weights) const {
    auto total = torch::zeros_like(input);
    for (size_t start = 0; start < alphas.size(); start += static_cast<size_t>(batch)) {
      const size_t end = std::min(alphas.size(), start + static_cast<size_t>(batch));
      const auto n = static_cast<int64_t>(end - start);
      const auto a = torch::tensor(std::vector<double>(alphas.begin() + static_cast<long>(start),
                                                       alphas.begin() + static_cast<long>(end)),
                                   torch::kFloat)
                         .view({-1, 1, 1, 1})
                         .to(input.device());
      const auto w = torch::tensor(std::vector<double>(weights.begin() + static_cast<long>(start),
                                                       weights.begin() + static_cast<long>(end)),
                                   torch::kFloat)
                         .view({-1, 1, 1, 1})
                         .to(input.device());
      const auto path = baseline.unsqueeze(0) + a * (input - baseline).unsqueeze(0);
      const auto others = other.expand({n, -1, -1, -1});
      auto [gc, gs] = on_content ? input_gradients(f, path, others, reference, region)
                                 : input_gradients(f, others, path, reference, region);
      total += ((on_content ? gc : gs) * w).sum(0);
    }
    return total;
  }

  std::pair<double, double> end_scores() const {
    torch::NoGradGuard no_grad;
    const auto ends = torch::stack({input, baseline});
    const auto others = other.expand({2, -1, -1, -1});
    const auto scores = on_content ? region_score(f(ends, others), reference, region)
                                   : region_score(f(others, ends), reference, region);
    return {scores[0].item<double>(), scores[1].item<double>()};
  }
};

}  // namespace

IntegratedGradients integrated_gradients(const ImageFunction& f, const torch::Tensor& content,
                                         const torch::Tensor& style, const std::string& which, const Region& region,
                                         const IntegratedGradientsOptions& options) {
  check_image(content, "content");
  check_image(style, "style");
  if (which != "content" && which != "style")
    throw ExplainError("integrated_gradients attributes 'content' or 'style', not '" + which + "'");
  if (options.steps < 1 || options.batch < 1) throw ExplainError("integrated_gradients needs steps and batch >= 1");
  const bool on_content = which == "content";
  const auto input = on_content ? content : style;
  const PathIntegral path{f,          input, make_baseline(input, options.baseline),
                          (on_content ? style : content).unsqueeze(0), reference_output(f, content, style),
                          on_content, region, options.batch};
  IntegratedGradients result;
  std::tie(result.f_input, result.f_baseline) = path.end_scores();
  const double delta = result.f_input - result.f_baseline;
  // Trapezoid rule over alpha = k / steps (exact for a linear f). ReLU kinks
  // and AdaIN's normalisation near a flat baseline make the integrand rough,
  // so while the gap is above tolerance the step is halved, reusing every
  // gradient already computed (only the new midpoints are evaluated).
  int64_t steps = options.steps;
  std::vector<double> alphas, weights;
  for (int64_t k = 0; k <= steps; ++k) {
    alphas.push_back(static_cast<double>(k) / static_cast<double>(steps));
    weights.push_back(k == 0 || k == steps ? 0.5 : 1.0);
  }
  auto total = path.gradient_sum(alphas, weights);
  for (;;) {
    result.attribution = (input - path.baseline) * total / static_cast<double>(steps);
    result.attribution_sum = result.attribution.sum().item<double>();
    const double error = std::abs(result.attribution_sum - delta);
    result.completeness_gap = std::abs(delta) > 0 ? error / std::abs(delta) : (error > 0 ? INFINITY : 0.0);
    result.steps = steps;
    if (result.completeness_gap < options.tolerance || 2 * steps > options.max_steps) break;
    alphas.clear();
    for (int64_t k = 0; k < steps; ++k) alphas.push_back((2.0 * static_cast<double>(k) + 1) / (2.0 * static_cast<double>(steps)));
    total += path.gradient_sum(alphas, std::vector<double>(alphas.size(), 1.0));
    steps *= 2;
  }
  return result;
}

double spearman(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.numel() != b.numel() || a.numel() < 2)
    throw ExplainError("spearman needs two tensors of the same size >= 2, got " + shape_of(a) + " and " +
                       shape_of(b));
  const auto ranks = [](const torch::Tensor& t) {
    const auto v = t.detach().to(torch::kCPU, torch::kDouble).contiguous().view(-1);
    const auto* p = v.data_ptr<double>();
    const auto n = static_cast<size_t>(v.numel());
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [p](size_t i, size_t j) { return p[i] < p[j]; });
    std::vector<double> rank(n);
    for (size_t i = 0; i < n;) {
      size_t j = i;
      while (j + 1 < n && p[order[j + 1]] == p[order[i]]) ++j;
      for (size_t k = i; k <= j; ++k) rank[order[k]] = 0.5 * static_cast<double>(i + j);  // ties share the mean rank
      i = j + 1;
    }
    return torch::tensor(rank, torch::kDouble);
  };
  auto ra = ranks(a), rb = ranks(b);
  ra -= ra.mean();
  rb -= rb.mean();
  const double denom = std::sqrt((ra * ra).sum().item<double>() * (rb * rb).sum().item<double>());
  return denom > 0 ? (ra * rb).sum().item<double>() / denom : 0.0;  // a constant map ranks nothing
}

DeletionCurve deletion_curve(const ImageFunction& f, const torch::Tensor& content, const torch::Tensor& style,
                             const torch::Tensor& pixel_attribution, const torch::Tensor& baseline,
                             const Region& region, int64_t points, uint64_t seed) {
  check_image(content, "content");
  if (pixel_attribution.dim() != 2 || pixel_attribution.size(0) != content.size(1) ||
      pixel_attribution.size(1) != content.size(2))
    throw ExplainError("deletion_curve needs an [H, W] attribution of the content, got " +
                       shape_of(pixel_attribution));
  if (points < 1) throw ExplainError("deletion_curve needs points >= 1");
  torch::NoGradGuard no_grad;
  const int64_t pixels = pixel_attribution.numel();
  const auto by_attribution = pixel_attribution.reshape(-1).argsort(/*dim=*/0, /*descending=*/true);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto random = torch::randperm(pixels, gen).to(content.device());
  const auto curve = [&](const torch::Tensor& order) {
    std::vector<torch::Tensor> images;
    for (int64_t k = 0; k <= points; ++k) {
      auto keep = torch::ones({pixels}, content.options());
      keep.index_fill_(0, order.slice(0, 0, pixels * k / points), 0.0);
      const auto mask = keep.view({1, content.size(1), content.size(2)});
      images.push_back(content * mask + baseline * (1 - mask));
    }
    const auto batch = torch::stack(images);
    const auto out = f(batch, style.unsqueeze(0).expand({batch.size(0), -1, -1, -1}));
    const auto diff = crop(out - out.slice(0, 0, 1), region);
    return diff.pow(2).mean({1, 2, 3}).sqrt();
  };
  const auto a = curve(by_attribution), r = curve(random);
  DeletionCurve result;
  for (int64_t k = 0; k <= points; ++k) {
    result.fraction.push_back(static_cast<double>(k) / static_cast<double>(points));
    result.by_attribution.push_back(a[k].item<double>());
    result.random.push_back(r[k].item<double>());
  }
  const auto auc = [&](const std::vector<double>& y) {
    double area = 0;
    for (size_t k = 1; k < y.size(); ++k) area += 0.5 * (y[k] + y[k - 1]) * (result.fraction[k] - result.fraction[k - 1]);
    return area;
  };
  result.auc_attribution = auc(result.by_attribution);
  result.auc_random = auc(result.random);
  return result;
}

}  // namespace atelier::explain
