// The trained half of AdaIN: the decoder, and the generator that wires the
// frozen encoder, AdaIN and the decoder together.
#include "models/models.h"

#include <cmath>
#include <sstream>

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

// Mirror of VGG-19's relu4_1 .. conv1_1: each encoder pool becomes an upsample.
torch::nn::Sequential vgg_mirror(int64_t w) {
  torch::nn::Sequential layers;
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
  return layers;
}

// From `in` channels at 1/2^ups of the image: per upsampling a conv to
// 2^(ups - 1 - i) * w channels, x2, a conv; then a conv to RGB.
torch::nn::Sequential upsampling_decoder(int64_t in, int64_t ups, int64_t w) {
  torch::nn::Sequential layers;
  int64_t channels = in;
  for (int64_t i = 0; i < ups; ++i) {
    const int64_t out = (int64_t{1} << (ups - 1 - i)) * w;
    add_conv(layers, channels, out, /*relu=*/true);
    add_upsample(layers);
    add_conv(layers, out, out, /*relu=*/true);
    channels = out;
  }
  add_conv(layers, channels, 3, /*relu=*/false);
  return layers;
}

void check_alpha(double alpha) {
  if (!(alpha >= 0.0 && alpha <= 1.0)) {
    throw ModelError("style strength alpha must be in [0, 1], got " + std::to_string(alpha));
  }
}

// Interpolation weights are a convex combination: anything else would push
// the mixed statistics outside the styles' range (or flip their sign).
void check_style_weights(const std::vector<double>& weights, size_t styles) {
  std::ostringstream list;
  double sum = 0.0;
  bool negative = false;
  for (size_t i = 0; i < weights.size(); ++i) {
    list << (i ? ", " : "") << weights[i];
    sum += weights[i];
    negative = negative || !(weights[i] >= 0.0);
  }
  if (styles == 0) throw ModelError("style mixing needs at least one style image");
  if (weights.size() != styles) {
    throw ModelError("style mixing needs one weight per style: " + std::to_string(styles) +
                     " styles, " + std::to_string(weights.size()) + " weights (" + list.str() + ")");
  }
  if (negative || !(std::abs(sum - 1.0) <= 1e-6)) {
    throw ModelError("style weights must be >= 0 and sum to 1, got " + list.str() + " (sum " +
                     std::to_string(sum) + ")");
  }
}

}  // namespace

DecoderImpl::DecoderImpl(const DecoderOptions& options_) : options(options_) {
  const int64_t w = options.width;
  if (w < 1) throw ModelError("decoder width must be positive, got " + std::to_string(w));
  if (options.in_channels < 0 || (options.in_channels > 0 && (options.upsamplings < 1 || options.upsamplings > 6)))
    throw ModelError("decoder needs 1..6 upsamplings for " + std::to_string(options.in_channels) +
                     " input channels, got " + std::to_string(options.upsamplings));
  layers = options.in_channels == 0 ? vgg_mirror(w) : upsampling_decoder(options.in_channels, options.upsamplings, w);
  if (options.output == "auto") options.output = options.weights_path.empty() ? "tanh" : "linear";
  if (options.output != "tanh" && options.output != "linear")
    throw ModelError("decoder output must be auto, tanh or linear, got '" + options.output + "'");
  // The original decoder is unbounded; tanh keeps outputs in the [-1, 1]
  // image range the discriminator sees for real images.
  if (options.output == "tanh") layers->push_back(torch::nn::Tanh());
  register_module("layers", layers);
  if (!options.weights_path.empty()) {
    const auto digits = [](const std::string& key) {
      const auto dot = key.find('.');
      return dot != std::string::npos && dot > 0 && dot < 4 &&
             key.substr(0, dot).find_first_not_of("0123456789") == std::string::npos;
    };
    load_adain(load_state_dict(options.weights_path, digits), options.weights_path);
  }
}

