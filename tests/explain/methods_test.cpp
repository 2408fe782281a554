// Each explanation on a case whose answer is known in closed form: linear
// toy generators, a two-layer net for Grad-CAM, a style image with one odd
// patch for occlusion, and the tiny AdaIN generator for IG completeness.
#include <gtest/gtest.h>

#include <cmath>

#include "explain/explain.h"

namespace atelier::explain {
namespace {
using torch::indexing::Slice;

constexpr int64_t kSize = 16;

torch::Tensor random_image(uint64_t seed, int64_t size = kSize) {
  torch::manual_seed(seed);
  return torch::rand({3, size, size}) - 0.5;  // inside [-1, 1] with room for perturbations
}

// f(c, s) = A * c + B * s, elementwise: d mean(f)/dc = A / numel.
struct Linear {
  torch::Tensor a = torch::linspace(-1, 2, 3 * kSize * kSize).view({1, 3, kSize, kSize});
  torch::Tensor b = torch::linspace(0.5, -0.5, 3 * kSize * kSize).view({1, 3, kSize, kSize});
  ImageFunction f() const {
    return [a = a, b = b](const torch::Tensor& c, const torch::Tensor& s) { return a * c + b * s; };
  }
};

// region_score's projection pattern: the reference output, cropped and
// centred per channel, zero outside the region.
torch::Tensor pattern(const torch::Tensor& reference, const Region& r) {
  auto crop = reference[0].index({Slice(), Slice(r.y, r.y + r.h), Slice(r.x, r.x + r.w)});
  auto out = torch::zeros_like(reference[0]);
  out.index_put_({Slice(), Slice(r.y, r.y + r.h), Slice(r.x, r.x + r.w)}, crop - crop.mean({1, 2}, true));
  return out;
}

TEST(Saliency, OfALinearFunctionIsItsWeightsTimesTheOutputPattern) {
  const Linear lin;
  const auto c = random_image(1), s = random_image(2);
  const auto reference = lin.f()(c.unsqueeze(0), s.unsqueeze(0));
  const Region all{0, 0, kSize, kSize};
  const auto whole = saliency(lin.f(), c, s);
  const double n = 3.0 * kSize * kSize;
  EXPECT_TRUE(torch::allclose(whole.content, lin.a[0] * pattern(reference, all) / n, 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(whole.style, lin.b[0] * pattern(reference, all) / n, 1e-5, 1e-7));

  const Region region{2, 4, 5, 6};
  const auto local = saliency(lin.f(), c, s, region);
  EXPECT_TRUE(torch::allclose(local.content, lin.a[0] * pattern(reference, region) / (3.0 * 5 * 6), 1e-5, 1e-7));
  EXPECT_EQ(local.content.index({Slice(), Slice(7)}).abs().sum().item<double>(), 0.0);
}

TEST(Saliency, AUniformBrightnessShiftOfTheOutputEarnsNoAttribution) {
  // The score is centred on the reference: a uniform brightness shift of the
  // output is not structure, so it earns no attribution.
  const Linear lin;
  const auto shifted = [&](const torch::Tensor& c, const torch::Tensor& s) { return lin.f()(c, s) + 0.3 * c.mean(); };
  const auto c = random_image(1), s = random_image(2);
  EXPECT_TRUE(torch::allclose(saliency(shifted, c, s).content, saliency(lin.f(), c, s).content, 1e-5, 1e-8));
}

TEST(Saliency, OfAGeneratorThatIgnoresStyleIsZeroForStyle) {
  torch::manual_seed(0);
  auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 3, 3).padding(1));
  const ImageFunction f = [&](const torch::Tensor& c, const torch::Tensor&) { return torch::tanh(conv(c)); };
  const auto a = saliency(f, random_image(3), random_image(4));
  EXPECT_EQ(a.style.abs().sum().item<double>(), 0.0);
  EXPECT_GT(a.content.abs().sum().item<double>(), 0.0);
  const auto smooth = smoothgrad(f, random_image(3), random_image(4));
  EXPECT_EQ(smooth.style.abs().sum().item<double>(), 0.0);
}

TEST(Saliency, RegionOutsideTheImageIsAnError) {
  const Linear lin;
  EXPECT_THROW(saliency(lin.f(), random_image(1), random_image(2), Region{10, 10, 8, 8}), ExplainError);
}

TEST(SmoothGrad, OfALinearFunctionEqualsItsGradient) {
  const Linear lin;
  const auto c = random_image(1), s = random_image(2);
  const auto a = smoothgrad(lin.f(), c, s, {}, {8, 0.3, 5});
  EXPECT_TRUE(torch::allclose(a.content, saliency(lin.f(), c, s).content, 1e-5, 1e-8));
}

TEST(IntegratedGradients, IsExactOnALinearFunction) {
  const Linear lin;
  const auto c = random_image(1), s = random_image(2);
  for (const auto baseline : {Baseline::Black, Baseline::Blurred}) {
    IntegratedGradientsOptions options;
    options.baseline = baseline;
    options.steps = 4;
    const auto ig = integrated_gradients(lin.f(), c, s, "content", {}, options);
    const auto reference = lin.f()(c.unsqueeze(0), s.unsqueeze(0));
    const auto expected = (c - make_baseline(c, baseline)) * lin.a[0] *
                          pattern(reference, {0, 0, kSize, kSize}) / (3.0 * kSize * kSize);
    EXPECT_TRUE(torch::allclose(ig.attribution, expected, 1e-4, 1e-7));
    EXPECT_LT(ig.completeness_gap, 1e-4);
    EXPECT_EQ(ig.steps, 4) << "a linear path integral needs no refinement";
  }
}

TEST(IntegratedGradients, CompletenessGapIsBelowFivePercentOnTheTinyGenerator) {
  torch::manual_seed(0);
  models::GeneratorOptions options;
  options.encoder.width = 4;
  options.decoder.width = 4;
  models::AdaINGenerator g(options);
  // LibTorch's default init shrinks the signal through the decoder's nine
  // convs until the output is flat (variance ~1e-8); fan-in init keeps it
  // alive, like a trained decoder, so there is something to attribute.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : g->decoder->named_parameters())
      if (p.key().find("weight") != std::string::npos)
        p.value().normal_(0.0, std::sqrt(2.0 / static_cast<double>(p.value()[0].numel())));
  }
  const ImageFunction f = [&](const torch::Tensor& c, const torch::Tensor& s) { return g->forward(c, s); };
  const auto c = random_image(7, 32), s = random_image(8, 32);
  for (const auto baseline : {Baseline::Black, Baseline::Blurred})
    for (const std::string which : {"content", "style"}) {
      IntegratedGradientsOptions ig_options;
      ig_options.baseline = baseline;
      const auto ig = integrated_gradients(f, c, s, which, {}, ig_options);
      EXPECT_LT(ig.completeness_gap, 0.05) << which << " f(x) " << ig.f_input << " f(b) " << ig.f_baseline
                                           << " sum " << ig.attribution_sum << " steps " << ig.steps;
      EXPECT_LE(ig.steps, ig_options.max_steps);
      EXPECT_NE(ig.f_input, ig.f_baseline) << which;
    }
}

