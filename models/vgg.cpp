// The frozen encoder (VGG-19's conv1_1 .. relu4_1, or the shipped SqueezeNet
// 1.1 up to its deepest tap) and adaptive instance normalisation, the two
// pieces of AdaIN that carry no trained weights.
#include "models/layers.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <sstream>

namespace atelier::models {
namespace {

// A VGG-19 layout up to relu4_1: each conv's index and its channels as
// multiples of `width` (0: the 3 RGB channels), the max pools' and the
// reflection pads' indices, and the last index of slice1..slice4 (relu1_1,
// relu2_1, relu3_1, relu4_1). Every other index is a ReLU.
struct ConvSpec {
  int index;
  int64_t in_multiple;
  int64_t out_multiple;
  int64_t kernel;
};
struct Layout {
  std::vector<ConvSpec> convs;
  std::vector<int> pools;
  std::vector<int> pads;  // ReflectionPad2d(1) layers; convs pad themselves (zeros) when there are none
  int slice_ends[4];
  bool ceil_pools;
  std::string key_prefix;  // of the state dict's keys: "features." or ""
};

// torchvision's vgg19().features.
const Layout& torchvision_layout() {
  static const Layout layout{{{0, 0, 1, 3}, {2, 1, 1, 3}, {5, 1, 2, 3}, {7, 2, 2, 3}, {10, 2, 4, 3},
                              {12, 4, 4, 3}, {14, 4, 4, 3}, {16, 4, 4, 3}, {19, 4, 8, 3}},
                             {4, 9, 18}, {}, {1, 6, 11, 20}, false, "features."};
  return layout;
}

// AdaIN's vgg_normalised (net.vgg of naoto0804/pytorch-AdaIN): a 1x1 conv
// (3 -> 3) first, every 3x3 conv after a ReflectionPad2d(1), ceil-mode
// pools; slices vgg[:4], vgg[4:11], vgg[11:18], vgg[18:31] as its encoder.
const Layout& adain_layout() {
  static const Layout layout{{{0, 0, 0, 1}, {2, 0, 1, 3}, {5, 1, 1, 3}, {9, 1, 2, 3}, {12, 2, 2, 3},
                              {16, 2, 4, 3}, {19, 4, 4, 3}, {22, 4, 4, 3}, {25, 4, 4, 3}, {29, 4, 8, 3}},
                             {7, 14, 27}, {1, 4, 8, 11, 15, 18, 21, 24, 28}, {3, 10, 17, 30}, true, ""};
  return layout;
}

const Layout& layout_of(const std::string& name) {
  return name == "adain" ? adain_layout() : torchvision_layout();
}

bool contains(const std::vector<int>& indices, int index) {
  return std::find(indices.begin(), indices.end(), index) != indices.end();
}

// ImageNet statistics torchvision's weights were trained with.
const std::vector<float> kImageNetMean = {0.485f, 0.456f, 0.406f};
const std::vector<float> kImageNetStd = {0.229f, 0.224f, 0.225f};

// Builds the layer at index `index` of `layout`.
torch::nn::AnyModule make_layer(const Layout& layout, int index, int64_t width) {
  for (const auto& conv : layout.convs) {
    if (conv.index != index) continue;
    const int64_t in = conv.in_multiple == 0 ? 3 : conv.in_multiple * width;
    const int64_t out = conv.out_multiple == 0 ? 3 : conv.out_multiple * width;
    const int64_t padding = layout.pads.empty() && conv.kernel == 3 ? 1 : 0;
    return torch::nn::AnyModule(
        torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, conv.kernel).padding(padding)));
  }
  if (contains(layout.pools, index))
    return torch::nn::AnyModule(
        torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2).ceil_mode(layout.ceil_pools)));
  if (contains(layout.pads, index))
    return torch::nn::AnyModule(torch::nn::ReflectionPad2d(torch::nn::ReflectionPad2dOptions(1)));
  return torch::nn::AnyModule(torch::nn::ReLU());
}

