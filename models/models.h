// models/ — the networks atelier trains and the losses that train them.
//
// AdaIN-GAN (Huang & Belongie 2017, plus a PatchGAN critic): a frozen VGG-19
// encoder up to relu4_1 (or the shipped SqueezeNet 1.1 up to a fire block)
// embeds content and style, adaptive instance
// normalisation moves the style's channel statistics onto the content
// features, a mirrored decoder turns them back into an image, and a 70x70
// PatchGAN discriminator judges stylised images against real style images.
// CycleGAN (Zhu et al. 2017): ResNet generators both ways between two image
// domains, PatchGANs and history pools (see its section below).
// Every image tensor here is float NCHW in [-1, 1].
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace atelier::models {

// A model file or option that cannot be used (bad state dict, unknown name).
struct ModelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------
// Loss network / encoder

struct EncoderOptions {
  int64_t width = 64;          // vgg19: channels of block 1; blocks 2..4 use 2x, 4x, 8x (VGG-19: 64)
  std::string weights_path;    // vgg19: state dict (.pth, see layout); empty = fixed random VGG
  uint64_t random_seed = 19;   // vgg19: seed of the fixed random VGG used when weights_path is empty
  // vgg19: "torchvision": torchvision's vgg19().features (zero padding,
  // ImageNet mean/std on RGB in [0, 1]); "adain": the `vgg_normalised.pth`
  // of AdaIN (Huang & Belongie; naoto0804/pytorch-AdaIN): a 1x1 input
  // convolution that does its own normalisation, reflection padding,
  // ceil-mode pools; "auto": detected from weights_path (torchvision without one).
  std::string layout = "auto";
  // The loss network (and AdaIN-GAN's encoder): "vgg19", or "squeezenet1_1"
  // with the shipped ImageNet weights (see SqueezeNet below). Last, so that
  // aggregate initialisation {width, weights_path} stays VGG's.
  std::string network = "vgg19";
  // squeezenet1_1: the weights' directory (empty: default_squeezenet_dir()),
  // the content layer (AdaIN's layer, the content loss's) and the style
  // layers, by squeezenet_layers(). vgg19's are fixed: relu4_1 and
  // relu1_1 .. relu4_1.
  std::string squeezenet_dir;
  std::string content_layer = "fire2";
  std::vector<std::string> style_layers = {"relu1", "fire2", "fire3", "fire4"};
};

// Which layout a VGG state dict file has: "torchvision" (features.0.weight)
// or "adain" (0.weight of shape [3, 3, 1, 1]). Throws ModelError naming the
// file when it is neither.
std::string detect_vgg_layout(const std::string& path);

// How a layout is named in logs: "torchvision VGG-19", "AdaIN normalised VGG".
std::string describe_vgg_layout(const std::string& layout);

// How a loss network is named in logs, reports and metric labels:
// "SqueezeNet 1.1 (ImageNet)", "VGG-19 (torchvision, ImageNet)", "random VGG (seed 19)".
std::string describe_encoder(const EncoderOptions& options);

// The content-layer features and the style-layer features of one pass.
struct EncodedFeatures {
  torch::Tensor content;
  std::vector<torch::Tensor> style;
};

// A frozen loss network cut into slices that end at its taps (the content
// and style layers, in depth order). VGG-19 up to relu4_1 in one of two
// layouts (EncoderOptions::layout): slices end at relu1_1 .. relu4_1, the
// content layer is the last; or SqueezeNet 1.1 up to its deepest tap. Takes
// images in [-1, 1] and applies the input normalisation its network expects.
struct EncoderImpl : torch::nn::Module {
  explicit EncoderImpl(const EncoderOptions& options);

  // Activations at the style layers, in options order.
  std::vector<torch::Tensor> forward_features(const torch::Tensor& images);
  // The content layer only (runs no further).
  torch::Tensor forward(const torch::Tensor& images);
  // Both, in one pass.
  EncodedFeatures encode(const torch::Tensor& images);
  // What the first layer sees: images in [-1, 1] normalised as the network
  // expects (ImageNet mean/std; AdaIN's layout: [0, 1], its 1x1 conv does the rest).
  torch::Tensor input(const torch::Tensor& images);

  // vgg19: copies the state dict's convolutions onto ours: torchvision keys
  // `features.<i>.weight|bias`, AdaIN's `<i>.weight|bias`, by the layout.
  // Throws ModelError naming a missing key or a shape mismatch.
  void load_torchvision(const std::map<std::string, torch::Tensor>& state);

  // Channels of the content layer, and its size as a fraction of the input's
  // (VGG: 1/8; SqueezeNet's fire2: about 1/4).
  int64_t out_channels() const { return out_channels_; }
  int64_t downsampling() const { return downsampling_; }
  // Channels of each style layer, and the names of the layers.
  const std::vector<int64_t>& style_channels() const { return style_channels_; }
  const std::vector<std::string>& style_layer_names() const { return style_names_; }
  const std::string& content_layer_name() const { return content_name_; }
  bool pretrained() const { return pretrained_; }
  // Each tap's name and index, counting the layers of all slices in order
  // (torchvision VGG: relu1_1 1, relu2_1 6, relu3_1 11, relu4_1 20).
  std::vector<std::pair<std::string, int64_t>> named_taps() const;

  EncoderOptions options;  // vgg19's layout resolved: "torchvision" or "adain"
  // Layers in order, cut after each tap; registered as slice1, slice2, ...
  std::vector<torch::nn::Sequential> slices;

 private:
  void build_vgg();
  void build_squeezenet();
  std::vector<int64_t> tap_ends_;            // global index of each slice's last layer
  std::vector<std::string> tap_names_;       // the layer name of each slice's end
  std::vector<size_t> style_slices_;         // slice whose output is each style layer
  size_t content_slice_ = 0;
  std::vector<int64_t> style_channels_;
  std::vector<std::string> style_names_;
  std::string content_name_;
  int64_t out_channels_ = 0, downsampling_ = 1;
  bool pretrained_ = false;
};
TORCH_MODULE(Encoder);

// SqueezeNet 1.1 (Iandola et al. 2016), ImageNet-trained: the one weight
// set atelier ships (models/pretrained/squeezenet1_1/, Apache-2.0, see its
// PROVENANCE.md): 26 convolutions as NumPy files plus SHA256SUMS.

// The shipped weights' directory: $ATELIER_PRETRAINED_DIR/squeezenet1_1
// when set, else data_dir()/models/pretrained/squeezenet1_1.
std::string default_squeezenet_dir();

// Where atelier's read-only data files (the shipped weights, the cluster
// profiles) are, in the source tree's layout: <prefix>/share/atelier when
// this binary runs as <prefix>/bin/atelier of an install (`cmake --install`,
// any prefix), else the source tree it was built from.
std::string data_dir();

// squeeze 1x1 -> ReLU -> concat(ReLU(expand 1x1), ReLU(expand 3x3, padding 1)),
// torchvision's Fire.
struct FireImpl : torch::nn::Module {
  FireImpl(int64_t in, int64_t squeeze, int64_t expand);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d squeeze{nullptr}, expand1x1{nullptr}, expand3x3{nullptr};
};
TORCH_MODULE(Fire);

// torchvision's squeezenet1_1(): `features` with torchvision's indices (0
// conv 3->64 stride 2, 1 ReLU, 2 max pool, 3-4 fire, 5 pool, 6-7 fire, 8
// pool, 9-12 fire; pools 3x3 stride 2, ceil mode) and, on request, the
// 512->1000 classifier convolution. Frozen. Built from `weights_dir` (which
// must hold weights/ and SHA256SUMS): every file is checked against its
// checksum and shape before any is used; ModelError names the file that is
// missing, corrupt or of the wrong shape.
struct SqueezeNetImpl : torch::nn::Module {
  explicit SqueezeNetImpl(const std::string& weights_dir, bool classifier = false);

  // Images in [-1, 1] normalised with ImageNet's mean and std, as trained.
  torch::Tensor input(const torch::Tensor& images);
  // The activations after features[i] for each i of `indices` (ascending,
  // each in 0..12): one pass, stopping at the last index.
  std::vector<torch::Tensor> features_at(const torch::Tensor& normalised, const std::vector<int64_t>& indices);
  // [N, 1000] ImageNet logits of normalised input (needs classifier).
  torch::Tensor logits(const torch::Tensor& normalised);

  torch::nn::Sequential features{nullptr};
  torch::nn::Conv2d classifier{nullptr};
};
TORCH_MODULE(SqueezeNet);

// Appends SqueezeNet 1.1's features[index] to `layers`, named by its index.
void add_squeezenet_layer(torch::nn::Sequential& layers, int64_t index);

// The names of SqueezeNet 1.1's layers that can be content or style layers,
// with their features index, output channels and downsampling: relu1 (1, 64
// channels, 1/2), fire1 .. fire8 (3, 4, 6, 7, 9, 10, 11, 12; 128, 128, 256,
// 256, 384, 384, 512, 512 channels; 1/4, 1/4, 1/8, 1/8, 1/16 ...).
struct SqueezeNetLayer {
  std::string name;
  int64_t index;
  int64_t channels;
  int64_t downsampling;
};
const std::vector<SqueezeNetLayer>& squeezenet_layers();
// The layer called `name`; ModelError listing the names otherwise.
const SqueezeNetLayer& squeezenet_layer(const std::string& name);

// Copies the shipped weights (weights_dir/weights/squeezenet0_conv<i>_*.npy)
// onto `convs`, SqueezeNet's convolutions in network order (a prefix of the
// 26), after verifying each file read against weights_dir/SHA256SUMS.
void load_squeezenet_weights(const std::string& weights_dir, const std::vector<torch::nn::Conv2d>& convs);

// NumPy .npy arrays (format 1-3, C order, little-endian): the tensor on
// CPU with the file's dtype and shape. Throws ModelError naming the file.
torch::Tensor load_npy(const std::string& path);
// The same from bytes in memory; `name` names them in errors.
torch::Tensor parse_npy(const std::string& bytes, const std::string& name);

// Channel mean and standard deviation over H and W: two [N, C, 1, 1] tensors.
// std = sqrt(var + eps) with the biased variance.
std::pair<torch::Tensor, torch::Tensor> channel_mean_std(const torch::Tensor& features,
                                                         double eps = 1e-5);

// Adaptive instance normalisation: content features normalised per channel,
// then scaled and shifted to the style features' channel mean and std.
torch::Tensor adain(const torch::Tensor& content_features, const torch::Tensor& style_features,
                    double eps = 1e-5);

// ---------------------------------------------------------------------------
// Generator

struct DecoderOptions {
  int64_t width = 64;  // mirrors the encoder: 8w -> 4w -> 2w -> w -> 3 channels
  // An AdaIN `decoder.pth` (naoto0804/pytorch-AdaIN: the same layer list, so
  // its keys `<i>.weight|bias` are our layers'); empty = random init.
  std::string weights_path;
  // "tanh": a tanh bounds the output to [-1, 1]; "linear": none, as AdaIN's
  // own decoder; "auto": linear with weights_path, tanh without.
  std::string output = "auto";
  // 0: mirror VGG-19 (8w channels at 1/8). Otherwise the encoder's content
  // layer has in_channels channels at 1/2^upsamplings of the image: per
  // upsampling a 3x3 conv to (2^(remaining) * w) channels, a x2 upsample
  // and another 3x3 conv; then a 3x3 conv to RGB. AdaInGenerator sets both.
  int64_t in_channels = 0;
  int64_t upsamplings = 0;
};

// The AdaIN decoder: reflection-padded 3x3 convs with nearest upsampling,
// mirroring the encoder; a tanh (output "tanh") bounds the image to [-1, 1].
// AdaIN's weights produce images in [0, 1]: loading them folds y -> 2y - 1
// into the last convolution, so the output is in atelier's [-1, 1] range.
struct DecoderImpl : torch::nn::Module {
  explicit DecoderImpl(const DecoderOptions& options);
  torch::Tensor forward(const torch::Tensor& features);
  // forward, resized (bilinear) to the H and W of `like` where they differ:
  // SqueezeNet's ceil-mode pools and unpadded first conv round sizes.
  torch::Tensor decode(const torch::Tensor& features, const torch::Tensor& like);
  // Copies an AdaIN decoder state dict (`<i>.weight|bias`) onto our convs,
  // folding the output range. Throws ModelError naming the file, the layer
  // and both shapes when they differ, or a missing key.
  void load_adain(const std::map<std::string, torch::Tensor>& state, const std::string& source);

  DecoderOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(Decoder);

struct GeneratorOptions {
  EncoderOptions encoder;
  DecoderOptions decoder;
};

// G(content, style): encoder (frozen) -> AdaIN at its content layer -> decoder (trained).
struct AdaINGeneratorImpl : torch::nn::Module {
  explicit AdaINGeneratorImpl(const GeneratorOptions& options);

  struct Output {
    torch::Tensor image;   // stylised image in [-1, 1]
    torch::Tensor target;  // the AdaIN features t the decoder was given (content-loss target)
  };
  // alpha in [0, 1] blends t with the content features (1 = full style).
  Output stylize(const torch::Tensor& content, const torch::Tensor& style, double alpha = 1.0);
  torch::Tensor forward(const torch::Tensor& content, const torch::Tensor& style,
                        double alpha = 1.0);
  // Style interpolation: t = sum_i weights[i] * AdaIN(f_c, f_{s_i}), then the
  // same alpha blend with the content features. Each style is [N or 1, 3, h_i, w_i]
  // (sizes free; a batch of 1 applies to every content image). Weights must be
  // >= 0 and sum to 1 within 1e-6, one per style; throws ModelError naming them.
  Output stylize_mixed(const torch::Tensor& content, const std::vector<torch::Tensor>& styles,
                       const std::vector<double>& weights, double alpha = 1.0);

  // The parameters an optimiser should update (the decoder's).
  std::vector<torch::Tensor> trainable_parameters() const;

  Encoder encoder{nullptr};
  Decoder decoder{nullptr};
};
TORCH_MODULE(AdaINGenerator);

// ---------------------------------------------------------------------------
// Discriminator

enum class Norm { Instance, Batch, None };
// "instance" | "batch" | "none"; throws ModelError naming the allowed values.
Norm parse_norm(const std::string& name);

struct DiscriminatorOptions {
  int64_t width = 64;  // channels of the first conv (pix2pix/CycleGAN: 64)
  int64_t layers = 3;  // strided 4x4 conv blocks after the first; 3 gives the 70x70 PatchGAN
  Norm norm = Norm::Instance;
};

// PatchGAN (Isola et al. 2017): C(w)-C(2w)-C(4w)-C(8w) 4x4 convs with
// LeakyReLU(0.2), normalisation after all but the first, a final 1-channel
// conv; outputs one logit per receptive-field patch, [N, 1, H', W'].
// Weights are initialised normal(0, 0.02) as in the reference implementation.
struct PatchDiscriminatorImpl : torch::nn::Module {
  explicit PatchDiscriminatorImpl(const DiscriminatorOptions& options);
  torch::Tensor forward(const torch::Tensor& images);

  DiscriminatorOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(PatchDiscriminator);

// ---------------------------------------------------------------------------
// CycleGAN (Zhu et al. 2017): two ResNet generators translate between a
// domain A (content photographs) and a domain B (style paintings), two
// PatchGANs above judge each domain, and each discriminator learns from a
// history pool of generated images.

// normal(0, std) weights and zero biases for every conv and transposed conv
// (batch norm: weight normal(1, std)), the reference's init_weights('normal').
void init_normal(torch::nn::Module& module, double std);

// torch::nn::ConvTranspose2d with the same parameters ("weight" [in, out /
// groups, kH, kW], "bias"), the same default initialisation and the same
// results up to float rounding, computed on CPU as the input gradient of the
// convolution it undoes (its backward: that convolution, and its weight
// gradient). LibTorch 1.13's CPU ConvTranspose2d runs an im2col path that is
// ~50x slower than oneDNN's convolutions at CycleGAN's sizes
// (bench/RESULTS.md). Under CPU autocast it computes in the autocast type, as
// the convolutions do. Off the CPU it calls torch's conv_transpose2d. Zero
// padding and output_padding below the stride only (throws ModelError).
struct TransposedConv2dImpl : torch::nn::Cloneable<TransposedConv2dImpl> {
  explicit TransposedConv2dImpl(torch::nn::ConvTranspose2dOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& input);

  torch::nn::ConvTranspose2dOptions options;
  torch::Tensor weight, bias;
};
TORCH_MODULE(TransposedConv2d);

// x + (reflect-pad, 3x3 conv, norm, ReLU, [dropout 0.5], reflect-pad, 3x3 conv, norm)(x)
struct ResnetBlockImpl : torch::nn::Module {
  ResnetBlockImpl(int64_t channels, Norm norm, bool dropout);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Sequential block{nullptr};
};
TORCH_MODULE(ResnetBlock);

struct ResnetGeneratorOptions {
  int64_t width = 64;   // ngf: channels of the first conv; 2w and 4w after the two downsamplings
  int64_t blocks = 9;   // residual blocks (the paper: 9 at 256 px, 6 at 128 px)
  Norm norm = Norm::Instance;
  bool dropout = false;
};

// c7s1-w, d2w, d4w, blocks x R4w, u2w, uw, c7s1-3, tanh: reflection padding,
// non-affine instance norm, weights normal(0, 0.02). Keeps the image size;
// H and W must be multiples of 4 (throws ModelError otherwise).
struct ResnetGeneratorImpl : torch::nn::Module {
  explicit ResnetGeneratorImpl(const ResnetGeneratorOptions& options);
  torch::Tensor forward(const torch::Tensor& images);

  ResnetGeneratorOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(ResnetGenerator);

// Up to `capacity` earlier generated images. query() returns, per image of
// the batch, the image itself while the pool fills; afterwards, with
// probability 1/2, a uniformly chosen stored image (replaced by the new one),
// else the new image. Draws from torch's global CPU generator, so a seeded
// run is reproducible; capacity 0 returns the batch unchanged.
class ImagePool {
 public:
  explicit ImagePool(int64_t capacity);
  torch::Tensor query(const torch::Tensor& images);
  int64_t size() const { return static_cast<int64_t>(images_.size()); }
  int64_t capacity() const { return capacity_; }
  // The stored images as one [n, C, H, W] tensor (empty [0] when n = 0),
  // and back; load_state throws ModelError when they do not fit.
  torch::Tensor state() const;
  void load_state(const torch::Tensor& images);

 private:
  int64_t capacity_;
  std::vector<torch::Tensor> images_;
};

// ---------------------------------------------------------------------------
// Losses. Every loss is a scalar tensor, differentiable.

enum class Adversarial { BCE, LSGAN, Hinge };
// "bce" | "lsgan" | "hinge"; throws ModelError naming the allowed values.
Adversarial parse_adversarial(const std::string& name);

// BCE:   0.5 * (BCEWithLogits(real, 1) + BCEWithLogits(fake, 0))
// LSGAN: 0.5 * (mean((real - 1)^2) + mean(fake^2))
// Hinge: mean(relu(1 - real)) + mean(relu(1 + fake))
torch::Tensor discriminator_loss(Adversarial kind, const torch::Tensor& real_logits,
                                 const torch::Tensor& fake_logits);
// BCE: BCEWithLogits(fake, 1); LSGAN: mean((fake - 1)^2); Hinge: -mean(fake)
torch::Tensor generator_adversarial_loss(Adversarial kind, const torch::Tensor& fake_logits);

// Mean squared error between encoder features of the output and the AdaIN target.
torch::Tensor content_loss(const torch::Tensor& output_features, const torch::Tensor& target);

enum class StyleStatistics { MeanStd, Gram, Both };
// "meanstd" | "gram" | "both"; throws ModelError naming the allowed values.
StyleStatistics parse_style_statistics(const std::string& name);

// Gram matrix per image, normalised by C*H*W: [N, C, C].
torch::Tensor gram_matrix(const torch::Tensor& features);

// Sum over layers of MSE(mean) + MSE(std) (MeanStd) and/or MSE(Gram) (Gram).
torch::Tensor style_loss(const std::vector<torch::Tensor>& output_features,
                         const std::vector<torch::Tensor>& style_features, StyleStatistics kind);

// CycleGAN's cycle-consistency and identity term: mean |a - b| (L1).
torch::Tensor l1_loss(const torch::Tensor& a, const torch::Tensor& b);

// Anisotropic L1 total variation: mean |dx| + mean |dy|.
torch::Tensor total_variation_loss(const torch::Tensor& images);

// ---------------------------------------------------------------------------
// Weight import

// Reads a state dict written by Python's `torch.save(module.state_dict(), f)`
// without Python, in the zip format (PyTorch >= 1.6) or the legacy one
// (older files, torchvision's downloads such as vgg19-dcbb9e9d.pth, and
// `_use_new_zipfile_serialization=False`). Only keys for which `wanted(key)`
// is true are materialised (all when empty). Tensors come back contiguous,
// on CPU, with their saved dtype. Throws ModelError naming the file and what
// is wrong with it.
std::map<std::string, torch::Tensor> load_state_dict(
    const std::string& path, const std::function<bool(const std::string&)>& wanted = {});

// The torch.save format of a state dict file, for logs: "legacy format" or
// "zip format". Looks at the first byte only (load_state_dict checks the rest).
std::string state_dict_format(const std::string& path);

}  // namespace atelier::models