TEST(IntegratedGradients, UnknownInputOrBaselineIsAnError) {
  const Linear lin;
  EXPECT_THROW(integrated_gradients(lin.f(), random_image(1), random_image(2), "both"), ExplainError);
  EXPECT_THROW(parse_baseline("white"), ExplainError);
  EXPECT_EQ(parse_baseline("blurred"), Baseline::Blurred);
}

TEST(Baselines, BlackIsMinusOneAndBlurKeepsTheMeanButRemovesDetail) {
  auto checker = torch::zeros({3, 32, 32});
  for (int64_t y = 0; y < 32; ++y)
    for (int64_t x = 0; x < 32; ++x) checker.index_put_({Slice(), y, x}, ((x / 2 + y / 2) % 2) ? 0.8 : -0.8);
  EXPECT_TRUE(torch::equal(make_baseline(checker, Baseline::Black), torch::full_like(checker, -1.0)));
  const auto blurred = make_baseline(checker, Baseline::Blurred);
  EXPECT_NEAR(blurred.mean().item<double>(), checker.mean().item<double>(), 0.02);
  EXPECT_LT(blurred.std().item<double>(), 0.05 * checker.std().item<double>());
}

TEST(GradCam, HighlightsTheOnlyPatchTheCriticSees) {
  // Channel 0 of layer 1 is the red channel, the only one the logit reads:
  // Grad-CAM must be the red patch and nothing else.
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 2, 1).bias(false)), torch::nn::ReLU(),
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 1, 1).bias(false)));
  {
    torch::NoGradGuard no_grad;
    net[0]->as<torch::nn::Conv2d>()->weight.copy_(torch::tensor({1.f, 0.f, 0.f, 0.f, 1.f, 0.f}).view({2, 3, 1, 1}));
    net[2]->as<torch::nn::Conv2d>()->weight.copy_(torch::tensor({1.f, 0.f}).view({1, 2, 1, 1}));
  }
  auto image = torch::zeros({3, 16, 16});
  image.index_put_({0, Slice(0, 8), Slice(8, 16)}, 1.0);
  image.index_put_({1}, 1.0);  // green everywhere: seen by channel 1, ignored by the logit
  const auto cam = grad_cam(net, 1, image);
  auto expected = torch::zeros({16, 16});
  expected.index_put_({Slice(0, 8), Slice(8, 16)}, 1.0);
  EXPECT_TRUE(torch::allclose(cam.map, expected, 1e-5, 1e-6));
  EXPECT_NEAR(cam.score, 0.25, 1e-6);
  ASSERT_EQ(cam.channel_weights.size(), 2u);
  EXPECT_NEAR(cam.channel_weights[0], 1.0 / 256, 1e-9);
  EXPECT_EQ(cam.channel_weights[1], 0.0);
  EXPECT_THROW(grad_cam(net, 3, image), ExplainError);
}

