// Shapes, gradient flow, determinism and AdaIN statistics of the networks in
// models/. Everything is tiny (width 4, 32 px) so the suite runs in seconds.
#include "models/models.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace atelier::models {
namespace {

constexpr int64_t kWidth = 4;

EncoderOptions tiny_encoder(uint64_t seed = 19) {
  EncoderOptions options;
  options.width = kWidth;
  options.random_seed = seed;
  return options;
}

GeneratorOptions tiny_generator() {
  GeneratorOptions options;
  options.encoder = tiny_encoder();
  options.decoder.width = kWidth;
  return options;
}

// Images in [-1, 1], as every model here expects.
torch::Tensor images(int64_t batch, int64_t size) {
  return torch::rand({batch, 3, size, size}) * 2.0 - 1.0;
}

// The encoder's convs under torchvision's keys, as a .pth file would hold them.
std::map<std::string, torch::Tensor> torchvision_state(Encoder& encoder) {
  std::map<std::string, torch::Tensor> state;
  for (auto& slice : encoder->slices) {
    for (const auto& item : slice->named_parameters()) {
      state["features." + item.key()] = item.value().detach().clone();
    }
  }
  return state;
}

void expect_same_parameters(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.named_parameters();
  const auto pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  }
}

TEST(VggEncoder, FeaturesHaveVggChannelsAndHalveResolutionPerBlock) {
  Encoder encoder(tiny_encoder());
  const auto features = encoder->forward_features(images(2, 32));
  ASSERT_EQ(features.size(), 4u);
  EXPECT_EQ(features[0].sizes(), (std::vector<int64_t>{2, kWidth, 32, 32}));
  EXPECT_EQ(features[1].sizes(), (std::vector<int64_t>{2, 2 * kWidth, 16, 16}));
  EXPECT_EQ(features[2].sizes(), (std::vector<int64_t>{2, 4 * kWidth, 8, 8}));
  EXPECT_EQ(features[3].sizes(), (std::vector<int64_t>{2, 8 * kWidth, 4, 4}));
  EXPECT_EQ(encoder->out_channels(), 8 * kWidth);
}

TEST(VggEncoder, ForwardIsRelu41Features) {
  Encoder encoder(tiny_encoder());
  const auto input = images(2, 32);
  EXPECT_TRUE(torch::equal(encoder->forward(input), encoder->forward_features(input).back()));
}

TEST(VggEncoder, NormalisationConstantsAreBuffersNotParameters) {
  Encoder encoder(tiny_encoder());
  EXPECT_EQ(encoder->named_buffers().size(), 2u);
  EXPECT_EQ(encoder->parameters().size(), 2u * 9u);  // 9 convs, weight and bias each
  EXPECT_FALSE(encoder->pretrained());
}

TEST(VggEncoder, RandomInitIsSameForSameSeedAndDiffersForAnother) {
  Encoder first(tiny_encoder(7));
  Encoder second(tiny_encoder(7));
  Encoder other(tiny_encoder(8));
  expect_same_parameters(*first, *second);
  EXPECT_FALSE(torch::equal(first->slices[3]->named_parameters()["19.weight"],
                            other->slices[3]->named_parameters()["19.weight"]));
}

TEST(VggEncoder, RandomInitLeavesGlobalRngStreamUntouched) {
  torch::manual_seed(123);
  const auto expected = torch::rand({8});
  torch::manual_seed(123);
  Encoder encoder(tiny_encoder());
  EXPECT_TRUE(torch::equal(torch::rand({8}), expected));
}

TEST(VggEncoder, LoadTorchvisionCopiesEveryConvByFeatureIndex) {
  Encoder source(tiny_encoder(1));
  Encoder target(tiny_encoder(2));
  target->load_torchvision(torchvision_state(source));
  expect_same_parameters(*source, *target);
  EXPECT_TRUE(target->pretrained());
}

TEST(VggEncoder, LoadTorchvisionNamesMissingKey) {
  Encoder source(tiny_encoder(1));
  Encoder target(tiny_encoder(2));
  auto state = torchvision_state(source);
  ASSERT_EQ(state.erase("features.10.weight"), 1u);
  try {
    target->load_torchvision(state);
    FAIL() << "expected ModelError";
  } catch (const ModelError& error) {
    EXPECT_NE(std::string(error.what()).find("'features.10.weight'"), std::string::npos)
        << error.what();
  }
  EXPECT_FALSE(target->pretrained());
}

