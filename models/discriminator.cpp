// The PatchGAN critic, laid out as pix2pix's NLayerDiscriminator.
#include "models/layers.h"
#include "models/models.h"

#include <algorithm>

namespace atelier::models {
namespace {

constexpr double kLeakySlope = 0.2;

void add_leaky_relu(torch::nn::Sequential& layers) {
  layers->push_back(
      torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(kLeakySlope)));
}

// A 4x4 conv, its normalisation and LeakyReLU. A bias in front of a
// normalisation would be subtracted right back out, so only the
// unnormalised variant has one.
void add_block(torch::nn::Sequential& layers, int64_t in, int64_t out, int64_t stride, Norm norm) {
  layers->push_back(torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 4).stride(stride).padding(1).bias(norm == Norm::None)));
  add_norm(layers, norm, out);
  add_leaky_relu(layers);
}

}  // namespace

void add_norm(torch::nn::Sequential& layers, Norm norm, int64_t channels) {
  switch (norm) {
    case Norm::Instance:
      // Non-affine and without running statistics, as pix2pix: each patch
      // set is normalised by its own statistics in training and evaluation.
      layers->push_back(torch::nn::InstanceNorm2d(
          torch::nn::InstanceNorm2dOptions(channels).affine(false).track_running_stats(false)));
      break;
    case Norm::Batch:
      layers->push_back(torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(channels)));
      break;
    case Norm::None:
      break;
  }
}

Norm parse_norm(const std::string& name) {
  if (name == "instance") return Norm::Instance;
  if (name == "batch") return Norm::Batch;
  if (name == "none") return Norm::None;
  throw ModelError("unknown discriminator norm '" + name + "' (allowed: instance, batch, none)");
}

PatchDiscriminatorImpl::PatchDiscriminatorImpl(const DiscriminatorOptions& options_)
    : options(options_) {
  const int64_t w = options.width;
  if (w < 1 || options.layers < 1) {
    throw ModelError("discriminator needs width >= 1 and layers >= 1, got width " +
                     std::to_string(w) + " and layers " + std::to_string(options.layers));
  }
  // Block n has w * min(2^n, 8) channels: doubling per block, capped at 8w as in pix2pix.
  const auto channels = [w](int64_t n) { return w * (int64_t{1} << std::min<int64_t>(n, 3)); };

  layers = torch::nn::Sequential();
  layers->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, w, 4).stride(2).padding(1)));
  add_leaky_relu(layers);
  for (int64_t n = 1; n < options.layers; ++n) {
    add_block(layers, channels(n - 1), channels(n), /*stride=*/2, options.norm);
  }
  add_block(layers, channels(options.layers - 1), channels(options.layers), /*stride=*/1,
            options.norm);
  layers->push_back(torch::nn::Conv2d(
      torch::nn::Conv2dOptions(channels(options.layers), 1, 4).stride(1).padding(1)));
  register_module("layers", layers);
  // pix2pix's init_weights('normal', 0.02); LibTorch's default (Kaiming
  // uniform) trains the critic noticeably faster than the generator.
  init_normal(*this, 0.02);
}

torch::Tensor PatchDiscriminatorImpl::forward(const torch::Tensor& images) {
  return layers->forward(images);
}

}  // namespace atelier::models