Networks tiny_networks() {
  torch::manual_seed(0);
  models::GeneratorOptions g;
  g.encoder.width = 4;
  g.decoder.width = 4;
  models::DiscriminatorOptions d;
  d.width = 4;
  return {models::AdaINGenerator(g), models::PatchDiscriminator(d)};
}

TEST(FeatureMaps, LayerActivationsAreTheNetworksOwnIntermediates) {
  auto nets = tiny_networks();
  const auto c = random_image(1, 32), s = random_image(2, 32);
  torch::NoGradGuard no_grad;
  const auto features = nets.generator->encoder->forward_features(c.unsqueeze(0));
  EXPECT_TRUE(torch::allclose(layer_activation(nets, "relu1_1", c, s), features[0]));
  EXPECT_TRUE(torch::allclose(layer_activation(nets, "encoder.20", c, s), features[3]));
  const auto output = nets.generator->forward(c.unsqueeze(0), s.unsqueeze(0));
  const auto last_decoder = "decoder." + std::to_string(nets.generator->decoder->layers->size() - 1);
  EXPECT_TRUE(torch::allclose(layer_activation(nets, last_decoder, c, s), output));
  const auto last_d = "discriminator." + std::to_string(nets.discriminator->layers->size() - 1);
  EXPECT_TRUE(torch::allclose(layer_activation(nets, last_d, c, s), nets.discriminator->forward(output)));
  EXPECT_EQ(layer_names(nets).size(), 4 + 21 + nets.generator->decoder->layers->size() +
                                           nets.discriminator->layers->size());
  try {
    layer_activation(nets, "decoder.99", c, s);
    FAIL() << "no error for decoder.99";
  } catch (const ExplainError& e) {
    EXPECT_NE(std::string(e.what()).find("decoder.99"), std::string::npos) << e.what();
  }
}

