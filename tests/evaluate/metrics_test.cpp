// The metric functions against values known without them: SSIM by the
// paper's definition written out as loops, PSNR of a known noise level, the
// Fréchet distance of Gaussians in closed form, and KID's unbiasedness.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "evaluate/evaluate.h"

namespace atelier::evaluate {
namespace {

// Wang et al. 2004, eqs. (14)-(16) and (13), for one window placed with its
// top-left corner at (top, left) of single-channel images: weighted means,
// standard deviations and covariance under an 11x11 Gaussian (sigma 1.5)
// normalised to sum 1, C1 = (K1 L)^2, C2 = (K2 L)^2 with L = 2.
double ssim_window_by_hand(const torch::Tensor& x, const torch::Tensor& y, int64_t top, int64_t left) {
  const auto a = x.accessor<double, 2>(), b = y.accessor<double, 2>();
  double w[11][11], total = 0;
  for (int i = 0; i < 11; ++i)
    for (int j = 0; j < 11; ++j) total += w[i][j] = std::exp(-((i - 5) * (i - 5) + (j - 5) * (j - 5)) / (2 * 1.5 * 1.5));
  double mu_x = 0, mu_y = 0;
  for (int i = 0; i < 11; ++i)
    for (int j = 0; j < 11; ++j) {
      mu_x += w[i][j] / total * a[top + i][left + j];
      mu_y += w[i][j] / total * b[top + i][left + j];
    }
  double var_x = 0, var_y = 0, cov = 0;
  for (int i = 0; i < 11; ++i)
    for (int j = 0; j < 11; ++j) {
      const double dx = a[top + i][left + j] - mu_x, dy = b[top + i][left + j] - mu_y;
      var_x += w[i][j] / total * dx * dx;
      var_y += w[i][j] / total * dy * dy;
      cov += w[i][j] / total * dx * dy;
    }
  const double c1 = std::pow(0.01 * 2, 2), c2 = std::pow(0.03 * 2, 2);
  return (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2));
}

torch::Tensor image(int64_t h, int64_t w, int seed) {
  torch::manual_seed(seed);
  return torch::rand({1, 3, h, w}, torch::kDouble) * 2 - 1;
}

TEST(Ssim, IdenticalImagesScoreOneAndHaveInfinitePsnr) {
  const auto x = image(32, 32, 1);
  EXPECT_NEAR(ssim(x, x).item<double>(), 1.0, 1e-12);
  EXPECT_TRUE(std::isinf(psnr(x, x).item<double>()));
}

// Two flat images: no variance, so SSIM is the luminance term alone,
// (2ab + C1) / (a^2 + b^2 + C1) = (2 * 0.5 * -0.25 + 0.0004) / (0.25 + 0.0625 + 0.0004).
TEST(Ssim, FlatImagesGiveTheLuminanceTermComputedByHand) {
  const auto x = torch::full({1, 1, 16, 16}, 0.5, torch::kDouble);
  const auto y = torch::full({1, 1, 16, 16}, -0.25, torch::kDouble);
  EXPECT_NEAR(ssim(x, y).item<double>(), -0.2496 / 0.3129, 1e-12);
}

// An 11x11 image has one window position; 12x14 has 2x4, whose mean is the
// SSIM. The "by hand" side is the paper's definition as loops.
TEST(Ssim, TinyImagesMatchThePapersDefinitionWindowByWindow) {
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{11, 11}, {12, 14}}) {
    torch::manual_seed(3);
    const auto x = torch::rand({h, w}, torch::kDouble) * 2 - 1;
    const auto y = (0.7 * x + 0.3 * torch::rand({h, w}, torch::kDouble) - 0.1).clamp(-1, 1);
    double expected = 0;
    for (int64_t top = 0; top + 11 <= h; ++top)
      for (int64_t left = 0; left + 11 <= w; ++left) expected += ssim_window_by_hand(x, y, top, left);
    expected /= static_cast<double>((h - 10) * (w - 10));
    EXPECT_NEAR(ssim(x.view({1, 1, h, w}), y.view({1, 1, h, w})).item<double>(), expected, 1e-12) << h << "x" << w;
  }
}

TEST(Ssim, ColourSsimIsTheMeanOverChannelsAndLuminanceIsBt601) {
  const auto x = image(24, 24, 4), y = image(24, 24, 5);
  double per_channel = 0;
  for (int64_t c = 0; c < 3; ++c) per_channel += ssim(x.narrow(1, c, 1), y.narrow(1, c, 1)).item<double>() / 3;
  EXPECT_NEAR(ssim(x, y).item<double>(), per_channel, 1e-12);
  const auto red = torch::tensor({1.0, -1.0, -1.0}, torch::kDouble).view({1, 3, 1, 1});
  EXPECT_NEAR(luminance(red).item<double>(), 0.299 - 0.587 - 0.114, 1e-12);
}

