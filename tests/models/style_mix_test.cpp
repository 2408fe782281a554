// Style interpolation (AdaINGenerator::stylize_mixed): it reduces to
// stylize() for one style, mixing a style with itself changes nothing, and
// weights that are not a convex combination are refused by name.
#include "models/models.h"

#include <gtest/gtest.h>

#include <string>

namespace atelier::models {
namespace {

AdaINGenerator tiny_generator() {
  GeneratorOptions options;
  options.encoder.width = 4;
  options.decoder.width = 4;
  return AdaINGenerator(options);
}

torch::Tensor images(int64_t batch, int64_t height, int64_t width) {
  return torch::rand({batch, 3, height, width}) * 2.0 - 1.0;
}

TEST(StyleMix, OneStyleWithWeightOneEqualsStylize) {
  torch::manual_seed(1);
  auto g = tiny_generator();
  torch::NoGradGuard no_grad;
  const auto content = images(2, 32, 40);
  const auto style = images(2, 48, 24);  // a different size from the content
  for (double alpha : {1.0, 0.3}) {
    const auto single = g->stylize(content, style, alpha);
    const auto mixed = g->stylize_mixed(content, {style}, {1.0}, alpha);
    EXPECT_TRUE(torch::allclose(mixed.image, single.image, 1e-6, 1e-6)) << "alpha " << alpha;
    EXPECT_TRUE(torch::allclose(mixed.target, single.target, 1e-6, 1e-6)) << "alpha " << alpha;
  }
}

TEST(StyleMix, TwoIdenticalStylesAtHalfEqualOne) {
  torch::manual_seed(2);
  auto g = tiny_generator();
  torch::NoGradGuard no_grad;
  const auto content = images(1, 32, 32);
  const auto style = images(1, 40, 56);
  const auto one = g->stylize_mixed(content, {style}, {1.0}, 0.8);
  const auto two = g->stylize_mixed(content, {style, style}, {0.5, 0.5}, 0.8);
  EXPECT_TRUE(torch::allclose(two.image, one.image, 1e-5, 1e-6));
}

TEST(StyleMix, MixLiesBetweenItsStyles) {
  // t is linear in the weights, so the mixed target is the weighted sum of
  // the single-style targets (what makes interpolation a straight line).
  torch::manual_seed(3);
  auto g = tiny_generator();
  torch::NoGradGuard no_grad;
  const auto content = images(1, 32, 32);
  const auto a = images(1, 32, 32), b = images(1, 24, 40);
  const auto ta = g->stylize_mixed(content, {a}, {1.0}).target;
  const auto tb = g->stylize_mixed(content, {b}, {1.0}).target;
  const auto mixed = g->stylize_mixed(content, {a, b}, {0.25, 0.75}).target;
  EXPECT_TRUE(torch::allclose(mixed, 0.25 * ta + 0.75 * tb, 1e-5, 1e-5));
  EXPECT_FALSE(torch::allclose(ta, tb, 1e-3, 1e-3));
}

TEST(StyleMix, OneStyleImageAppliesToEveryContentImage) {
  torch::manual_seed(4);
  auto g = tiny_generator();
  torch::NoGradGuard no_grad;
  const auto content = images(3, 32, 32);
  const auto style = images(1, 40, 40);
  const auto batched = g->stylize_mixed(content, {style}, {1.0}).image;
  const auto repeated = g->stylize(content, style.expand({3, -1, -1, -1}).contiguous()).image;
  EXPECT_TRUE(torch::allclose(batched, repeated, 1e-5, 1e-6));
}

void expect_refused(AdaINGenerator& g, const std::vector<double>& weights, size_t styles,
                    const std::string& fragment) {
  const auto content = images(1, 32, 32);
  std::vector<torch::Tensor> style_images(styles, images(1, 32, 32));
  try {
    g->stylize_mixed(content, style_images, weights);
    ADD_FAILURE() << "weights accepted; expected an error containing '" << fragment << "'";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(StyleMix, WeightsMustBeAConvexCombinationOnePerStyle) {
  auto g = tiny_generator();
  torch::NoGradGuard no_grad;
  expect_refused(g, {0.5, 0.6}, 2, "0.5, 0.6");
  expect_refused(g, {1.5, -0.5}, 2, "-0.5");
  expect_refused(g, {0.5, 0.5}, 3, "one weight per style");
  expect_refused(g, {}, 0, "at least one style");
  EXPECT_NO_THROW(g->stylize_mixed(images(1, 32, 32), {images(1, 32, 32), images(1, 32, 32)},
                                   {0.3, 0.7 + 5e-7}));
  EXPECT_THROW(g->stylize_mixed(images(1, 32, 32), {images(1, 32, 32)}, {1.0}, 1.5), ModelError);
}

}  // namespace
}  // namespace atelier::models