TEST(FeatureMaps, TopChannelsAreTheLargestMeansInOrder) {
  auto activation = torch::zeros({1, 4, 2, 2});
  activation[0][0] = 1.0;
  activation[0][2] = 3.0;
  activation[0][3] = 2.0;
  const auto top = top_channels(activation, 2);
  EXPECT_EQ(top.channels, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(top.means, (std::vector<double>{3.0, 2.0}));
  EXPECT_TRUE(torch::equal(top.maps[0], activation[0][2]));
}

TEST(AdaINStatistics, ShiftIsTheChangeOfChannelMeanAndStd) {
  // Content channel c is constant c; style channel c alternates c +- (2 - c).
  auto content = torch::zeros({1, 3, 2, 2}), style = torch::zeros({1, 3, 2, 2});
  for (int64_t c = 0; c < 3; ++c) {
    content[0][c] = static_cast<double>(c);
    style[0][c] = torch::tensor({{c + (2.0 - c), c - (2.0 - c)}, {c + (2.0 - c), c - (2.0 - c)}});
  }
  const auto shift = adain_shift(content, style, 3);
  EXPECT_EQ(shift.channels, (std::vector<int64_t>{0, 1, 2}));  // std shift 2, 1, 0
  EXPECT_NEAR(shift.style_std[0], std::sqrt(4.0 + 1e-5), 1e-6);
  EXPECT_NEAR(shift.content_std[0], std::sqrt(1e-5), 1e-6);
  EXPECT_NEAR(shift.mean_shift_total, 0.0, 1e-6);
  EXPECT_NEAR(shift.std_shift_total, 3.0, 1e-2);
}

TEST(StyleContribution, PartsSumToTheTrainingStyleLoss) {
  torch::manual_seed(3);
  const std::vector<torch::Tensor> out = {torch::randn({2, 8, 6, 6}), torch::randn({2, 16, 3, 3})};
  const std::vector<torch::Tensor> style = {torch::randn({2, 8, 6, 6}), torch::randn({2, 16, 3, 3})};
  for (const auto kind : {models::StyleStatistics::MeanStd, models::StyleStatistics::Gram,
                          models::StyleStatistics::Both}) {
    const auto parts = style_contribution(out, style, kind, 4);
    EXPECT_NEAR(parts.total, models::style_loss(out, style, kind).item<double>(), 1e-5);
    for (size_t l = 0; l < parts.per_layer.size(); ++l) {
      double sum = 0;
      for (double v : parts.per_group[l]) sum += v;
      EXPECT_NEAR(sum, parts.per_layer[l], 1e-9);
      EXPECT_EQ(parts.per_group[l].size(), 4u);
    }
  }
}

TEST(AlphaSweep, RunsFromContentOnlyToFullStyle) {
  auto nets = tiny_networks();
  const auto c = random_image(1, 32), s = random_image(2, 32);
  const auto sweep = alpha_sweep(nets.generator, c, s, 3, models::StyleStatistics::MeanStd);
  EXPECT_EQ(sweep.alphas, (std::vector<double>{0.0, 0.5, 1.0}));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(sweep.outputs[0], nets.generator->forward(c.unsqueeze(0), s.unsqueeze(0), 0.0)[0]));
  EXPECT_TRUE(torch::allclose(sweep.outputs[2], nets.generator->forward(c.unsqueeze(0), s.unsqueeze(0), 1.0)[0]));
  EXPECT_EQ(sweep.style_loss.size(), 3u);
}