TEST(Ssim, FallsAsNoiseGrowsAndRefusesImagesSmallerThanItsWindow) {
  const auto x = image(48, 48, 6) * 0.5;
  torch::manual_seed(7);
  const auto noise = torch::randn_like(x);
  const double light = ssim(x, x + 0.05 * noise).item<double>();
  const double heavy = ssim(x, x + 0.2 * noise).item<double>();
  EXPECT_LT(light, 1.0);
  EXPECT_LT(heavy, light);
  EXPECT_THROW(ssim(image(8, 8, 1), image(8, 8, 2)), EvalError);
  EXPECT_THROW(ssim(image(16, 16, 1), image(16, 24, 2)), EvalError);
}

// +-0.02 in a checkerboard: MSE is exactly 0.0004, so PSNR = 10 log10(2^2 / 0.0004) = 40 dB.
TEST(Psnr, KnownNoiseLevelsGiveKnownDecibels) {
  const auto x = image(16, 16, 8) * 0.5;
  const auto checker = (torch::arange(16).view({16, 1}) + torch::arange(16).view({1, 16})).remainder(2) * 2 - 1;
  EXPECT_NEAR(psnr(x, x + 0.02 * checker.to(torch::kDouble)).item<double>(), 40.0, 1e-9);
  // Gaussian noise of sigma 0.1: MSE ~ 0.01, 10 log10(4 / 0.01) = 26.02 dB
  // (12288 samples: the MSE is within 5 % almost surely, 0.2 dB).
  const auto big = image(64, 64, 9) * 0.5;
  torch::manual_seed(10);
  EXPECT_NEAR(psnr(big, big + 0.1 * torch::randn_like(big)).item<double>(), 10 * std::log10(4 / 0.01), 0.2);
}

// 2x2 covariances: Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)) for a 2x2 PSD M, and
// M = sqrt(S1) S2 sqrt(S1) has Tr M = Tr(S1 S2), det M = det S1 det S2.
double frechet_2x2_closed_form(const torch::Tensor& m1, const torch::Tensor& s1, const torch::Tensor& m2,
                               const torch::Tensor& s2) {
  const double tr_sqrt = std::sqrt(torch::matmul(s1, s2).trace().item<double>() +
                                   2 * std::sqrt(torch::det(s1).item<double>() * torch::det(s2).item<double>()));
  return (m1 - m2).square().sum().item<double>() + s1.trace().item<double>() + s2.trace().item<double>() -
         2 * tr_sqrt;
}

TEST(FrechetDistance, NonCommutingGaussiansMatchTheClosedForm) {
  const auto m1 = torch::tensor({0.0, 0.0}, torch::kDouble), m2 = torch::tensor({1.0, 2.0}, torch::kDouble);
  const auto s1 = torch::tensor({2.0, 0.5, 0.5, 1.0}, torch::kDouble).view({2, 2});
  const auto s2 = torch::tensor({1.0, -0.3, -0.3, 0.5}, torch::kDouble).view({2, 2});
  EXPECT_NEAR(frechet_distance(m1, s1, m2, s2), frechet_2x2_closed_form(m1, s1, m2, s2), 1e-10);
  // Diagonal covariances commute: sum (sqrt(a_i) - sqrt(b_i))^2.
  const auto a = torch::tensor({1.0, 4.0, 9.0, 0.25}, torch::kDouble), b = torch::tensor({4.0, 1.0, 9.0, 1.0}, torch::kDouble);
  const auto zero = torch::zeros({4}, torch::kDouble);
  EXPECT_NEAR(frechet_distance(zero, torch::diag(a), zero, torch::diag(b)), 1.0 + 1.0 + 0.0 + 0.25, 1e-10);
}

TEST(FrechetDistance, SamplesOfTwoGaussiansApproachTheClosedForm) {
  const auto m1 = torch::tensor({0.0, 0.0}, torch::kDouble), m2 = torch::tensor({1.0, 2.0}, torch::kDouble);
  const auto s1 = torch::tensor({2.0, 0.5, 0.5, 1.0}, torch::kDouble).view({2, 2});
  const auto s2 = torch::tensor({1.0, -0.3, -0.3, 0.5}, torch::kDouble).view({2, 2});
  torch::manual_seed(11);
  const auto x = m1 + torch::matmul(torch::randn({20000, 2}, torch::kDouble), torch::linalg::cholesky(s1).t());
  const auto y = m2 + torch::matmul(torch::randn({20000, 2}, torch::kDouble), torch::linalg::cholesky(s2).t());
  EXPECT_NEAR(frechet_distance(x, y), frechet_2x2_closed_form(m1, s1, m2, s2), 0.05);
}