// Every conv keyed by its index in the layout. Layers inside a slice are
// named by that index (torchvision's slice3 holds "7".."11"), so
// `features.7.weight` is `slice3.7.weight` here.
std::map<int, torch::nn::Conv2dImpl*> convs_by_index(EncoderImpl& encoder) {
  std::map<int, torch::nn::Conv2dImpl*> convs;
  for (auto& slice : encoder.slices) {
    for (const auto& child : slice->named_children()) {
      if (auto* conv = child.value()->as<torch::nn::Conv2d>()) {
        convs[std::stoi(child.key())] = conv;
      }
    }
  }
  return convs;
}

// Kaiming-normal weights from a private generator: the loss network must be
// the same on every rank and every run, and drawing from the global RNG would
// shift every later random number the trainer draws. fan_in keeps activation
// magnitudes steady through the 9 ReLU convs, so deep features stay usable.
void init_random(EncoderImpl& encoder, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  torch::NoGradGuard no_grad;
  for (auto& [index, conv] : convs_by_index(encoder)) {
    (void)index;
    const auto fan_in = static_cast<double>(conv->weight[0].numel());
    conv->weight.normal_(0.0, std::sqrt(2.0 / fan_in), generator);
    conv->bias.zero_();
  }
}

// Keeps only the conv tensors up to relu4_1 of `layout`: the full files
// also hold the later blocks (and torchvision's the classifier), which we
// never use.
bool is_encoder_key(const Layout& layout, const std::string& key) {
  const std::string& prefix = layout.key_prefix;
  if (key.rfind(prefix, 0) != 0) return false;
  const auto dot = key.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return false;
  const std::string index = key.substr(prefix.size(), dot - prefix.size());
  if (index.find_first_not_of("0123456789") != std::string::npos || index.size() > 3) return false;
  const std::string field = key.substr(dot + 1);
  return std::stoi(index) <= layout.slice_ends[3] && (field == "weight" || field == "bias");
}

std::string shape_string(const torch::Tensor& tensor) {
  std::ostringstream out;
  out << tensor.sizes();
  return out.str();
}

}  // namespace

std::string detect_vgg_layout(const std::string& path) {
  const auto probe = load_state_dict(
      path, [](const std::string& key) { return key == "features.0.weight" || key == "0.weight"; });
  if (probe.count("features.0.weight") != 0) return "torchvision";
  const auto first = probe.find("0.weight");
  if (first != probe.end() && first->second.sizes() == torch::IntArrayRef({3, 3, 1, 1})) return "adain";
  throw ModelError(path + ": not a VGG-19 state dict atelier knows: neither torchvision's (no key "
                   "'features.0.weight') nor AdaIN's vgg_normalised (no key '0.weight' of shape [3, 3, 1, 1])");
}

std::string describe_vgg_layout(const std::string& layout) {
  return layout == "adain" ? "AdaIN normalised VGG" : "torchvision VGG-19";
}

namespace {

// "auto" becomes the file's layout (torchvision without a file); an
// explicit layout must be the file's.
std::string resolved_layout(const EncoderOptions& options) {
  const auto& asked = options.layout;
  if (asked != "auto" && asked != "torchvision" && asked != "adain")
    throw ModelError("encoder layout must be auto, torchvision or adain, got '" + asked + "'");
  if (options.weights_path.empty()) return asked == "auto" ? "torchvision" : asked;
  const auto found = detect_vgg_layout(options.weights_path);
  if (asked != "auto" && asked != found)
    throw ModelError(options.weights_path + " is a " + describe_vgg_layout(found) + " state dict, but layout '" +
                     asked + "' was asked for");
  return found;
}

}  // namespace

void register_imagenet_statistics(torch::nn::Module& module) {
  module.register_buffer("imagenet_mean", torch::tensor(kImageNetMean).view({1, 3, 1, 1}));
  module.register_buffer("imagenet_std", torch::tensor(kImageNetStd).view({1, 3, 1, 1}));
}

torch::Tensor imagenet_normalised(torch::nn::Module& module, const torch::Tensor& x01) {
  const auto buffers = module.named_buffers(/*recurse=*/false);
  return (x01 - buffers["imagenet_mean"]) / buffers["imagenet_std"];
}

