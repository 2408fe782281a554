// The metric functions: SSIM, PSNR and luminance on images; the Fréchet and
// kernel distances on feature sets. Each follows the formula next to its
// declaration in evaluate.h.
#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "evaluate/evaluate.h"

namespace atelier::evaluate {
namespace {

// Wang et al. 2004: an 11x11 circular-symmetric Gaussian, sigma 1.5, summing to 1.
constexpr int64_t kWindow = 11;
constexpr double kSigma = 1.5;
constexpr double kK1 = 0.01;
constexpr double kK2 = 0.03;
// Images are in [-1, 1]: the dynamic range L of the SSIM constants and PSNR.
constexpr double kRange = 2.0;

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

void check_image_pair(const char* what, const torch::Tensor& x, const torch::Tensor& y) {
  if (x.dim() != 4 || x.sizes() != y.sizes())
    throw EvalError(std::string(what) + " needs two NCHW image batches of one shape, got " + shape_of(x) +
                    " and " + shape_of(y));
}

// [size, size - 10] float64: column j holds the normalised 1-D Gaussian at
// rows j .. j + 10, so band(H)^T X band(W) is X filtered by the 11x11 window
// (the outer product of the 1-D one) at every position where it fits. Two
// BLAS matmuls are several times faster than LibTorch's depthwise float64
// convolution, which has no fast CPU path.
torch::Tensor band_matrix(int64_t size) {
  const auto r = torch::arange(kWindow, torch::kDouble) - static_cast<double>(kWindow / 2);
  auto g = torch::exp(-r.square() / (2 * kSigma * kSigma));
  g = g / g.sum();
  auto band = torch::zeros({size, size - kWindow + 1}, torch::kDouble);
  for (int64_t j = 0; j + kWindow <= size; ++j) band.select(1, j).narrow(0, j, kWindow).copy_(g);
  return band;
}

// Weighted local means of [N, K, H, W] over every position where the window fits ('valid').
torch::Tensor local_mean(const torch::Tensor& images) {
  const auto rows = band_matrix(images.size(2)).to(images.device()), columns = band_matrix(images.size(3)).to(images.device());
  return torch::matmul(torch::matmul(rows.t(), images), columns);
}

void check_feature_sets(const char* what, const torch::Tensor& x, const torch::Tensor& y) {
  if (x.dim() != 2 || y.dim() != 2 || x.size(1) != y.size(1))
    throw EvalError(std::string(what) + " needs two [n, d] feature sets of one width, got " + shape_of(x) +
                    " and " + shape_of(y));
  if (x.size(0) < 2 || y.size(0) < 2)
    throw EvalError(std::string(what) + " needs at least 2 samples in each set, got " +
                    std::to_string(x.size(0)) + " and " + std::to_string(y.size(0)));
}

// Mean of k over the pairs (i, j), i != j, of a square kernel matrix.
double off_diagonal_mean(const torch::Tensor& k) {
  const auto n = static_cast<double>(k.size(0));
  return (k.sum() - k.diagonal().sum()).item<double>() / (n * (n - 1));
}

}  // namespace

torch::Tensor ssim(const torch::Tensor& x, const torch::Tensor& y) {
  check_image_pair("ssim", x, y);
  if (x.size(2) < kWindow || x.size(3) < kWindow)
    throw EvalError("ssim needs images of at least 11x11 pixels (its Gaussian window), got " +
                    std::to_string(x.size(3)) + "x" + std::to_string(x.size(2)));
  const auto a = x.to(torch::kDouble), b = y.to(torch::kDouble);
  const double c1 = std::pow(kK1 * kRange, 2), c2 = std::pow(kK2 * kRange, 2);
  // The five local moments in one filtering pass.
  const auto moments = local_mean(torch::cat({a, b, a * a, b * b, a * b}, 1)).chunk(5, 1);
  const auto &mu_a = moments[0], &mu_b = moments[1];
  const auto var_a = moments[2] - mu_a.square();
  const auto var_b = moments[3] - mu_b.square();
  const auto cov = moments[4] - mu_a * mu_b;
  const auto map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) /
                   ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2));
  // Every channel's map has the same size: the mean over all is the mean of
  // the per-channel SSIMs.
  return map.mean({1, 2, 3});
}

