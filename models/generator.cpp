// The trained half of AdaIN: the decoder, and the generator that wires the
// frozen encoder, AdaIN and the decoder together.
#include "models/models.h"

namespace atelier::models {
namespace {

// Reflection padding instead of the conv's zero padding: zeros at the border
// show up as dark frames around every stylised image (Huang & Belongie's
// decoder makes the same choice).
void add_conv(torch::nn::Sequential& layers, int64_t in, int64_t out, bool relu) {
  layers->push_back(torch::nn::ReflectionPad2d(torch::nn::ReflectionPad2dOptions(1)));
  layers->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3)));
  if (relu) layers->push_back(torch::nn::ReLU());
}

void add_upsample(torch::nn::Sequential& layers) {
  layers->push_back(torch::nn::Upsample(torch::nn::UpsampleOptions()
                                            .scale_factor(std::vector<double>{2.0, 2.0})
                                            .mode(torch::kNearest)));
}

}  // namespace

DecoderImpl::DecoderImpl(const DecoderOptions& options_) : options(options_) {
  const int64_t w = options.width;
  if (w < 1) throw ModelError("decoder width must be positive, got " + std::to_string(w));
  layers = torch::nn::Sequential();
  // Mirror of relu4_1 .. conv1_1: each encoder pool becomes an upsample.
  add_conv(layers, 8 * w, 4 * w, /*relu=*/true);
  add_upsample(layers);
  for (int i = 0; i < 3; ++i) add_conv(layers, 4 * w, 4 * w, /*relu=*/true);
  add_conv(layers, 4 * w, 2 * w, /*relu=*/true);
  add_upsample(layers);
  add_conv(layers, 2 * w, 2 * w, /*relu=*/true);
  add_conv(layers, 2 * w, w, /*relu=*/true);
  add_upsample(layers);
  add_conv(layers, w, w, /*relu=*/true);
  add_conv(layers, w, 3, /*relu=*/false);
  // The original decoder is unbounded; tanh keeps outputs in the [-1, 1]
  // image range the discriminator sees for real images.
  layers->push_back(torch::nn::Tanh());
  register_module("layers", layers);
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& features) {
  return layers->forward(features);
}

AdaINGeneratorImpl::AdaINGeneratorImpl(const GeneratorOptions& options) {
  if (options.encoder.width != options.decoder.width) {
    throw ModelError("generator needs equal encoder and decoder widths, got encoder " +
                     std::to_string(options.encoder.width) + " and decoder " +
                     std::to_string(options.decoder.width));
  }
  encoder = register_module("encoder", VGGEncoder(options.encoder));
  decoder = register_module("decoder", Decoder(options.decoder));
}

AdaINGeneratorImpl::Output AdaINGeneratorImpl::stylize(const torch::Tensor& content,
                                                       const torch::Tensor& style, double alpha) {
  if (!(alpha >= 0.0 && alpha <= 1.0)) {
    throw ModelError("style strength alpha must be in [0, 1], got " + std::to_string(alpha));
  }
  const auto content_features = encoder->forward(content);
  const auto style_features = encoder->forward(style);
  auto target = adain(content_features, style_features);
  target = alpha * target + (1.0 - alpha) * content_features;
  return {decoder->forward(target), target};
}

torch::Tensor AdaINGeneratorImpl::forward(const torch::Tensor& content, const torch::Tensor& style,
                                          double alpha) {
  return stylize(content, style, alpha).image;
}

std::vector<torch::Tensor> AdaINGeneratorImpl::trainable_parameters() const {
  return decoder->parameters();
}

}  // namespace atelier::models
