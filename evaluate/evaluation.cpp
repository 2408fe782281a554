// Evaluating a generator on a fixed set of (content, style) pairs: which
// pairs, which rank measures which, and how the ranks' rows become one result.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <functional>
#include <map>
#include <set>

#include "data/data.h"
#include "evaluate/evaluate.h"

namespace atelier::evaluate {
namespace {

// Per-pair metrics, in the column order of a pair's row (see measure_batch)
// and in table order.
struct PairMetric {
  std::string key;
  std::string label;
  std::string group;
  bool higher_is_better;
};

// `adain`: with the content loss against the AdaIN target; otherwise
// (CycleGAN) with the cycle reconstruction errors instead.
// The layers are the loss network's (`encoder`).
std::vector<PairMetric> pair_metrics(bool adain, const models::EncoderImpl& encoder) {
  std::vector<PairMetric> out = {
      {"ssim_rgb", "SSIM, RGB", "content", true},
      {"ssim_y", "SSIM, luminance", "content", true},
      {"psnr_rgb", "PSNR, RGB (dB)", "content", true},
      {"psnr_y", "PSNR, luminance (dB)", "content", true},
      {"content_loss", "content loss vs content (" + encoder.content_layer_name() + ")", "content", false},
  };
  if (adain) out.push_back({"content_loss_adain", "content loss vs AdaIN target", "content", false});
  for (const auto& layer : encoder.style_layer_names())
    out.push_back({"style_gram_" + layer, "Gram loss " + layer, "style", false});
  for (const auto& layer : encoder.style_layer_names())
    out.push_back({"style_meanstd_" + layer, "mean/std loss " + layer, "style", false});
  if (!adain) {
    out.push_back({"cycle_l1_a", "cycle L1, content -> style -> content", "cycle", false});
    out.push_back({"cycle_l1_b", "cycle L1, style -> content -> style", "cycle", false});
    out.push_back({"cycle_psnr_a", "cycle PSNR, content (dB)", "cycle", true});
    out.push_back({"cycle_psnr_b", "cycle PSNR, style (dB)", "cycle", true});
  }
  return out;
}

// Measures one batch of pairs: [B, columns] float64 rows.
using MeasureBatch = std::function<torch::Tensor(const torch::Tensor& content, const torch::Tensor& style)>;

// Mean over everything but the batch dimension: [N, ...] -> [N].
torch::Tensor per_image_mean(const torch::Tensor& t) { return t.flatten(1).mean(1); }

// What a generator made of a batch of pairs, with the loss network's
// features that were computed on the way.
struct Outputs {
  torch::Tensor image;                 // the output of each pair
  std::vector<torch::Tensor> f_style;  // loss-network features of the style images, every layer
  torch::Tensor f_content;             // content-layer features of the content images
  torch::Tensor target;                // AdaIN only: the decoder's input (content-loss target)
  std::vector<torch::Tensor> extra;    // [B] columns after the style losses (CycleGAN: cycle errors)
};

// One row per pair: the pair metrics (pair_metrics() order), then the pooled
// features of the deepest style layer of the output, then those of the
// style image. float64.
torch::Tensor measure_rows(models::Encoder& encoder, const torch::Tensor& content, const Outputs& out) {
  const auto& f_style = out.f_style;
  const auto encoded = encoder->encode(out.image);
  const auto& f_out = encoded.style;
  const auto layers = static_cast<int64_t>(f_out.size());
  std::vector<torch::Tensor> columns = {
      ssim(out.image, content),
      ssim(luminance(out.image), luminance(content)),
      psnr(out.image, content),
      psnr(luminance(out.image), luminance(content)),
      per_image_mean((encoded.content - out.f_content).square()),
  };
  if (out.target.defined()) columns.push_back(per_image_mean((encoded.content - out.target).square()));
  for (int64_t l = 0; l < layers; ++l)
    columns.push_back(per_image_mean((models::gram_matrix(f_out[l]) - models::gram_matrix(f_style[l])).square()));
  for (int64_t l = 0; l < layers; ++l) {
    const auto [mean_out, std_out] = models::channel_mean_std(f_out[l]);
    const auto [mean_style, std_style] = models::channel_mean_std(f_style[l]);
    columns.push_back(per_image_mean((mean_out - mean_style).square()) + per_image_mean((std_out - std_style).square()));
  }
  columns.insert(columns.end(), out.extra.begin(), out.extra.end());
  std::vector<torch::Tensor> parts;
  for (const auto& c : columns) parts.push_back(c.to(torch::kDouble).unsqueeze(1));
  parts.push_back(f_out.back().mean({2, 3}).to(torch::kDouble));
  parts.push_back(f_style.back().mean({2, 3}).to(torch::kDouble));
  return torch::cat(parts, 1);
}

// Puts a module back into the mode it was in, also when measuring throws.
struct TrainingModeGuard {
  explicit TrainingModeGuard(torch::nn::Module& module) : module(module), was_training(module.is_training()) {
    module.eval();
  }
  ~TrainingModeGuard() { module.train(was_training); }
  torch::nn::Module& module;
  bool was_training;
};

// This rank's rows, padded with zeros to `set.slots` rows so every rank
// gathers the same shape.
// generator->stylize(content, style) at alpha 1, written out so that its
// encoder passes over content and style serve the losses too: 3 encoder
// passes per pair instead of 5.
torch::Tensor measure_adain(models::AdaINGenerator& generator, const torch::Tensor& content,
                            const torch::Tensor& style) {
  auto& encoder = generator->encoder;
  Outputs out;
  auto encoded_style = encoder->encode(style);
  out.f_style = std::move(encoded_style.style);
  out.f_content = encoder->forward(content);
  out.target = models::adain(out.f_content, encoded_style.content);
  out.image = generator->decoder->decode(out.target, content);
  return measure_rows(encoder, content, out);
}

// G_A(content) is the output; both cycles are measured on the way.
torch::Tensor measure_cyclegan(models::ResnetGenerator& a2b, models::ResnetGenerator& b2a,
                               models::Encoder& encoder, const torch::Tensor& content, const torch::Tensor& style) {
  Outputs out;
  out.image = a2b->forward(content);
  out.f_style = encoder->forward_features(style);
  out.f_content = encoder->forward(content);
  const auto rec_a = b2a->forward(out.image);
  const auto rec_b = a2b->forward(b2a->forward(style));
  out.extra = {per_image_mean((rec_a - content).abs()), per_image_mean((rec_b - style).abs()), psnr(rec_a, content),
               psnr(rec_b, style)};
  return measure_rows(encoder, content, out);
}

// The set stays on the host; each batch goes to `device` (the networks'),
// and its rows come back.
torch::Tensor local_rows(const MeasureBatch& measure, const EvalSet& set, int64_t batch, int64_t columns,
                         torch::Device device) {
  auto rows = torch::zeros({set.slots, columns}, torch::kDouble);
  const int64_t n = set.content.defined() ? set.content.size(0) : 0;
  for (int64_t begin = 0; begin < n; begin += batch) {
    const int64_t count = std::min(batch, n - begin);
    rows.narrow(0, begin, count)
        .copy_(measure(set.content.narrow(0, begin, count).to(device), set.style.narrow(0, begin, count).to(device)));
  }
  return rows;
}

torch::Device device_of(const torch::nn::Module& module) {
  const auto parameters = module.parameters();
  return parameters.empty() ? torch::Device(torch::kCPU) : parameters.front().device();
}

// Adds the two set-level distances (or says why they are missing), named
// by the loss network whose features they compare.
void add_distances(EvalResult& result, const torch::Tensor& output_features, const torch::Tensor& style_features,
                   const std::string& network) {
  const auto names = distance_names(network);
  result.distance_name = names.fd_label;
  if (output_features.size(0) < 2 || style_features.size(0) < 2) {
    result.distances_skipped = "the distances need at least 2 pairs and 2 distinct style images (got " +
                               std::to_string(output_features.size(0)) + " and " +
                               std::to_string(style_features.size(0)) + ")";
    return;
  }
  result.metrics.push_back({names.fd_key, names.fd_label, "distribution",
                            frechet_distance(output_features, style_features), false});
  result.metrics.push_back({names.kid_key, names.kid_label, "distribution",
                            kernel_distance(output_features, style_features), false});
}

void check_set(const EvalSet& set, int world_size) {
  const int64_t n = set.content.defined() ? set.content.size(0) : 0;
  if (static_cast<int64_t>(set.style_of_pair.size()) != set.total_pairs || n > set.slots ||
      set.slots * world_size < set.total_pairs || (n > 0 && set.style.sizes() != set.content.sizes()))
    throw EvalError("evaluation set is inconsistent: " + std::to_string(n) + " local pairs, " +
                    std::to_string(set.slots) + " slots per rank, " + std::to_string(set.total_pairs) +
                    " pairs in all over " + std::to_string(world_size) + " rank(s)");
  if (set.total_pairs < 1) throw EvalError("evaluation set has no pairs");
}

}  // namespace

std::string loss_network_key(const models::EncoderOptions& encoder) {
  if (encoder.network == "squeezenet1_1") return "squeezenet";
  return encoder.weights_path.empty() ? "random_vgg" : "vgg";
}

DistanceNames distance_names(const std::string& network) {
  if (network == "squeezenet") return {"squeezenet_fd", "SqueezeNet-FD", "squeezenet_kid", "SqueezeNet-KID"};
  if (network == "vgg") return {"vgg_fid", "VGG-FID", "vgg_kid", "VGG-KID"};
  return {"random_vgg_fd", "random-VGG FD", "random_vgg_kid", "random-VGG KID"};
}

std::vector<Pair> plan_pairs(int64_t content_count, int64_t style_count, int64_t count) {
  if (content_count < 1 || style_count < 1)
    throw EvalError("pairs need at least one content and one style image, got " + std::to_string(content_count) +
                    " and " + std::to_string(style_count));
  const int64_t all = content_count * style_count;
  if (count < 0 || count > all)
    throw EvalError(std::to_string(count) + " pairs asked for, but " + std::to_string(content_count) +
                    " content x " + std::to_string(style_count) + " style images make " + std::to_string(all) +
                    " distinct pairs");
  if (count == 0) count = all;
  std::vector<Pair> pairs;
  for (int64_t i = 0; i < count; ++i) pairs.push_back({i % content_count, (i % content_count + i / content_count) % style_count});
  return pairs;
}

namespace {

// The files that decode. Each unreadable one is left out and counted (and
// warned about when `warn`); none left is an error naming the sources.
std::vector<std::string> readable_images(const std::vector<std::string>& files, const std::vector<std::string>& sources,
                                         const char* what, bool warn, int64_t& skipped) {
  std::vector<std::string> kept;
  for (const auto& file : files) {
    try {
      data::decode_image(file);
      kept.push_back(file);
    } catch (const data::DataError& e) {
      if (warn) spdlog::warn("skipping {} image: {}", what, e.what());
      ++skipped;
    }
  }
  if (kept.empty()) {
    std::string named;
    for (const auto& source : sources) named += (named.empty() ? "'" : ", '") + source + "'";
    throw EvalError(std::string(what) + " images: none of the " + std::to_string(files.size()) + " image files in " +
                    named + " can be decoded");
  }
  return kept;
}

}  // namespace

EvalSet load_eval_set(const EvalSetOptions& options, int rank, int world_size) {
  if (options.size < 16 || options.size % 8 != 0)
    throw EvalError("evaluation image size " + std::to_string(options.size) +
                    " must be a multiple of 8 and at least 16 (SSIM's window is 11 pixels)");
  EvalSet set;
  auto list = [&](const std::vector<std::string>& sources, const char* what) {
    std::vector<std::string> files;
    try {
      files = data::list_images(sources);
    } catch (const data::DataError& e) {
      throw EvalError(std::string(what) + " images: " + e.what());
    }
    return readable_images(files, sources, what, rank == 0, set.skipped_files);
  };
  const auto content_files = list(options.content, "content");
  const auto style_files = list(options.style, "style");
  const auto pairs = plan_pairs(static_cast<int64_t>(content_files.size()),
                                static_cast<int64_t>(style_files.size()), options.pairs);
  set.total_pairs = static_cast<int64_t>(pairs.size());
  set.slots = (set.total_pairs + world_size - 1) / world_size;
  for (const auto& p : pairs) set.style_of_pair.push_back(p.style);
  const int64_t begin = std::min(set.total_pairs, rank * set.slots);
  const int64_t end = std::min(set.total_pairs, begin + set.slots);
  std::vector<torch::Tensor> content, style;
  std::map<int64_t, torch::Tensor> decoded_styles;  // a style image serves many pairs
  try {
    for (int64_t i = begin; i < end; ++i) {
      content.push_back(data::load_centered(content_files[pairs[i].content], options.size));
      auto& s = decoded_styles[pairs[i].style];
      if (!s.defined()) s = data::load_centered(style_files[pairs[i].style], options.size);
      style.push_back(s);
    }
  } catch (const data::DataError& e) {
    throw EvalError(std::string("evaluation set: ") + e.what());
  }
  const auto empty = torch::zeros({0, 3, options.size, options.size});
  set.content = content.empty() ? empty : torch::stack(content);
  set.style = style.empty() ? empty : torch::stack(style);
  return set;
}

EvalSet slice_eval_set(const torch::Tensor& content, const torch::Tensor& style, std::vector<int64_t> style_of_pair,
                       int rank, int world_size) {
  if (content.dim() != 4 || content.sizes() != style.sizes() ||
      content.size(0) != static_cast<int64_t>(style_of_pair.size()))
    throw EvalError("slice_eval_set needs content and style [N, 3, S, S] of one shape and N style ids");
  EvalSet set;
  set.total_pairs = content.size(0);
  set.slots = (set.total_pairs + world_size - 1) / world_size;
  set.style_of_pair = std::move(style_of_pair);
  const int64_t begin = std::min(set.total_pairs, rank * set.slots);
  const int64_t end = std::min(set.total_pairs, begin + set.slots);
  set.content = content.slice(0, begin, end);
  set.style = style.slice(0, begin, end);
  return set;
}

namespace {

// Every rank measures its pairs with `measure` (in eval mode, without
// gradients); the rows are gathered and summarised identically everywhere.
EvalResult evaluate_rows(const MeasureBatch& measure, const std::vector<PairMetric>& metrics, int64_t d,
                         const EvalSet& set, comm::Communicator& comm, const EvalOptions& options,
                         torch::Device device) {
  check_set(set, comm.world_size());
  if (options.batch < 1) throw EvalError("evaluation batch must be at least 1, got " + std::to_string(options.batch));
  const auto k = static_cast<int64_t>(metrics.size());
  torch::Tensor rows;
  {
    torch::NoGradGuard no_grad;
    rows = local_rows(measure, set, options.batch, k + 2 * d, device);
  }
  // Rank r's block holds pairs [r * slots, ...) with its padding at the end,
  // and only the last non-empty block is short: the first total_pairs rows of
  // the gathered blocks are the pairs in order.
  rows = comm.all_gather(rows).reshape({-1, k + 2 * d}).narrow(0, 0, set.total_pairs);

  EvalResult result;
  result.pairs = set.total_pairs;
  const auto means = rows.narrow(1, 0, k).mean(0);
  for (int64_t m = 0; m < k; ++m)
    result.metrics.push_back(
        {metrics[m].key, metrics[m].label, metrics[m].group, means[m].item<double>(), metrics[m].higher_is_better});
  // The reference distribution: each distinct style image once, as many
  // pairs share one (counting it per pair would weight styles by use and
  // repeat rows, which the unbiased kernel estimate must not see).
  std::vector<int64_t> first_use;
  std::set<int64_t> seen;
  for (int64_t i = 0; i < set.total_pairs; ++i)
    if (seen.insert(set.style_of_pair[i]).second) first_use.push_back(i);
  result.style_images = static_cast<int64_t>(first_use.size());
  const auto style_rows = rows.index_select(0, torch::tensor(first_use, torch::kLong));
  add_distances(result, rows.narrow(1, k, d), style_rows.narrow(1, k + d, d), options.loss_network);
  return result;
}

}  // namespace

EvalResult evaluate(models::AdaINGenerator& generator, const EvalSet& set, comm::Communicator& comm,
                    const EvalOptions& options) {
  TrainingModeGuard mode(*generator);
  const auto measure = [&generator](const torch::Tensor& c, const torch::Tensor& s) {
    return measure_adain(generator, c, s);
  };
  return evaluate_rows(measure, pair_metrics(true, *generator->encoder), generator->encoder->style_channels().back(),
                       set, comm, options, device_of(*generator));
}

EvalResult evaluate(models::ResnetGenerator& a2b, models::ResnetGenerator& b2a, models::Encoder& loss_network,
                    const EvalSet& set, comm::Communicator& comm, const EvalOptions& options) {
  const auto device = device_of(*a2b);
  if (device_of(*b2a) != device || device_of(*loss_network) != device)
    throw EvalError("evaluate: the generators and the loss network are on different devices (" + device.str() + ", " +
                    device_of(*b2a).str() + ", " + device_of(*loss_network).str() + ")");
  TrainingModeGuard mode_a(*a2b), mode_b(*b2a);
  const auto measure = [&](const torch::Tensor& c, const torch::Tensor& s) {
    return measure_cyclegan(a2b, b2a, loss_network, c, s);
  };
  return evaluate_rows(measure, pair_metrics(false, *loss_network), loss_network->style_channels().back(), set, comm,
                       options, device);
}

double metric(const EvalResult& result, const std::string& key) {
  for (const auto& m : result.metrics)
    if (m.key == key) return m.value;
  throw EvalError("evaluation has no metric '" + key + "'");
}

}  // namespace atelier::evaluate
