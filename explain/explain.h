// explain/ — why does the stylised image look this way?
//
// Offline explanations of a trained AdaIN-GAN checkpoint: gradient saliency
// and SmoothGrad, Integrated Gradients (with its completeness gap), Grad-CAM
// on the discriminator, feature maps and AdaIN statistics, the style loss
// split per VGG layer, an alpha sweep, occlusion of the style image,
// adversarial probing of the content image, and two trust checks (model
// randomisation, deletion curve). Every method is a function of tensors that
// tests call on toy models with known answers; `explain_checkpoint` runs them
// all on a checkpoint and writes PNGs, summary.json and report.html.
// Images are float [3, H, W] (or [N, 3, H, W] where said) in [-1, 1].
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/models.h"

namespace atelier::explain {

// An explanation that cannot be made: bad method name, layer, image or
// checkpoint. The message names it.
struct ExplainError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// G(content, style) on batches [N, 3, H, W] -> [N, 3, H', W']. Explanations
// take this instead of the generator so tests can pass functions whose
// attributions are known in closed form.
using ImageFunction = std::function<torch::Tensor(const torch::Tensor& content, const torch::Tensor& style)>;

// A rectangle of the output, in output pixels. Empty (h or w 0) = whole image.
struct Region {
  int64_t y = 0, x = 0, h = 0, w = 0;
  bool empty() const { return h <= 0 || w <= 0; }
};

// The scalar every attribution explains: how strongly the output region
// shows the pattern it actually shows,
//   f(y) = mean over the region of y * (r - mean_hw r),
// where r is the reference output G(content, style) of the unperturbed
// inputs, centred per channel. The plain region mean would be a poor f:
// AdaIN sets the output's channel means from the style, so the mean barely
// moves with the content and IG's completeness gap (relative to f(x) - f(b))
// becomes ill-conditioned; the projection on r moves with every visible
// structure, and is linear in y, so completeness holds as tightly as the
// path integral is resolved. output [N, C, H, W], reference [1, C, H, W];
// returns [N]. Throws ExplainError on a region outside the image.
torch::Tensor region_score(const torch::Tensor& output, const torch::Tensor& reference, const Region& region);

// Per-pixel attribution of content and style, each [3, H, W] (signed).
struct InputAttribution {
  torch::Tensor content;
  torch::Tensor style;
};

// |attribution| summed over channels: [H, W], what heat maps show.
torch::Tensor pixel_map(const torch::Tensor& attribution);

// (1) d region_score(f(content, style)) / d input for both inputs separately,
// with the reference fixed at f(content, style).
InputAttribution saliency(const ImageFunction& f, const torch::Tensor& content, const torch::Tensor& style,
                          const Region& region = {});

// SmoothGrad (Smilkov et al. 2017): the mean gradient over `samples` copies
// of both inputs with Gaussian noise of std `sigma` (in [-1, 1] units).
struct SmoothGradOptions {
  int64_t samples = 16;
  double sigma = 0.15;  // 7.5% of the image range, the paper's 10-20% sweet spot
  uint64_t seed = 0;
};
InputAttribution smoothgrad(const ImageFunction& f, const torch::Tensor& content, const torch::Tensor& style,
                            const Region& region = {}, const SmoothGradOptions& options = {});

// (2) Integrated Gradients (Sundararajan et al. 2017).
enum class Baseline { Black, Blurred };
// "black" | "blurred"; throws ExplainError naming the allowed values.
Baseline parse_baseline(const std::string& name);
// Black: all -1; Blurred: a Gaussian blur of `image` (sigma = size / 8).
torch::Tensor make_baseline(const torch::Tensor& image, Baseline kind);

struct IntegratedGradientsOptions {
  int64_t steps = 64;        // trapezoid intervals along the straight path to start with
  int64_t max_steps = 1024;  // intervals are doubled while the gap >= tolerance, up to this
  double tolerance = 0.05;   // completeness gap to reach
  int64_t batch = 16;        // path points per forward/backward pass
  Baseline baseline = Baseline::Blurred;
};

struct IntegratedGradients {
  torch::Tensor attribution;   // [3, H, W]
  double f_input = 0;          // f(x)
  double f_baseline = 0;       // f(baseline)
  double attribution_sum = 0;  // sum of attributions
  // |sum - (f(x) - f(b))| / |f(x) - f(b)|: how well the path integral is resolved.
  double completeness_gap = 0;
  int64_t steps = 0;           // intervals it took to get there
};
// Attributes f to `input` along the path baseline -> input with the other
// input held fixed: which = "content" or "style".
IntegratedGradients integrated_gradients(const ImageFunction& f, const torch::Tensor& content,
                                         const torch::Tensor& style, const std::string& which,
                                         const Region& region = {},
                                         const IntegratedGradientsOptions& options = {});

// (3) Grad-CAM (Selvaraju et al. 2017) of the mean output of `net` (a
// discriminator's realness logit) at layer `layer` (index in the Sequential):
// relu(sum_c mean_hw(dS/dA_c) * A_c), upsampled to the image, [H, W] in [0, 1].
struct GradCam {
  torch::Tensor map;          // [H, W], max-normalised (all 0 when nothing is positive)
  double score = 0;           // mean logit: > 0 real, < 0 fake for BCE critics
  std::vector<double> channel_weights;
};
GradCam grad_cam(torch::nn::Sequential& net, int64_t layer, const torch::Tensor& image);

// (4) Feature maps. Layers are named "encoder.<torchvision index>" (or
// "relu1_1".."relu4_1"), "decoder.<index>", "discriminator.<index>".
struct Networks {
  models::AdaINGenerator generator{nullptr};
  models::PatchDiscriminator discriminator{nullptr};
};
// Activations [1, C, h, w] of a layer of the networks for (content, style):
// encoder layers see the content, decoder layers decode AdaIN(content,
// style), discriminator layers judge the stylised output.
torch::Tensor layer_activation(Networks& nets, const std::string& layer, const torch::Tensor& content,
                               const torch::Tensor& style);
// Every valid layer name, for --help and error messages.
std::vector<std::string> layer_names(Networks& nets);

struct TopChannels {
  std::vector<int64_t> channels;  // the k channels with the largest mean activation, largest first
  std::vector<double> means;
  torch::Tensor maps;             // [k, h, w] their activations
};
TopChannels top_channels(const torch::Tensor& activation, int64_t k);

// Per-channel statistics of the encoder features AdaIN sees.
struct AdaINShift {
  std::vector<int64_t> channels;  // top-k by |mean shift| + |std shift|, largest first
  std::vector<double> content_mean, style_mean, content_std, style_std, shift;
  double mean_shift_total = 0;  // sum over all channels of |style_mean - content_mean|
  double std_shift_total = 0;   // sum over all channels of |style_std - content_std|
};
AdaINShift adain_shift(const torch::Tensor& content_features, const torch::Tensor& style_features, int64_t k);

// (5) The style loss of models::style_loss split per layer and per group of
// channels: parts[l][g] sums to the total exactly.
struct StyleContribution {
  std::vector<double> per_layer;               // [layers]
  std::vector<std::vector<double>> per_group;  // [layers][groups]
  double total = 0;
};
StyleContribution style_contribution(const std::vector<torch::Tensor>& output_features,
                                     const std::vector<torch::Tensor>& style_features,
                                     models::StyleStatistics kind, int64_t groups);

struct AlphaSweep {
  std::vector<double> alphas;
  std::vector<torch::Tensor> outputs;  // [3, H, W] each
  std::vector<double> content_loss;    // vs the content's own relu4_1 features
  std::vector<double> style_loss;      // vs the style image's statistics
};
AlphaSweep alpha_sweep(models::AdaINGenerator& generator, const torch::Tensor& content, const torch::Tensor& style,
                       int64_t points, models::StyleStatistics kind);

// (6) Occlusion: each patch of the style image set to 0 (mid-grey) in turn;
// the change of the output's style statistics (L2 distance of the channel
// mean/std of `features(output)` over its layers) per patch, [rows, cols].
using FeatureFunction = std::function<std::vector<torch::Tensor>(const torch::Tensor& images)>;
struct Occlusion {
  torch::Tensor change;  // [rows, cols]
  int64_t patch = 0;
};
Occlusion occlusion(const ImageFunction& f, const FeatureFunction& features, const torch::Tensor& content,
                    const torch::Tensor& style, int64_t patch);

// (7) Adversarial probing: for each L-inf budget, the RMS change of the
// output a PGD attack on the content image reaches (FGSM is steps = 1), and
// the smallest budget (linearly interpolated on the sweep) whose change
// reaches `target_change`; -1 when none does.
struct ProbeOptions {
  std::vector<double> budgets = {1.0 / 255, 2.0 / 255, 4.0 / 255, 8.0 / 255, 16.0 / 255};  // in [0,1] units
  int64_t steps = 5;            // PGD iterations per budget
  double target_change = 0.05;  // RMS output change in [-1, 1] units
};
struct Probe {
  std::vector<double> budgets;
  std::vector<double> fgsm_change;
  std::vector<double> pgd_change;
  double smallest_budget = -1;
};
Probe adversarial_probe(const ImageFunction& f, const torch::Tensor& content, const torch::Tensor& style,
                        const ProbeOptions& options = {});

// Trust checks. Spearman rank correlation of two equally sized tensors
// (average ranks for ties).
double spearman(const torch::Tensor& a, const torch::Tensor& b);

// Deletion curve: content pixels replaced by the baseline in `points` steps,
// most attributed first vs in a random order; the RMS change of the output
// region against the intact output after each step. A faithful attribution
// changes the output sooner: a larger area under its curve.
struct DeletionCurve {
  std::vector<double> fraction, by_attribution, random;
  double auc_attribution = 0, auc_random = 0;
};
DeletionCurve deletion_curve(const ImageFunction& f, const torch::Tensor& content, const torch::Tensor& style,
                             const torch::Tensor& pixel_attribution, const torch::Tensor& baseline,
                             const Region& region = {}, int64_t points = 10, uint64_t seed = 0);

// ---------------------------------------------------------------------------
// The job: a checkpoint in, PNGs + summary.json + report.html out.

// Method names, in report order: saliency smoothgrad integrated_gradients
// gradcam features adain style_layers alpha_sweep occlusion probe trust.
const std::vector<std::string>& method_names();

struct ExplainOptions {
  std::filesystem::path checkpoint;         // anything resolve_checkpoint takes
  models::GeneratorOptions generator;       // from the checkpoint's config.yaml
  models::DiscriminatorOptions discriminator;
  models::StyleStatistics style_statistics = models::StyleStatistics::MeanStd;
  std::vector<std::string> content;         // image files or folders (unreadable files are skipped)
  std::vector<std::string> style;           // image files or folders; pairs = content x style
  std::filesystem::path out;                // output directory
  int64_t size = 64;                        // images are centre-cropped to size x size
  std::vector<std::string> methods;         // empty = all
  int64_t threads = 2;                      // LibTorch intra-op threads
  torch::Device device{torch::kCPU};        // where the networks run; images are read and written on the host
  int64_t rank = 0, world_size = 1;         // this process explains pairs p with p % world_size == rank
};

// checkpoint::resolve (a step-N directory, a LATEST file, or a run or
// checkpoints/ directory), its errors as ExplainError.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& path);

// Verifies and loads the checkpoint, explains this rank's pairs into
// out/pair-<p>/ and returns their summaries (one JSON object per pair,
// serialised). Unreadable images are skipped with a warning naming each.
// Throws ExplainError naming a missing checkpoint, sources without a
// readable image, or an unknown method.
std::vector<std::string> explain_pairs(const ExplainOptions& options);

// Writes summary.json, report.html (index) and pair-<p>.html from the pair
// summaries of every rank.
void write_report(const ExplainOptions& options, const std::vector<std::string>& pair_summaries);

// Both, in one process.
void explain_checkpoint(const ExplainOptions& options);

}  // namespace atelier::explain