TEST(FrechetDistance, ASetWithItselfIsZeroAlsoWithFewerSamplesThanDimensions) {
  torch::manual_seed(12);
  const auto wide = torch::randn({50, 8}, torch::kDouble) * 3 + 1;
  EXPECT_NEAR(frechet_distance(wide, wide), 0.0, 1e-9);
  // 10 samples in 32 dimensions: rank-deficient covariances, as in small evaluation sets.
  const auto few = torch::rand({10, 32}, torch::kFloat);
  EXPECT_NEAR(frechet_distance(few, few), 0.0, 1e-5);
  EXPECT_GT(frechet_distance(few, few + 0.5), 0.25 * 32 - 1e-6);  // a mean shift of 0.5 in 32 dimensions
  EXPECT_THROW(frechet_distance(few.narrow(0, 0, 1), few), EvalError);
}

TEST(SqrtmPsd, SquaresBackToTheMatrix) {
  torch::manual_seed(13);
  const auto a = torch::randn({6, 4}, torch::kDouble);
  const auto psd = torch::matmul(a, a.t());  // rank 4 of 6
  const auto root = sqrtm_psd(psd);
  EXPECT_LT((torch::matmul(root, root) - psd).abs().max().item<double>(), 1e-9);
}

// x = {0, 1}, y = {2, 3} in one dimension, k(a, b) = (ab + 1)^3:
// within x: k(0, 1) = 1; within y: k(2, 3) = 343; across: 1, 1, 27, 64 (mean 23.25).
TEST(KernelDistance, TinySetsMatchTheEstimatorByHand) {
  const auto x = torch::tensor({0.0, 1.0}, torch::kDouble).view({2, 1});
  const auto y = torch::tensor({2.0, 3.0}, torch::kDouble).view({2, 1});
  EXPECT_NEAR(kernel_distance(x, y), 1 + 343 - 2 * 23.25, 1e-9);
  EXPECT_THROW(kernel_distance(x.narrow(0, 0, 1), y), EvalError);
}

// Two samples of one distribution: the unbiased estimate averages to 0 over
// many draws, where the plain (biased) V-statistic is clearly positive.
TEST(KernelDistance, IsUnbiasedOnTwoSamplesOfOneDistribution) {
  torch::manual_seed(14);
  const int trials = 400;
  std::vector<double> unbiased, biased;
  for (int t = 0; t < trials; ++t) {
    const auto x = torch::randn({8, 4}, torch::kDouble), y = torch::randn({8, 4}, torch::kDouble);
    unbiased.push_back(kernel_distance(x, y));
    auto k = [](const torch::Tensor& u, const torch::Tensor& v) { return (torch::matmul(u, v.t()) / 4 + 1).pow(3).mean().item<double>(); };
    biased.push_back(k(x, x) + k(y, y) - 2 * k(x, y));
  }
  auto mean_and_error = [trials](const std::vector<double>& v) {
    const auto t = torch::tensor(v, torch::kDouble);
    return std::make_pair(t.mean().item<double>(), t.std().item<double>() / std::sqrt(static_cast<double>(trials)));
  };
  const auto [u_mean, u_error] = mean_and_error(unbiased);
  const auto [b_mean, b_error] = mean_and_error(biased);
  EXPECT_LT(std::abs(u_mean), 3 * u_error) << "mean " << u_mean << " +- " << u_error;
  EXPECT_GT(b_mean, 10 * b_error) << "the biased estimate should be visibly positive: " << b_mean;
  // And a real difference is seen: a mean shift of 1 in every dimension.
  torch::manual_seed(15);
  EXPECT_GT(kernel_distance(torch::randn({8, 4}, torch::kDouble), torch::randn({8, 4}, torch::kDouble) + 1), 0.5);
}

TEST(PlanPairs, WalksEveryContentStylePairOnceStartingWithEveryContent) {
  const auto pairs = plan_pairs(3, 2, 0);
  ASSERT_EQ(pairs.size(), 6u);
  std::set<std::pair<int64_t, int64_t>> distinct;
  for (const auto& p : pairs) distinct.insert({p.content, p.style});
  EXPECT_EQ(distinct.size(), 6u);
  for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(pairs[i].content, i);
  EXPECT_NE(pairs[0].style, pairs[1].style);
  EXPECT_EQ(plan_pairs(3, 2, 4).size(), 4u);
  EXPECT_THROW(plan_pairs(3, 2, 7), EvalError);
  EXPECT_THROW(plan_pairs(0, 2, 0), EvalError);
}

}  // namespace
}  // namespace atelier::evaluate
