// Every loss in models/ against numbers worked out by hand on tensors small
// enough to check on paper.
#include "models/models.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace atelier::models {
namespace {

constexpr double kTolerance = 1e-5;

torch::Tensor values(std::vector<float> data) { return torch::tensor(data); }

double scalar(const torch::Tensor& loss) {
  EXPECT_EQ(loss.dim(), 0) << "losses must be scalars";
  return loss.item<double>();
}

// Expects `parse(bad)` to throw a ModelError quoting `bad` and listing `allowed`.
template <typename Parse>
void expect_parse_error(Parse parse, const std::string& bad, const std::string& allowed) {
  try {
    parse(bad);
    FAIL() << "expected ModelError for '" << bad << "'";
  } catch (const ModelError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'" + bad + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("(allowed: " + allowed + ")"), std::string::npos) << message;
  }
}

// Logits shared by the adversarial tests:
//   softplus(-0) = ln 2 = 0.6931472, softplus(-2) = ln(1 + e^-2) = 0.1269280
//   softplus(1) = ln(1 + e) = 1.3132617, softplus(-1) = 0.3132617
TEST(AdversarialLoss, BceDiscriminatorAveragesRealAndFakeTerms) {
  // real: mean(softplus(-0), softplus(-2)) = 0.4100376
  // fake: mean(softplus(1), softplus(-1)) = 0.8132617
  const auto loss = discriminator_loss(Adversarial::BCE, values({0, 2}), values({1, -1}));
  EXPECT_NEAR(scalar(loss), 0.5 * (0.4100376 + 0.8132617), kTolerance);
}

TEST(AdversarialLoss, LsganDiscriminatorIsHalfSquaredDistanceToTargets) {
  // real: mean((0-1)^2, (2-1)^2) = 1; fake: mean(0.25, 1) = 0.625
  const auto loss = discriminator_loss(Adversarial::LSGAN, values({0, 2}), values({0.5, 1}));
  EXPECT_NEAR(scalar(loss), 0.8125, kTolerance);
}

TEST(AdversarialLoss, HingeDiscriminatorIgnoresConfidentLogits) {
  // real: mean(relu(1), relu(-1)) = 0.5; fake: mean(relu(1.5), relu(-2)) = 0.75
  const auto loss = discriminator_loss(Adversarial::Hinge, values({0, 2}), values({0.5, -3}));
  EXPECT_NEAR(scalar(loss), 1.25, kTolerance);
}

TEST(AdversarialLoss, GeneratorLossPerKind) {
  // BCE: mean(softplus(-0), softplus(-2))
  EXPECT_NEAR(scalar(generator_adversarial_loss(Adversarial::BCE, values({0, 2}))), 0.4100376,
              kTolerance);
  // LSGAN: mean((0.5-1)^2, (1-1)^2) = 0.125
  EXPECT_NEAR(scalar(generator_adversarial_loss(Adversarial::LSGAN, values({0.5, 1}))), 0.125,
              kTolerance);
  // Hinge: -mean(0.5, -3) = 1.25
  EXPECT_NEAR(scalar(generator_adversarial_loss(Adversarial::Hinge, values({0.5, -3}))), 1.25,
              kTolerance);
}

TEST(AdversarialLoss, EveryKindIsDifferentiableInItsLogits) {
  for (Adversarial kind : {Adversarial::BCE, Adversarial::LSGAN, Adversarial::Hinge}) {
    // Logits inside the hinge margins, so every kind has a non-zero gradient.
    const auto real = values({0.3f, -0.2f}).requires_grad_();
    const auto fake = values({0.1f, 0.4f}).requires_grad_();
    discriminator_loss(kind, real, fake).backward();
    EXPECT_GT(real.grad().abs().sum().item<float>(), 0.0f);
    EXPECT_GT(fake.grad().abs().sum().item<float>(), 0.0f);

    const auto generated = values({0.1f, 0.4f}).requires_grad_();
    generator_adversarial_loss(kind, generated).backward();
    EXPECT_GT(generated.grad().abs().sum().item<float>(), 0.0f);
  }
}

TEST(AdversarialLoss, ParseAcceptsNamesAndListsAllowedOnesOnError) {
  EXPECT_EQ(parse_adversarial("bce"), Adversarial::BCE);
  EXPECT_EQ(parse_adversarial("lsgan"), Adversarial::LSGAN);
  EXPECT_EQ(parse_adversarial("hinge"), Adversarial::Hinge);
  expect_parse_error(parse_adversarial, "wgan", "bce, lsgan, hinge");
}

TEST(ContentLoss, IsMeanSquaredError) {
  // mean(1^2, 2^2) = 2.5
  EXPECT_NEAR(scalar(content_loss(values({1, 2}), values({0, 0}))), 2.5, kTolerance);
}

TEST(GramMatrix, IsChannelInnerProductsOverCHW) {
  // Channels (1, 2) and (3, 4); C*H*W = 4:
  // [[1+4, 3+8], [3+8, 9+16]] / 4 = [[1.25, 2.75], [2.75, 6.25]]
  const auto features = values({1, 2, 3, 4}).view({1, 2, 1, 2});
  const auto expected = values({1.25, 2.75, 2.75, 6.25}).view({1, 2, 2});
  const auto gram = gram_matrix(features);
  EXPECT_EQ(gram.sizes(), expected.sizes());
  EXPECT_TRUE(torch::allclose(gram, expected));
}

// One 1x1x1x2 layer: output (1, 3) has mean 2 and biased variance 1;
// style (0, 0) has mean 0 and variance 0.
class StyleLossOnOneLayer : public ::testing::Test {
 protected:
  std::vector<torch::Tensor> output{values({1, 3}).view({1, 1, 1, 2})};
  std::vector<torch::Tensor> style{values({0, 0}).view({1, 1, 1, 2})};
  // (2 - 0)^2 + (sqrt(1 + 1e-5) - sqrt(1e-5))^2
  const double mean_std = 4.0 + 0.9936954;
  // Grams 10/2 = 5 and 0: (5 - 0)^2
  const double gram = 25.0;
};

TEST_F(StyleLossOnOneLayer, MeanStdComparesChannelMeanAndStd) {
  EXPECT_NEAR(scalar(style_loss(output, style, StyleStatistics::MeanStd)), mean_std, kTolerance);
}

TEST_F(StyleLossOnOneLayer, GramComparesGramMatrices) {
  EXPECT_NEAR(scalar(style_loss(output, style, StyleStatistics::Gram)), gram, kTolerance);
}

TEST_F(StyleLossOnOneLayer, BothAddsMeanStdAndGram) {
  EXPECT_NEAR(scalar(style_loss(output, style, StyleStatistics::Both)), mean_std + gram,
              kTolerance);
}

TEST_F(StyleLossOnOneLayer, SumsOverLayers) {
  const std::vector<torch::Tensor> two_outputs{output[0], output[0]};
  const std::vector<torch::Tensor> two_styles{style[0], style[0]};
  EXPECT_NEAR(scalar(style_loss(two_outputs, two_styles, StyleStatistics::Both)),
              2 * (mean_std + gram), kTolerance);
}

TEST_F(StyleLossOnOneLayer, RejectsDifferentLayerCounts) {
  const std::vector<torch::Tensor> two_outputs{output[0], output[0]};
  EXPECT_THROW(style_loss(two_outputs, style, StyleStatistics::MeanStd), ModelError);
  EXPECT_THROW(style_loss({}, {}, StyleStatistics::MeanStd), ModelError);
}

TEST(StyleLoss, ParseAcceptsNamesAndListsAllowedOnesOnError) {
  EXPECT_EQ(parse_style_statistics("meanstd"), StyleStatistics::MeanStd);
  EXPECT_EQ(parse_style_statistics("gram"), StyleStatistics::Gram);
  EXPECT_EQ(parse_style_statistics("both"), StyleStatistics::Both);
  expect_parse_error(parse_style_statistics, "mean", "meanstd, gram, both");
}

TEST(TotalVariationLoss, IsMeanAbsoluteNeighbourDifference) {
  // Image [[1, 2], [4, 8]]: |dx| = (1, 4) -> 2.5, |dy| = (3, 6) -> 4.5
  const auto image = values({1, 2, 4, 8}).view({1, 1, 2, 2});
  EXPECT_NEAR(scalar(total_variation_loss(image)), 7.0, kTolerance);
}

TEST(TotalVariationLoss, RejectsImagesWithoutNeighbours) {
  EXPECT_THROW(total_variation_loss(torch::zeros({1, 3, 1, 8})), ModelError);
}

}  // namespace
}  // namespace atelier::models
