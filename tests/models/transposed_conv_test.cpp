// TransposedConv2d against torch::nn::ConvTranspose2d: same parameters, same
// initialisation, same outputs and gradients, over the geometries a
// transposed convolution can have.
#include <gtest/gtest.h>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "models/models.h"

namespace atelier::models {
namespace {

using Options = torch::nn::ConvTranspose2dOptions;

struct Case {
  const char* name;
  Options options;
  std::vector<int64_t> input;
};

void expect_close(const torch::Tensor& ours, const torch::Tensor& torchs, const std::string& what) {
  ASSERT_EQ(ours.sizes(), torchs.sizes()) << what;
  const double scale = torchs.abs().max().item<double>();
  EXPECT_LE((ours - torchs).abs().max().item<double>(), 1e-5 * std::max(1.0, scale)) << what;
}

// Both layers from the same seed, the same input and the same arbitrary
// upstream gradient (a random weighting of the output, so no gradient is a
// plain sum).
void expect_same_as_torch(const Case& c) {
  SCOPED_TRACE(c.name);
  torch::manual_seed(7);
  TransposedConv2d ours(c.options);
  torch::manual_seed(7);
  torch::nn::ConvTranspose2d reference(c.options);
  ASSERT_TRUE(torch::equal(ours->weight, reference->weight));
  if (c.options.bias()) {
    ASSERT_TRUE(torch::equal(ours->bias, reference->bias));
  }

  const auto x = torch::randn(c.input);
  const auto x_ours = x.clone().requires_grad_(), x_ref = x.clone().requires_grad_();
  const auto y_ours = ours->forward(x_ours), y_ref = reference->forward(x_ref);
  expect_close(y_ours, y_ref, "output");
  const auto upstream = torch::randn(y_ref.sizes());
  (y_ours * upstream).sum().backward();
  (y_ref * upstream).sum().backward();
  expect_close(x_ours.grad(), x_ref.grad(), "input gradient");
  expect_close(ours->weight.grad(), reference->weight.grad(), "weight gradient");
  if (c.options.bias()) expect_close(ours->bias.grad(), reference->bias.grad(), "bias gradient");
}

TEST(TransposedConv2d, MatchesTorchsConvTranspose2dOutputsAndGradients) {
  const std::vector<Case> cases = {
      {"CycleGAN's upsampling", Options(8, 4, 3).stride(2).padding(1).output_padding(1), {2, 8, 5, 7}},
      {"large enough for oneDNN", Options(32, 16, 3).stride(2).padding(1).output_padding(1), {1, 32, 24, 24}},
      {"stride 1", Options(3, 5, 3).padding(1), {1, 3, 6, 6}},
      {"stride 2, no output padding, no bias", Options(4, 6, 4).stride(2).padding(1).bias(false), {3, 4, 4, 5}},
      {"groups and dilation", Options(4, 6, 3).stride(3).groups(2).dilation(2).output_padding(1), {2, 4, 4, 3}},
      {"uneven stride and padding", Options(2, 3, {3, 2}).stride({2, 1}).padding({0, 1}), {1, 2, 3, 4}},
  };
  for (const auto& c : cases) expect_same_as_torch(c);
}

// NHWC in, NHWC out, and the numbers of the NCHW layer.
TEST(TransposedConv2d, KeepsAChannelsLastInputChannelsLast) {
  torch::manual_seed(7);
  TransposedConv2d layer(Options(32, 16, 3).stride(2).padding(1).output_padding(1));
  const auto x = torch::randn({2, 32, 12, 12});
  const auto nhwc = layer->forward(x.contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(nhwc.is_contiguous(at::MemoryFormat::ChannelsLast));
  expect_close(nhwc, layer->forward(x), "channels-last output");
}

// Under CPU autocast the layer computes in bf16 (LibTorch 1.13's own
// conv_transpose2d stays fp32 there: the reference is its fp32 result), and
// the weights' gradients arrive as fp32.
TEST(TransposedConv2d, UnderAutocastComputesInBf16) {
  torch::manual_seed(7);
  TransposedConv2d ours(Options(16, 8, 3).stride(2).padding(1).output_padding(1));
  torch::manual_seed(7);
  torch::nn::ConvTranspose2d reference(Options(16, 8, 3).stride(2).padding(1).output_padding(1));
  const auto x = torch::randn({2, 16, 8, 8});
  torch::Tensor y_ours, y_ref;
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  at::autocast::set_cpu_enabled(true);
  y_ours = ours->forward(x);
  at::autocast::set_cpu_enabled(false);
  at::autocast::clear_cache();
  y_ref = reference->forward(x);
  EXPECT_EQ(y_ours.scalar_type(), torch::kBFloat16);
  const double scale = y_ref.abs().max().item<double>();
  const double error = (y_ours.to(torch::kFloat) - y_ref).abs().max().item<double>();
  EXPECT_LE(error, 2e-2 * scale);
  EXPECT_GT(error, 0.0) << "bf16 arithmetic leaves some rounding";
  y_ours.to(torch::kFloat).sum().backward();
  ASSERT_TRUE(ours->weight.grad().defined());
  EXPECT_EQ(ours->weight.grad().scalar_type(), torch::kFloat);
  EXPECT_EQ(ours->bias.grad().scalar_type(), torch::kFloat);
}

TEST(TransposedConv2d, NeedsNoGradientForItsInputWhenTheInputHasNone) {
  TransposedConv2d layer(Options(3, 2, 3).stride(2).padding(1).output_padding(1));
  const auto y = layer->forward(torch::randn({1, 3, 4, 4}));
  y.sum().backward();
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 2, 8, 8}));
  EXPECT_TRUE(layer->weight.grad().defined());
  EXPECT_TRUE(layer->bias.grad().defined());
}

TEST(TransposedConv2d, KeepsConvTransposesParameterNames) {
  TransposedConv2d layer(Options(3, 2, 3));
  const auto named = layer->named_parameters();
  ASSERT_EQ(named.size(), 2u);
  EXPECT_EQ(named[0].key(), "weight");
  EXPECT_EQ(named[1].key(), "bias");
  EXPECT_EQ(named[0].value().sizes(), (std::vector<int64_t>{3, 2, 3, 3}));
}

TEST(TransposedConv2d, RefusesWhatItCannotComputeByName) {
  EXPECT_THROW(TransposedConv2d(Options(3, 2, 3).padding_mode(torch::kReflect)), ModelError);
  EXPECT_THROW(TransposedConv2d(Options(3, 2, 3).stride(2).output_padding(2)), ModelError);
  // torch accepts this one (output_padding below the dilation); this layer cannot compute it.
  EXPECT_THROW(TransposedConv2d(Options(3, 2, 3).dilation(2).output_padding(1)), ModelError);
  TransposedConv2d layer(Options(3, 2, 3));
  try {
    layer->forward(torch::randn({1, 4, 5, 5}));
    FAIL() << "4 channels into a 3-channel layer";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("[1, 4, 5, 5]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace atelier::models
