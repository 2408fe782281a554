// SqueezeNet 1.1 with the shipped ImageNet weights: torchvision's layer
// list, read from the NumPy files of models/pretrained/squeezenet1_1/ after
// checking each against the directory's SHA256SUMS.
#include "models/layers.h"

#include <openssl/evp.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

namespace atelier::models {
namespace {

namespace fs = std::filesystem;

// The shipped network's convolutions: 26 (features 25, classifier 1).
constexpr int64_t kConvolutions = 26;

// (in, squeeze, expand) of the fire modules at features[3..12].
const std::map<int64_t, std::array<int64_t, 3>>& fire_specs() {
  static const std::map<int64_t, std::array<int64_t, 3>> specs = {
      {3, {64, 16, 64}},    {4, {128, 16, 64}},   {6, {128, 32, 128}},  {7, {256, 32, 128}},
      {9, {256, 48, 192}},  {10, {384, 48, 192}}, {11, {384, 64, 256}}, {12, {512, 64, 256}}};
  return specs;
}

std::string read_bytes(const fs::path& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError(what + " '" + path.string() + "' is missing or unreadable");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string sha256_hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(), nullptr) != 1)
    throw ModelError("OpenSSL could not compute a SHA-256");
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < size; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

// SHA256SUMS as sha256sum writes it: "<hex>  <path>" (or " *<path>") per line.
std::map<std::string, std::string> read_checksums(const fs::path& dir) {
  const auto file = dir / "SHA256SUMS";
  std::istringstream lines(read_bytes(file, "SqueezeNet 1.1 checksum list"));
  std::map<std::string, std::string> sums;
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string hex, name;
    if (!(fields >> hex >> name)) continue;
    if (!name.empty() && name[0] == '*') name.erase(0, 1);
    sums[name] = hex;
  }
  return sums;
}

std::string shape_text(const torch::Tensor& tensor) {
  std::ostringstream out;
  out << tensor.sizes();
  return out.str();
}

// One verified, parsed weight file.
torch::Tensor read_verified(const fs::path& dir, const std::map<std::string, std::string>& sums,
                            const std::string& name, const torch::Tensor& ours) {
  const auto path = dir / name;
  const auto bytes = read_bytes(path, "SqueezeNet 1.1 weight file");
  const auto listed = sums.find(name);
  if (listed == sums.end())
    throw ModelError("SqueezeNet 1.1 weight file '" + path.string() + "' is not listed in " +
                     (dir / "SHA256SUMS").string());
  const auto actual = sha256_hex(bytes);
  if (actual != listed->second)
    throw ModelError("SqueezeNet 1.1 weight file '" + path.string() + "' is corrupt: its SHA-256 is " + actual +
                     ", SHA256SUMS says " + listed->second);
  auto tensor = parse_npy(bytes, path.string());
  if (tensor.scalar_type() != torch::kFloat32 || tensor.sizes() != ours.sizes())
    throw ModelError("SqueezeNet 1.1 weight file '" + path.string() + "' holds " +
                     std::string(c10::toString(tensor.scalar_type())) + " " + shape_text(tensor) + ", expected Float " +
                     shape_text(ours));
  return tensor;
}

}  // namespace

const std::vector<SqueezeNetLayer>& squeezenet_layers() {
  static const std::vector<SqueezeNetLayer> layers = {
      {"relu1", 1, 64, 2},    {"fire1", 3, 128, 4},   {"fire2", 4, 128, 4},   {"fire3", 6, 256, 8},
      {"fire4", 7, 256, 8},   {"fire5", 9, 384, 16},  {"fire6", 10, 384, 16}, {"fire7", 11, 512, 16},
      {"fire8", 12, 512, 16}};
  return layers;
}

const SqueezeNetLayer& squeezenet_layer(const std::string& name) {
  std::string names;
  for (const auto& layer : squeezenet_layers()) {
    if (layer.name == name) return layer;
    names += (names.empty() ? "" : ", ") + layer.name;
  }
  throw ModelError("SqueezeNet 1.1 has no layer '" + name + "' (its layers: " + names + ")");
}

std::string default_squeezenet_dir() {
  if (const char* dir = std::getenv("ATELIER_PRETRAINED_DIR"); dir != nullptr && *dir != '\0')
    return (fs::path(dir) / "squeezenet1_1").string();
  return (fs::path(data_dir()) / "models" / "pretrained" / "squeezenet1_1").string();
}