torch::Tensor psnr(const torch::Tensor& x, const torch::Tensor& y) {
  check_image_pair("psnr", x, y);
  const auto mse = (x.to(torch::kDouble) - y.to(torch::kDouble)).square().mean({1, 2, 3});
  return 10.0 * torch::log10(kRange * kRange / mse);
}

torch::Tensor luminance(const torch::Tensor& rgb) {
  if (rgb.dim() != 4 || rgb.size(1) != 3)
    throw EvalError("luminance needs [N, 3, H, W] RGB images, got " + shape_of(rgb));
  const auto weights = torch::tensor({0.299, 0.587, 0.114}, rgb.options()).view({1, 3, 1, 1});
  return (rgb * weights).sum(1, /*keepdim=*/true);
}

torch::Tensor sqrtm_psd(const torch::Tensor& matrix) {
  if (matrix.dim() != 2 || matrix.size(0) != matrix.size(1))
    throw EvalError("sqrtm_psd needs a square matrix, got " + shape_of(matrix));
  const auto m = matrix.to(torch::kDouble);
  // Symmetrise: a product computed in floating point is symmetric only up to
  // rounding, and eigh reads one triangle.
  const auto [values, vectors] = torch::linalg::eigh((m + m.t()) / 2, "L");
  return torch::matmul(vectors * values.clamp_min(0).sqrt(), vectors.t());
}

double frechet_distance(const torch::Tensor& mu1, const torch::Tensor& cov1, const torch::Tensor& mu2,
                        const torch::Tensor& cov2) {
  const auto d = mu1.numel();
  if (mu2.numel() != d || cov1.sizes() != torch::IntArrayRef{d, d} || cov2.sizes() != torch::IntArrayRef{d, d})
    throw EvalError("frechet_distance: means " + shape_of(mu1) + ", " + shape_of(mu2) + " and covariances " +
                    shape_of(cov1) + ", " + shape_of(cov2) + " do not fit one dimension");
  const auto m1 = mu1.to(torch::kDouble).flatten(), m2 = mu2.to(torch::kDouble).flatten();
  const auto c1 = cov1.to(torch::kDouble), c2 = cov2.to(torch::kDouble);
  // Tr((c1 c2)^(1/2)) = Tr((s c2 s)^(1/2)) with s = c1^(1/2): the product
  // s c2 s is symmetric PSD, so its root is the root of its eigenvalues,
  // where c1 c2 itself is not symmetric and needs a general sqrtm.
  const auto s = sqrtm_psd(c1);
  const auto product = torch::matmul(torch::matmul(s, c2), s);
  const auto eigenvalues = torch::linalg::eigvalsh((product + product.t()) / 2, "L");
  const double trace_sqrt = eigenvalues.clamp_min(0).sqrt().sum().item<double>();
  const double mean_term = (m1 - m2).square().sum().item<double>();
  return mean_term + c1.trace().item<double>() + c2.trace().item<double>() - 2 * trace_sqrt;
}

double frechet_distance(const torch::Tensor& x, const torch::Tensor& y) {
  check_feature_sets("frechet_distance", x, y);
  auto fit = [](const torch::Tensor& features) {
    const auto f = features.to(torch::kDouble);
    const auto mean = f.mean(0);
    const auto centred = f - mean;
    return std::make_pair(mean, torch::matmul(centred.t(), centred) / static_cast<double>(f.size(0) - 1));
  };
  const auto [mu_x, cov_x] = fit(x);
  const auto [mu_y, cov_y] = fit(y);
  return frechet_distance(mu_x, cov_x, mu_y, cov_y);
}

double kernel_distance(const torch::Tensor& x, const torch::Tensor& y) {
  check_feature_sets("kernel_distance", x, y);
  const auto a = x.to(torch::kDouble), b = y.to(torch::kDouble);
  const auto d = static_cast<double>(a.size(1));
  auto kernel = [d](const torch::Tensor& u, const torch::Tensor& v) {
    return (torch::matmul(u, v.t()) / d + 1).pow(3);
  };
  // Leaving out k(x_i, x_i) and k(y_i, y_i) is what makes the estimate unbiased.
  return off_diagonal_mean(kernel(a, a)) + off_diagonal_mean(kernel(b, b)) - 2 * kernel(a, b).mean().item<double>();
}

}  // namespace atelier::evaluate