TEST(VggEncoder, LoadTorchvisionNamesShapeMismatchAndLeavesWeightsUnchanged) {
  Encoder source(tiny_encoder(1));
  Encoder target(tiny_encoder(2));
  Encoder untouched(tiny_encoder(2));
  auto state = torchvision_state(source);
  state["features.5.weight"] = torch::zeros({7, kWidth, 3, 3});
  try {
    target->load_torchvision(state);
    FAIL() << "expected ModelError";
  } catch (const ModelError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'features.5.weight'"), std::string::npos) << message;
    EXPECT_NE(message.find("[7, 4, 3, 3]"), std::string::npos) << message;
    EXPECT_NE(message.find("[8, 4, 3, 3]"), std::string::npos) << message;
  }
  // Keys before index 5 were valid; they must not have been copied either.
  expect_same_parameters(*target, *untouched);
}

TEST(VggEncoder, PretrainedWeightsRequireVggWidth) {
  auto options = tiny_encoder();
  options.weights_path = "/nonexistent/vgg19.pth";
  EXPECT_THROW(Encoder{options}, ModelError);
}

TEST(AdaIN, ChannelMeanStdUsesBiasedVarianceWithEpsInsideSqrt) {
  const auto features = torch::tensor({1.0f, 3.0f}).view({1, 1, 1, 2});
  const auto [mean, std] = channel_mean_std(features, 1e-5);
  EXPECT_EQ(mean.sizes(), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_NEAR(mean.item<float>(), 2.0, 1e-6);
  EXPECT_NEAR(std.item<float>(), std::sqrt(1.0 + 1e-5), 1e-6);
}

// The two-pass moments against torch's mean and var, values and gradients,
// whether a loss uses both statistics or only one of them.
TEST(AdaIN, ChannelMeanStdMatchesTorchsMeanAndVarWithGradients) {
  torch::manual_seed(3);
  const auto x = torch::randn({2, 3, 5, 7}) * 2 + 1;
  const auto w_mean = torch::randn({2, 3, 1, 1}), w_std = torch::randn({2, 3, 1, 1});
  for (const auto& [use_mean, use_std] : {std::pair{true, true}, {true, false}, {false, true}}) {
    const auto ours = x.clone().requires_grad_(), torchs = x.clone().requires_grad_();
    const auto [mean, std] = channel_mean_std(ours, 1e-5);
    const auto ref_mean = torchs.mean({2, 3}, true);
    const auto ref_std = (torchs.var({2, 3}, /*unbiased=*/false, true) + 1e-5).sqrt();
    EXPECT_TRUE(torch::allclose(mean, ref_mean, 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(std, ref_std, 1e-5, 1e-6));
    const auto loss = [&](const torch::Tensor& m, const torch::Tensor& s) {
      auto total = torch::zeros({});
      if (use_mean) total = total + (m * w_mean).sum();
      if (use_std) total = total + (s * w_std).sum();
      return total;
    };
    loss(mean, std).backward();
    loss(ref_mean, ref_std).backward();
    EXPECT_TRUE(torch::allclose(ours.grad(), torchs.grad(), 1e-5, 1e-6)) << use_mean << use_std;
  }
}

TEST(AdaIN, OutputTakesStyleChannelMeanAndStd) {
  // Content spread wider than style: eps then shifts the output std by ~1e-6
  // (a style much wider than its content would amplify eps past the tolerance).
  torch::manual_seed(0);
  const auto content = torch::randn({2, 5, 8, 8}) * 2.0 + 1.0;
  const auto style = torch::randn({2, 5, 6, 6}) * 0.7 - 0.5;
  const auto [out_mean, out_std] = channel_mean_std(adain(content, style));
  const auto [style_mean, style_std] = channel_mean_std(style);
  EXPECT_TRUE(torch::allclose(out_mean, style_mean, /*rtol=*/0, /*atol=*/1e-4));
  EXPECT_TRUE(torch::allclose(out_std, style_std, /*rtol=*/0, /*atol=*/1e-4));
}

TEST(Decoder, RestoresImageSizeFromRelu41Features) {
  DecoderOptions options;
  options.width = kWidth;
  Decoder decoder(options);
  const auto image = decoder->forward(torch::randn({2, 8 * kWidth, 4, 4}));
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
}

TEST(Generator, ImageMatchesInputSizeAndLiesInUnitRange) {
  AdaINGenerator generator(tiny_generator());
  const auto output = generator->stylize(images(2, 32), images(2, 32));
  EXPECT_EQ(output.image.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_EQ(output.target.sizes(), (std::vector<int64_t>{2, 8 * kWidth, 4, 4}));
  EXPECT_GE(output.image.min().item<float>(), -1.0f);
  EXPECT_LE(output.image.max().item<float>(), 1.0f);
}

TEST(Generator, AlphaZeroDecodesContentFeatures) {
  AdaINGenerator generator(tiny_generator());
  const auto content = images(2, 32);
  const auto output = generator->stylize(content, images(2, 32), /*alpha=*/0.0);
  const auto content_features = generator->encoder->forward(content);
  EXPECT_TRUE(torch::allclose(output.target, content_features));
  EXPECT_TRUE(torch::allclose(output.image, generator->decoder->forward(content_features)));
}

TEST(Generator, RejectsAlphaOutsideUnitInterval) {
  AdaINGenerator generator(tiny_generator());
  EXPECT_THROW(generator->stylize(images(1, 32), images(1, 32), 1.5), ModelError);
  EXPECT_THROW(generator->stylize(images(1, 32), images(1, 32), -0.1), ModelError);
}

TEST(Generator, RejectsEncoderDecoderWidthMismatch) {
  auto options = tiny_generator();
  options.decoder.width = 2 * kWidth;
  EXPECT_THROW(AdaINGenerator{options}, ModelError);
}

TEST(Generator, GradientsReachDecoderButNotFrozenEncoder) {
  // Width 8 and a fixed seed: at width 4 LibTorch's default init can leave a
  // whole 4-channel ReLU layer dead, which would zero some gradients.
  torch::manual_seed(0);
  auto options = tiny_generator();
  options.encoder.width = options.decoder.width = 8;
  AdaINGenerator generator(options);
  const auto style = images(2, 32);
  const auto output = generator->stylize(images(2, 32), style);
  const auto output_features = generator->encoder->forward_features(output.image);
  const auto loss =
      content_loss(output_features.back(), output.target) +
      style_loss(output_features, generator->encoder->forward_features(style),
                 StyleStatistics::MeanStd);
  loss.backward();

  const auto trainable = generator->trainable_parameters();
  EXPECT_EQ(trainable.size(), generator->decoder->parameters().size());
  for (const auto& item : generator->decoder->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<float>(), 0.0f) << item.key();
  }
  for (const auto& parameter : generator->encoder->parameters()) {
    EXPECT_FALSE(parameter.requires_grad());
    EXPECT_FALSE(parameter.grad().defined());
  }
}

TEST(Discriminator, ParseNormNamesAllowedValues) {
  EXPECT_EQ(parse_norm("instance"), Norm::Instance);
  EXPECT_EQ(parse_norm("batch"), Norm::Batch);
  EXPECT_EQ(parse_norm("none"), Norm::None);
  try {
    parse_norm("layer");
    FAIL() << "expected ModelError";
  } catch (const ModelError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'layer'"), std::string::npos) << message;
    EXPECT_NE(message.find("instance, batch, none"), std::string::npos) << message;
  }
}

// 32 px: 16, 8, 4 after the strided convs, then 3 and 2 after the stride-1 ones.
TEST(Discriminator, PatchGridAt32And64PixelsForEveryNorm) {
  for (Norm norm : {Norm::Instance, Norm::Batch, Norm::None}) {
    DiscriminatorOptions options;
    options.width = 8;
    options.layers = 3;
    options.norm = norm;
    PatchDiscriminator discriminator(options);
    EXPECT_EQ(discriminator->forward(images(2, 32)).sizes(), (std::vector<int64_t>{2, 1, 2, 2}));
    EXPECT_EQ(discriminator->forward(images(2, 64)).sizes(), (std::vector<int64_t>{2, 1, 6, 6}));
  }
}

TEST(Discriminator, ConvsHaveBiasOnlyWithoutNorm) {
  for (Norm norm : {Norm::Instance, Norm::None}) {
    DiscriminatorOptions options;
    options.width = 8;
    options.norm = norm;
    PatchDiscriminator discriminator(options);
    // First and last conv always carry a bias; the 3 normalised ones only without a norm.
    int biases = 0;
    for (const auto& item : discriminator->named_parameters()) {
      biases += item.key().find("bias") != std::string::npos;
    }
    EXPECT_EQ(biases, norm == Norm::None ? 5 : 2);
  }
}

TEST(Discriminator, GradientsReachEveryParameter) {
  DiscriminatorOptions options;
  options.width = 8;
  options.norm = Norm::Batch;
  PatchDiscriminator discriminator(options);
  const auto loss = discriminator_loss(Adversarial::LSGAN, discriminator->forward(images(2, 32)),
                                       discriminator->forward(images(2, 32)));
  loss.backward();
  for (const auto& item : discriminator->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<float>(), 0.0f) << item.key();
  }
}

TEST(Discriminator, InitialConvWeightsHaveStd002) {
  DiscriminatorOptions options;
  options.width = 16;
  options.norm = Norm::Instance;
  PatchDiscriminator discriminator(options);
  // Layer 8 is the stride-1 4w -> 8w conv with 128*64*16 weights: its sample
  // std sits within 1e-4 of 0.02, while LibTorch's default init gives ~0.018.
  const auto weight = discriminator->layers->ptr(8)->as<torch::nn::Conv2d>()->weight;
  EXPECT_EQ(weight.size(1), 64);
  EXPECT_NEAR(weight.std().item<float>(), 0.02, 0.0005);
  EXPECT_NEAR(weight.mean().item<float>(), 0.0, 0.0005);
}

}  // namespace
}  // namespace atelier::models