void load_squeezenet_weights(const std::string& weights_dir, const std::vector<torch::nn::Conv2d>& convs) {
  if (static_cast<int64_t>(convs.size()) > kConvolutions)
    throw ModelError("SqueezeNet 1.1 has 26 convolutions, asked to load " + std::to_string(convs.size()));
  const fs::path dir(weights_dir);
  if (!fs::is_directory(dir))
    throw ModelError("SqueezeNet 1.1 weights: directory '" + weights_dir + "' does not exist");
  const auto sums = read_checksums(dir);
  // Every file is checked before any is copied: a bad one leaves the network as it was.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // (ours, theirs)
  for (size_t i = 0; i < convs.size(); ++i) {
    const std::string stem = "weights/squeezenet0_conv" + std::to_string(i) + "_";
    copies.emplace_back(convs[i]->weight, read_verified(dir, sums, stem + "weight.npy", convs[i]->weight));
    copies.emplace_back(convs[i]->bias, read_verified(dir, sums, stem + "bias.npy", convs[i]->bias));
  }
  torch::NoGradGuard no_grad;
  for (auto& [ours, theirs] : copies) ours.copy_(theirs);
}

FireImpl::FireImpl(int64_t in, int64_t squeeze_channels, int64_t expand) {
  squeeze = register_module("squeeze", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, squeeze_channels, 1)));
  expand1x1 = register_module("expand1x1", torch::nn::Conv2d(torch::nn::Conv2dOptions(squeeze_channels, expand, 1)));
  expand3x3 = register_module(
      "expand3x3", torch::nn::Conv2d(torch::nn::Conv2dOptions(squeeze_channels, expand, 3).padding(1)));
}

torch::Tensor FireImpl::forward(const torch::Tensor& x) {
  const auto s = torch::relu(squeeze->forward(x));
  return torch::cat({torch::relu(expand1x1->forward(s)), torch::relu(expand3x3->forward(s))}, 1);
}

void add_squeezenet_layer(torch::nn::Sequential& layers, int64_t index) {
  // By value: Sequential's push_back(std::string, module) takes no const reference.
  std::string name = std::to_string(index);
  if (index == 0) {
    layers->push_back(std::move(name), torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 64, 3).stride(2)));
  } else if (index == 1) {
    layers->push_back(std::move(name), torch::nn::ReLU());
  } else if (index == 2 || index == 5 || index == 8) {
    layers->push_back(std::move(name), torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).ceil_mode(true)));
  } else if (const auto fire = fire_specs().find(index); fire != fire_specs().end()) {
    const auto& [in, squeeze, expand] = fire->second;
    layers->push_back(std::move(name), Fire(in, squeeze, expand));
  } else {
    throw ModelError("SqueezeNet 1.1 has features 0..12, not " + std::to_string(index));
  }
}

SqueezeNetImpl::SqueezeNetImpl(const std::string& weights_dir, bool with_classifier) {
  const GlobalRngStateGuard restore_global_rng;
  features = torch::nn::Sequential();
  for (int64_t i = 0; i <= 12; ++i) add_squeezenet_layer(features, i);
  register_module("features", features);
  if (with_classifier)
    classifier = register_module("classifier", torch::nn::Conv2d(torch::nn::Conv2dOptions(512, 1000, 1)));
  load_squeezenet_weights(weights_dir, convolutions(*this));
  register_imagenet_statistics(*this);
  for (auto& parameter : parameters()) parameter.set_requires_grad(false);
}

torch::Tensor SqueezeNetImpl::input(const torch::Tensor& images) {
  return imagenet_normalised(*this, (images + 1.0) * 0.5);
}

std::vector<torch::Tensor> SqueezeNetImpl::features_at(const torch::Tensor& normalised,
                                                       const std::vector<int64_t>& indices) {
  std::vector<torch::Tensor> out;
  auto x = normalised;
  size_t next = 0;
  int64_t i = 0;
  for (auto& layer : *features) {
    if (next == indices.size()) break;
    x = layer.forward(x);
    if (indices[next] == i++) {
      out.push_back(x);
      ++next;
    }
  }
  if (next != indices.size()) throw ModelError("SqueezeNet 1.1 feature indices must ascend within 0..12");
  return out;
}

torch::Tensor SqueezeNetImpl::logits(const torch::Tensor& normalised) {
  if (!classifier) throw ModelError("this SqueezeNet was built without its classifier");
  const auto x = torch::relu(classifier->forward(features->forward(normalised)));
  return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
}

}  // namespace atelier::models
