// evaluate/ — how good is a trained generator, in numbers comparable across runs.
//
// Over a fixed set of (content, style) pairs: content preservation (SSIM and
// PSNR of the output against its content image, on RGB and on luminance;
// content loss on encoder features), style match (Gram and mean/std losses
// per VGG layer against the style image), and distances between the
// distribution of outputs and that of the style images in the loss network's
// feature space (a Fréchet distance and the unbiased kernel distance of KID).
// The pairs are spread over the ranks of a job and gathered, so every rank
// ends with the same numbers, whatever the number of ranks.
//
// The metric functions are plain functions of tensors (images float NCHW in
// [-1, 1], as everywhere in atelier; feature sets [n, d]).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "comm/comm.h"
#include "models/models.h"

namespace atelier::evaluate {

// An evaluation that cannot run: bad images, sets too small, shapes that do
// not fit. The message names what is wrong.
struct EvalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------
// Image-quality metrics: one value per image, [N] float64.

// SSIM as Wang et al. 2004 define it (their reference ssim_index.m): an
// 11x11 Gaussian window (sigma 1.5) over every position where it fits,
// K1 = 0.01, K2 = 0.03, dynamic range L = 2 (images in [-1, 1]), the mean of
// the SSIM map. With several channels, the mean of the per-channel SSIMs.
// Images must be at least 11x11; throws EvalError otherwise.
torch::Tensor ssim(const torch::Tensor& x, const torch::Tensor& y);

// Peak signal-to-noise ratio in dB, 10 log10(L^2 / MSE) with L = 2; +inf for
// identical images.
torch::Tensor psnr(const torch::Tensor& x, const torch::Tensor& y);

// BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B: [N, 3, H, W] -> [N, 1, H, W],
// still in [-1, 1].
torch::Tensor luminance(const torch::Tensor& rgb);

// ---------------------------------------------------------------------------
// Distribution distances between two feature sets x [m, d] and y [n, d].
// Computed in float64.

// Square root of a symmetric positive semi-definite matrix by eigen-
// decomposition (negative eigenvalues from rounding are clamped to 0).
torch::Tensor sqrtm_psd(const torch::Tensor& matrix);

// Fréchet distance between N(mu1, cov1) and N(mu2, cov2):
// |mu1 - mu2|^2 + Tr(cov1 + cov2 - 2 (sqrt(cov1) cov2 sqrt(cov1))^(1/2)).
double frechet_distance(const torch::Tensor& mu1, const torch::Tensor& cov1, const torch::Tensor& mu2,
                        const torch::Tensor& cov2);

// The Fréchet distance between the Gaussians fitted to two feature sets
// (mean and unbiased covariance, as FID does). Each set needs >= 2 rows.
double frechet_distance(const torch::Tensor& x, const torch::Tensor& y);

// KID's unbiased estimate of MMD^2 (Bińkowski et al. 2018) with the kernel
// k(a, b) = (a.b / d + 1)^3: the means of k over distinct pairs within x and
// within y, minus twice the mean of k over x-y pairs. Unbiased for any set
// sizes >= 2 (it may come out slightly negative). Each set needs >= 2 rows.
double kernel_distance(const torch::Tensor& x, const torch::Tensor& y);

// ---------------------------------------------------------------------------
// Evaluating a generator on (content, style) pairs

// Pair p of a plan: which content and which style image it takes.
struct Pair {
  int64_t content = 0;  // index into the content image list
  int64_t style = 0;    // index into the style image list
};

// The first `count` pairs of an order that walks every content x style pair
// once (count 0: all of them): pair i takes content c = i mod C and style
// (c + i div C) mod S, so the first pairs already vary both images. Throws
// EvalError when count exceeds C x S or a list is empty.
std::vector<Pair> plan_pairs(int64_t content_count, int64_t style_count, int64_t count);

// What to evaluate on.
struct EvalSetOptions {
  std::vector<std::string> content;  // content image folders or files (data::list_images)
  std::vector<std::string> style;    // style image folders or files
  int64_t pairs = 0;                 // pairs evaluated; 0 = every content x style pair
  int64_t size = 64;                 // images are centre-cropped squares of this side (multiple of 8, >= 16)
};

// The part of a fixed set of pairs this rank evaluates, decoded once (a
// training run evaluates the same set again and again). Rank r takes the
// r-th contiguous block of ceil(pairs / world_size) pairs.
struct EvalSet {
  int64_t total_pairs = 0;            // pairs over all ranks
  int64_t slots = 0;                  // pairs per rank after padding: ceil(total_pairs / world_size)
  torch::Tensor content;              // [n, 3, S, S]: this rank's content images (n <= slots, may be 0)
  torch::Tensor style;                // [n, 3, S, S]: this rank's style images, pair by pair
  std::vector<int64_t> style_of_pair; // style image id of every pair of the whole set (all ranks)
  int64_t skipped_files = 0;          // listed images that could not be decoded, left out
};

// Lists the images, leaves out those that cannot be decoded (rank 0 warns
// once per file, naming it and why; every rank decides alike, so all agree
// on the pairs), plans the pairs and decodes this rank's share. Throws
// EvalError naming an empty or missing folder, or sources of which no file
// decodes (and whether it was the content or the style source).
EvalSet load_eval_set(const EvalSetOptions& options, int rank, int world_size);

// This rank's share of pairs given as tensors: content and style [N, 3, S, S]
// for the whole set, style_of_pair[i] the id of pair i's style image (equal
// ids are the same image). For benchmarks and tests.
EvalSet slice_eval_set(const torch::Tensor& content, const torch::Tensor& style,
                       std::vector<int64_t> style_of_pair, int rank, int world_size);

// The distances' names by loss network: "squeezenet" (SqueezeNet-FD, -KID),
// "vgg" (VGG-19 with ImageNet weights: VGG-FID, -KID), "random_vgg" (the
// fixed random VGG: random-VGG FD, KID; not comparable across seeds).
std::string loss_network_key(const models::EncoderOptions& encoder);
struct DistanceNames {
  std::string fd_key, fd_label, kid_key, kid_label;
};
DistanceNames distance_names(const std::string& loss_network);

struct EvalOptions {
  int64_t batch = 4;             // pairs stylised at once
  // The loss network, which names the distances (loss_network_key()).
  std::string loss_network = "random_vgg";
};

// One named number of an evaluation.
struct Metric {
  std::string key;     // "ssim_rgb", "style_gram_relu2_1", "random_vgg_fd", ... (a JSON / TensorBoard key)
  std::string label;   // what the table shows: "SSIM (RGB)", "random-VGG FD", ...
  std::string group;   // "content", "style", "cycle" (CycleGAN) or "distribution" (the set-level distances)
  double value = 0.0;  // mean over pairs, or the set-level distance
  bool higher_is_better = false;
};

struct EvalResult {
  int64_t pairs = 0;           // pairs evaluated
  int64_t style_images = 0;    // distinct style images: the reference set of the distances
  std::string distance_name;   // "VGG-FID" (ImageNet weights) or "random-VGG FD"
  std::vector<Metric> metrics; // in table order
  // Why the distances are missing, when they are (fewer than 2 pairs or 2
  // distinct style images); empty otherwise.
  std::string distances_skipped;
};

// Stylises every pair with `generator` (without gradients, in eval mode,
// restored afterwards) and measures it. Every rank of `comm` must call this
// with its own share of the same set; every rank returns the same result,
// which equals a single rank's over the whole set. Feature distances use the
// generator's encoder (the loss network): globally average-pooled relu4_1.
// The set stays on the host; batches run on the generator's device.
EvalResult evaluate(models::AdaINGenerator& generator, const EvalSet& set, comm::Communicator& comm,
                    const EvalOptions& options);

// CycleGAN (content = domain A, style = domain B): the output of a pair is
// a2b(content), measured as above on `loss_network`'s features, except the
// content loss against an AdaIN target (there is none), plus the cycle
// reconstruction error both ways: mean |b2a(a2b(a)) - a| and
// |a2b(b2a(b)) - b| per pair (L1 on images in [-1, 1]) and their PSNRs
// (group "cycle"). Same distribution of work and result as above.
EvalResult evaluate(models::ResnetGenerator& a2b, models::ResnetGenerator& b2a, models::Encoder& loss_network,
                    const EvalSet& set, comm::Communicator& comm, const EvalOptions& options);

// The metric named `key` in `result`; throws EvalError when absent.
double metric(const EvalResult& result, const std::string& key);

}  // namespace atelier::evaluate