std::vector<torch::nn::Conv2d> convolutions(torch::nn::Module& module) {
  std::vector<torch::nn::Conv2d> convs;
  for (const auto& child : module.modules(/*include_self=*/false))
    if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(child)) convs.emplace_back(conv);
  return convs;
}

std::string describe_encoder(const EncoderOptions& options) {
  if (options.network == "squeezenet1_1") return "SqueezeNet 1.1 (ImageNet)";
  if (!options.weights_path.empty())
    return options.layout == "adain" ? "VGG-19 (AdaIN's vgg_normalised, ImageNet)" : "VGG-19 (torchvision, ImageNet)";
  return "random VGG (width " + std::to_string(options.width) + ", seed " + std::to_string(options.random_seed) + ")";
}

EncoderImpl::EncoderImpl(const EncoderOptions& options_) : options(options_) {
  if (options.network == "vgg19") {
    build_vgg();
  } else if (options.network == "squeezenet1_1") {
    build_squeezenet();
  } else {
    throw ModelError("encoder network must be vgg19 or squeezenet1_1, got '" + options.network + "'");
  }
  for (size_t s = 0; s < slices.size(); ++s) register_module("slice" + std::to_string(s + 1), slices[s]);
  register_imagenet_statistics(*this);
  if (options.network == "squeezenet1_1") {
    load_squeezenet_weights(options.squeezenet_dir.empty() ? default_squeezenet_dir() : options.squeezenet_dir,
                            convolutions(*this));
    pretrained_ = true;
  } else if (options.weights_path.empty()) {
    init_random(*this, options.random_seed);
  } else {
    const Layout& layout = layout_of(options.layout);
    load_torchvision(load_state_dict(options.weights_path,
                                     [&layout](const std::string& key) { return is_encoder_key(layout, key); }));
  }
  for (auto& parameter : parameters()) parameter.set_requires_grad(false);
}

void EncoderImpl::build_vgg() {
  if (options.width < 1) {
    throw ModelError("encoder width must be positive, got " + std::to_string(options.width));
  }
  // The published weights exist only at VGG-19's own width.
  if (!options.weights_path.empty() && options.width != 64) {
    throw ModelError("encoder weights '" + options.weights_path + "' need width 64, got " +
                     std::to_string(options.width));
  }
  options.layout = resolved_layout(options);
  const Layout& layout = layout_of(options.layout);
  const GlobalRngStateGuard restore_global_rng;
  int index = 0;
  for (int s = 0; s < 4; ++s) {
    slices.push_back(torch::nn::Sequential());
    for (; index <= layout.slice_ends[s]; ++index) {
      slices.back()->push_back(std::to_string(index), make_layer(layout, index, options.width));
    }
    tap_ends_.push_back(layout.slice_ends[s]);
    tap_names_.push_back("relu" + std::to_string(s + 1) + "_1");
    style_slices_.push_back(static_cast<size_t>(s));
    style_names_.push_back(tap_names_.back());
    style_channels_.push_back((int64_t{1} << s) * options.width);
  }
  content_slice_ = 3;
  content_name_ = "relu4_1";
  out_channels_ = 8 * options.width;
  downsampling_ = 8;
}

void EncoderImpl::build_squeezenet() {
  const auto& content = squeezenet_layer(options.content_layer);
  if (options.style_layers.empty()) throw ModelError("SqueezeNet 1.1 encoder needs at least one style layer");
  std::vector<const SqueezeNetLayer*> taps = {&content};
  for (const auto& name : options.style_layers) taps.push_back(&squeezenet_layer(name));
  std::sort(taps.begin(), taps.end(), [](auto* a, auto* b) { return a->index < b->index; });
  taps.erase(std::unique(taps.begin(), taps.end()), taps.end());
  const GlobalRngStateGuard restore_global_rng;
  int64_t index = 0;
  for (const auto* tap : taps) {
    slices.push_back(torch::nn::Sequential());
    for (; index <= tap->index; ++index) add_squeezenet_layer(slices.back(), index);
    tap_ends_.push_back(tap->index);
    tap_names_.push_back(tap->name);
  }
  const auto slice_of = [&](const std::string& name) {
    return static_cast<size_t>(std::find(tap_names_.begin(), tap_names_.end(), name) - tap_names_.begin());
  };
  for (const auto& name : options.style_layers) {
    style_slices_.push_back(slice_of(name));
    style_names_.push_back(name);
    style_channels_.push_back(squeezenet_layer(name).channels);
  }
  content_slice_ = slice_of(content.name);
  content_name_ = content.name;
  out_channels_ = content.channels;
  downsampling_ = content.downsampling;
}

