// CycleGAN's ResNet generator (Zhu et al. 2017, after Johnson et al. 2016),
// laid out as the reference implementation's ResnetGenerator.
#include "models/layers.h"
#include "models/models.h"

namespace atelier::models {
namespace {

// The reference gives convs a bias unless batch norm follows (instance norm
// is non-affine there, so the bias is kept as it is in its state dicts).
torch::nn::Conv2dOptions conv(int64_t in, int64_t out, int64_t kernel, Norm norm) {
  return torch::nn::Conv2dOptions(in, out, kernel).bias(norm != Norm::Batch);
}

}  // namespace

ResnetBlockImpl::ResnetBlockImpl(int64_t channels, Norm norm, bool dropout) {
  block = torch::nn::Sequential();
  block->push_back(torch::nn::ReflectionPad2d(1));
  block->push_back(torch::nn::Conv2d(conv(channels, channels, 3, norm)));
  add_norm(block, norm, channels);
  block->push_back(torch::nn::ReLU(true));
  if (dropout) block->push_back(torch::nn::Dropout(0.5));
  block->push_back(torch::nn::ReflectionPad2d(1));
  block->push_back(torch::nn::Conv2d(conv(channels, channels, 3, norm)));
  add_norm(block, norm, channels);
  register_module("conv_block", block);
}

torch::Tensor ResnetBlockImpl::forward(const torch::Tensor& x) { return x + block->forward(x); }

ResnetGeneratorImpl::ResnetGeneratorImpl(const ResnetGeneratorOptions& options_) : options(options_) {
  const int64_t w = options.width;
  if (w < 1 || options.blocks < 0)
    throw ModelError("resnet generator needs width >= 1 and blocks >= 0, got width " + std::to_string(w) +
                     " and blocks " + std::to_string(options.blocks));
  const Norm norm = options.norm;
  layers = torch::nn::Sequential();
  // c7s1-w
  layers->push_back(torch::nn::ReflectionPad2d(3));
  layers->push_back(torch::nn::Conv2d(conv(3, w, 7, norm)));
  add_norm(layers, norm, w);
  layers->push_back(torch::nn::ReLU(true));
  // d2w, d4w
  for (int64_t i = 0; i < 2; ++i) {
    const int64_t in = w << i;
    layers->push_back(torch::nn::Conv2d(conv(in, 2 * in, 3, norm).stride(2).padding(1)));
    add_norm(layers, norm, 2 * in);
    layers->push_back(torch::nn::ReLU(true));
  }
  for (int64_t i = 0; i < options.blocks; ++i) layers->push_back(ResnetBlock(4 * w, norm, options.dropout));
  // u2w, uw: fractionally strided convs that exactly undo the downsampling
  for (int64_t i = 2; i > 0; --i) {
    const int64_t in = w << i;
    layers->push_back(TransposedConv2d(torch::nn::ConvTranspose2dOptions(in, in / 2, 3)
                                                     .stride(2)
                                                     .padding(1)
                                                     .output_padding(1)
                                                     .bias(norm != Norm::Batch)));
    add_norm(layers, norm, in / 2);
    layers->push_back(torch::nn::ReLU(true));
  }
  // c7s1-3
  layers->push_back(torch::nn::ReflectionPad2d(3));
  layers->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(w, 3, 7)));
  layers->push_back(torch::nn::Tanh());
  register_module("model", layers);
  init_normal(*this, 0.02);
}

torch::Tensor ResnetGeneratorImpl::forward(const torch::Tensor& images) {
  if (images.dim() != 4 || images.size(1) != 3 || images.size(2) % 4 != 0 || images.size(3) % 4 != 0)
    throw ModelError("resnet generator takes [N, 3, H, W] images with H and W multiples of 4, got " +
                     c10::str(images.sizes()));
  return layers->forward(images);
}

void init_normal(torch::nn::Module& module, double std) {
  torch::NoGradGuard no_grad;
  for (auto& child : module.modules(/*include_self=*/false)) {
    if (auto* c = child->as<torch::nn::Conv2d>()) {
      c->weight.normal_(0.0, std);
      if (c->bias.defined()) c->bias.zero_();
    } else if (auto* t = child->as<TransposedConv2d>()) {
      t->weight.normal_(0.0, std);
      if (t->bias.defined()) t->bias.zero_();
    } else if (auto* b = child->as<torch::nn::BatchNorm2d>()) {
      b->weight.normal_(1.0, std);
      b->bias.zero_();
    }
  }
}

}  // namespace atelier::models