void DecoderImpl::load_adain(const std::map<std::string, torch::Tensor>& state, const std::string& source) {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // (ours, theirs): all checked before any copy
  int64_t last = -1;
  for (const auto& child : layers->named_children()) {
    auto* conv = child.value()->as<torch::nn::Conv2d>();
    if (conv == nullptr) continue;
    last = static_cast<int64_t>(copies.size());
    for (const auto& [field, ours] : {std::make_pair("weight", conv->weight), std::make_pair("bias", conv->bias)}) {
      const std::string key = child.key() + "." + field;
      const auto found = state.find(key);
      if (found == state.end()) throw ModelError(source + ": AdaIN decoder has no key '" + key + "'");
      if (found->second.sizes() != ours.sizes()) {
        std::ostringstream theirs, wanted;
        theirs << found->second.sizes();
        wanted << ours.sizes();
        throw ModelError(source + ": AdaIN decoder layer " + child.key() + " ('" + key + "') has shape " +
                         theirs.str() + " but a decoder of width " + std::to_string(options.width) + " needs " +
                         wanted.str());
      }
      copies.emplace_back(ours, found->second);
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [ours, theirs] : copies) ours.copy_(theirs);
  // AdaIN's last conv paints [0, 1]; ours paints [-1, 1]: y -> 2y - 1.
  copies[static_cast<size_t>(last)].first.mul_(2.0);
  copies[static_cast<size_t>(last) + 1].first.mul_(2.0).sub_(1.0);
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& features) {
  return layers->forward(features);
}

torch::Tensor DecoderImpl::decode(const torch::Tensor& features, const torch::Tensor& like) {
  auto image = forward(features);
  const auto h = like.size(-2), w = like.size(-1);
  if (image.size(-2) == h && image.size(-1) == w) return image;
  return torch::nn::functional::interpolate(
      image, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kBilinear).align_corners(false));
}

AdaINGeneratorImpl::AdaINGeneratorImpl(const GeneratorOptions& options) {
  const bool vgg = options.encoder.network == "vgg19";
  if (vgg && options.encoder.width != options.decoder.width) {
    throw ModelError("generator needs equal encoder and decoder widths, got encoder " +
                     std::to_string(options.encoder.width) + " and decoder " +
                     std::to_string(options.decoder.width));
  }
  encoder = register_module("encoder", Encoder(options.encoder));
  auto decoder_options = options.decoder;
  if (!vgg) {
    if (!decoder_options.weights_path.empty())
      throw ModelError("decoder weights '" + decoder_options.weights_path + "' are AdaIN's VGG decoder; the " +
                       encoder->options.network + " encoder needs a decoder of its own");
    decoder_options.in_channels = encoder->out_channels();
    decoder_options.upsamplings = static_cast<int64_t>(std::lround(std::log2(encoder->downsampling())));
  }
  decoder = register_module("decoder", Decoder(decoder_options));
}

AdaINGeneratorImpl::Output AdaINGeneratorImpl::stylize(const torch::Tensor& content,
                                                       const torch::Tensor& style, double alpha) {
  check_alpha(alpha);
  const auto content_features = encoder->forward(content);
  const auto style_features = encoder->forward(style);
  auto target = adain(content_features, style_features);
  target = alpha * target + (1.0 - alpha) * content_features;
  return {decoder->decode(target, content), target};
}

torch::Tensor AdaINGeneratorImpl::forward(const torch::Tensor& content, const torch::Tensor& style,
                                          double alpha) {
  return stylize(content, style, alpha).image;
}

AdaINGeneratorImpl::Output AdaINGeneratorImpl::stylize_mixed(const torch::Tensor& content,
                                                             const std::vector<torch::Tensor>& styles,
                                                             const std::vector<double>& weights,
                                                             double alpha) {
  check_alpha(alpha);
  check_style_weights(weights, styles.size());
  const auto content_features = encoder->forward(content);
  auto target = torch::zeros_like(content_features);
  for (size_t i = 0; i < styles.size(); ++i) {
    auto style_features = encoder->forward(styles[i]);
    if (style_features.size(0) == 1 && content_features.size(0) > 1) {
      style_features = style_features.expand({content_features.size(0), -1, -1, -1});
    }
    target = target + weights[i] * adain(content_features, style_features);
  }
  target = alpha * target + (1.0 - alpha) * content_features;
  return {decoder->decode(target, content), target};
}

std::vector<torch::Tensor> AdaINGeneratorImpl::trainable_parameters() const {
  return decoder->parameters();
}

}  // namespace atelier::models