torch::Tensor EncoderImpl::input(const torch::Tensor& images) {
  const auto x01 = (images + 1.0) * 0.5;
  if (options.network == "vgg19" && options.layout == "adain") return x01;
  return imagenet_normalised(*this, x01);
}

EncodedFeatures EncoderImpl::encode(const torch::Tensor& images) {
  auto x = input(images);
  std::vector<torch::Tensor> taps;
  const size_t last = std::max(content_slice_, *std::max_element(style_slices_.begin(), style_slices_.end()));
  for (size_t s = 0; s <= last; ++s) {
    x = slices[s]->forward(x);
    taps.push_back(x);
  }
  EncodedFeatures out;
  out.content = taps[content_slice_];
  for (const auto s : style_slices_) out.style.push_back(taps[s]);
  return out;
}

std::vector<torch::Tensor> EncoderImpl::forward_features(const torch::Tensor& images) {
  return encode(images).style;
}

torch::Tensor EncoderImpl::forward(const torch::Tensor& images) {
  auto x = input(images);
  for (size_t s = 0; s <= content_slice_; ++s) x = slices[s]->forward(x);
  return x;
}

std::vector<std::pair<std::string, int64_t>> EncoderImpl::named_taps() const {
  std::vector<std::pair<std::string, int64_t>> taps;
  for (size_t s = 0; s < tap_ends_.size(); ++s) taps.emplace_back(tap_names_[s], tap_ends_[s]);
  return taps;
}

void EncoderImpl::load_torchvision(const std::map<std::string, torch::Tensor>& state) {
  const auto convs = convs_by_index(*this);
  const std::string& key_prefix = layout_of(options.layout).key_prefix;
  const std::string source = describe_vgg_layout(options.layout);
  // Check every tensor before copying any, so a bad file leaves the encoder as it was.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // (ours, theirs)
  for (const auto& [index, conv] : convs) {
    const std::string prefix = key_prefix + std::to_string(index) + ".";
    for (const auto& [field, ours] : {std::make_pair("weight", conv->weight),
                                      std::make_pair("bias", conv->bias)}) {
      const std::string key = prefix + field;
      const auto found = state.find(key);
      if (found == state.end()) {
        throw ModelError(source + " state dict has no key '" + key + "'");
      }
      if (found->second.sizes() != ours.sizes()) {
        throw ModelError(source + " key '" + key + "' has shape " +
                         shape_string(found->second) + ", expected " + shape_string(ours));
      }
      copies.emplace_back(ours, found->second);
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [ours, theirs] : copies) ours.copy_(theirs);
  pretrained_ = true;
}

std::pair<torch::Tensor, torch::Tensor> channel_mean_std(const torch::Tensor& features,
                                                         double eps) {
  if (features.dim() != 4) {
    throw ModelError("channel_mean_std expects NCHW features, got shape " +
                     shape_string(features));
  }
  const auto mean = features.mean({2, 3}, /*keepdim=*/true);
  const auto var = features.var({2, 3}, /*unbiased=*/false, /*keepdim=*/true);
  return {mean, (var + eps).sqrt()};
}

torch::Tensor adain(const torch::Tensor& content_features, const torch::Tensor& style_features,
                    double eps) {
  if (content_features.size(0) != style_features.size(0) ||
      content_features.size(1) != style_features.size(1)) {
    throw ModelError("adain needs content and style features with the same batch and channels, "
                     "got " + shape_string(content_features) + " and " +
                     shape_string(style_features));
  }
  const auto [content_mean, content_std] = channel_mean_std(content_features, eps);
  const auto [style_mean, style_std] = channel_mean_std(style_features, eps);
  return (content_features - content_mean) / content_std * style_std + style_mean;
}

}  // namespace atelier::models