TEST(Occlusion, OnlyTheOddPatchOfTheStyleImageMatters) {
  // Style is 0 (what occlusion paints) except one 8x8 patch of ones; the
  // "generator" passes the style through, the features are the image.
  auto style = torch::zeros({3, 32, 32});
  style.index_put_({Slice(), Slice(8, 16), Slice(16, 24)}, 1.0);
  const ImageFunction f = [](const torch::Tensor& c, const torch::Tensor& s) { return s + 0 * c; };
  const FeatureFunction identity = [](const torch::Tensor& x) { return std::vector<torch::Tensor>{x}; };
  const auto occ = occlusion(f, identity, random_image(1, 32), style, 8);
  ASSERT_EQ(occ.change.sizes(), (std::vector<int64_t>{4, 4}));
  const double p = 1.0 / 16, eps = 1e-5;
  const double expected = std::sqrt(3 * (p * p + std::pow(std::sqrt(p * (1 - p) + eps) - std::sqrt(eps), 2)));
  EXPECT_NEAR(occ.change[1][2].item<double>(), expected, 1e-4);
  occ.change[1][2] = 0.0;
  EXPECT_EQ(occ.change.abs().sum().item<double>(), 0.0);
}

TEST(AdversarialProbe, OnALinearFunctionTheChangeIsTheSlopeTimesTheBudget) {
  // f = 0.5 c: any sign perturbation of size eps (2 * budget in image units)
  // changes every output pixel by 0.5 * eps, i.e. by `budget`.
  const ImageFunction f = [](const torch::Tensor& c, const torch::Tensor& s) { return 0.5 * c + 0 * s; };
  ProbeOptions options;
  options.target_change = 0.05;
  const auto probe = adversarial_probe(f, random_image(1), random_image(2), options);
  for (size_t i = 0; i < probe.budgets.size(); ++i) {
    EXPECT_NEAR(probe.fgsm_change[i], probe.budgets[i], 1e-5);
    EXPECT_NEAR(probe.pgd_change[i], probe.budgets[i], 1e-5);
  }
  EXPECT_NEAR(probe.smallest_budget, 0.05, 1e-4);
  options.target_change = 10;
  EXPECT_EQ(adversarial_probe(f, random_image(1), random_image(2), options).smallest_budget, -1);
}

TEST(TrustChecks, SpearmanMatchesHandComputedValues) {
  EXPECT_NEAR(spearman(torch::tensor({1., 2., 3., 4.}), torch::tensor({10., 20., 30., 40.})), 1.0, 1e-12);
  EXPECT_NEAR(spearman(torch::tensor({1., 2., 3., 4.}), torch::tensor({4., 3., 2., 1.})), -1.0, 1e-12);
  EXPECT_NEAR(spearman(torch::tensor({1., 2., 3., 4.}), torch::tensor({1., 3., 2., 4.})), 0.8, 1e-12);
  // Ties take the mean rank: ranks (0.5, 0.5, 2) against (0, 1, 2) correlate at sqrt(3)/2.
  EXPECT_NEAR(spearman(torch::tensor({5., 5., 9.}), torch::tensor({1., 2., 3.})), std::sqrt(3.0) / 2, 1e-12);
  EXPECT_THROW(spearman(torch::ones({3}), torch::ones({4})), ExplainError);
}

TEST(TrustChecks, DeletionByTheTrueAttributionChangesTheOutputSooner) {
  // Only the top-left quarter of the content reaches the output.
  auto a = torch::zeros({1, 3, kSize, kSize});
  a.index_put_({Slice(), Slice(), Slice(0, 8), Slice(0, 8)}, 1.0);
  const ImageFunction f = [a](const torch::Tensor& c, const torch::Tensor& s) { return a * c + 0 * s; };
  const auto c = random_image(1), s = random_image(2);
  const auto truth = saliency(f, c, s);
  const auto curve = deletion_curve(f, c, s, pixel_map(truth.content), make_baseline(c, Baseline::Black), {}, 8, 3);
  EXPECT_EQ(curve.by_attribution.front(), 0.0);
  EXPECT_NEAR(curve.by_attribution.back(), curve.random.back(), 1e-6);
  // The quarter is gone after 2 of 8 steps; from there on the curve is flat at its maximum.
  EXPECT_NEAR(curve.by_attribution[2], curve.by_attribution.back(), 1e-6);
  EXPECT_GT(curve.auc_attribution, curve.auc_random);
}

}  // namespace
}  // namespace atelier::explain
