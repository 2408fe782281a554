// The explainer job for one checkpoint: load and verify it, then run every
// requested method on each (content, style) pair this rank owns, writing a
// PNG per explanation and a JSON summary per pair.
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "data/data.h"
#include "explain/pipeline.h"
#include "explain/render.h"

namespace atelier::explain {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kDisplay = 192;  // px width of every picture, whatever the model's size

json attribution_totals(const InputAttribution& a) {
  const double c = pixel_map(a.content).sum().item<double>(), s = pixel_map(a.style).sum().item<double>();
  return {{"content_total", c}, {"style_total", s}, {"content_share", c + s > 0 ? c / (c + s) : 0.0}};
}

void saliency_method(PairWork& w) {
  const auto whole = saliency(w.g, w.content, w.style);
  const auto local = saliency(w.g, w.content, w.style, w.region);
  w.image("saliency_content.png", heat_overlay(w.content, pixel_map(whole.content), "saliency: content", kDisplay));
  w.image("saliency_style.png", heat_overlay(w.style, pixel_map(whole.style), "saliency: style", kDisplay));
  w.image("saliency_region_content.png",
          heat_overlay(w.content, pixel_map(local.content), "region saliency: content", kDisplay));
  w.image("saliency_region_style.png", heat_overlay(w.style, pixel_map(local.style), "region saliency: style", kDisplay));
  w.section["whole"] = attribution_totals(whole);
  w.section["region"] = attribution_totals(local);
  w.section["region"]["box"] = {{"y", w.region.y}, {"x", w.region.x}, {"h", w.region.h}, {"w", w.region.w}};
}

void smoothgrad_method(PairWork& w) {
  const SmoothGradOptions options;
  const auto a = smoothgrad(w.g, w.content, w.style, {}, options);
  w.image("smoothgrad_content.png", heat_overlay(w.content, pixel_map(a.content), "SmoothGrad: content", kDisplay));
  w.image("smoothgrad_style.png", heat_overlay(w.style, pixel_map(a.style), "SmoothGrad: style", kDisplay));
  w.section = attribution_totals(a);
  w.section["samples"] = options.samples;
  w.section["sigma"] = options.sigma;
}

void integrated_gradients_method(PairWork& w) {
  for (const auto& [baseline_name, baseline] : {std::pair{"black", Baseline::Black}, {"blurred", Baseline::Blurred}})
    for (const std::string which : {"content", "style"}) {
      IntegratedGradientsOptions options;
      options.baseline = baseline;
      const auto ig = integrated_gradients(w.g, w.content, w.style, which, {}, options);
      const std::string key = which + "_" + baseline_name;
      w.image("ig_" + key + ".png", heat_overlay(which == "content" ? w.content : w.style, pixel_map(ig.attribution),
                                                 "IG " + which + " vs " + baseline_name, kDisplay));
      w.section[key] = {{"f_input", ig.f_input},
                        {"f_baseline", ig.f_baseline},
                        {"attribution_sum", ig.attribution_sum},
                        {"completeness_gap", ig.completeness_gap},
                        {"steps", ig.steps}};
    }
}

void gradcam_method(PairWork& w) {
  // The last LeakyReLU before the logit conv: the critic's most semantic
  // layer that still has a spatial map.
  const int64_t layer = static_cast<int64_t>(w.nets.discriminator->layers->size()) - 2;
  const auto fake = grad_cam(w.nets.discriminator->layers, layer, w.output);
  const auto real = grad_cam(w.nets.discriminator->layers, layer, w.style);
  w.image("gradcam_output.png", heat_overlay(w.output, fake.map, "Grad-CAM D on output", kDisplay));
  w.image("gradcam_style.png", heat_overlay(w.style, real.map, "Grad-CAM D on real style", kDisplay));
  w.section = {{"layer", "discriminator." + std::to_string(layer)},
               {"output_score", fake.score},
               {"style_score", real.score}};
}

void features_method(PairWork& w) {
  const int64_t decoder_mid = static_cast<int64_t>(w.nets.generator->decoder->layers->size()) / 2;
  const auto& encoder = *w.nets.generator->encoder;
  std::vector<std::string> layers = {encoder.style_layer_names().front()};
  if (encoder.content_layer_name() != layers.front()) layers.push_back(encoder.content_layer_name());
  layers.push_back("decoder." + std::to_string(decoder_mid));
  layers.push_back("discriminator.1");
  constexpr int64_t kTop = 6;
  for (const auto& layer : layers) {
    const auto top = top_channels(layer_activation(w.nets, layer, w.content, w.style), kTop);
    std::vector<std::string> labels;
    for (size_t i = 0; i < top.channels.size(); ++i) labels.push_back("ch " + std::to_string(top.channels[i]));
    std::string stem = layer;
    std::replace(stem.begin(), stem.end(), '.', '_');
    w.image("features_" + stem + ".png", map_grid(top.maps, labels, 64));
    w.section[layer] = {{"channels", top.channels}, {"mean_activation", top.means}};
  }
}

void adain_method(PairWork& w) {
  auto& encoder = w.nets.generator->encoder;
  torch::NoGradGuard no_grad;
  const auto shift = adain_shift(encoder->forward(w.content.unsqueeze(0)), encoder->forward(w.style.unsqueeze(0)), 8);
  std::vector<std::vector<double>> rows;
  std::vector<std::string> labels;
  for (size_t i = 0; i < shift.channels.size(); ++i) {
    rows.push_back({shift.content_mean[i], shift.style_mean[i], shift.content_std[i], shift.style_std[i]});
    labels.push_back("ch " + std::to_string(shift.channels[i]));
  }
  const auto& layer = encoder->content_layer_name();
  w.image("adain.png", value_table(rows, labels, layer + ": mean c|s, std c|s"));
  w.section = {{"layer", layer},                {"channels", shift.channels},
               {"content_mean", shift.content_mean}, {"style_mean", shift.style_mean},
               {"content_std", shift.content_std},   {"style_std", shift.style_std},
               {"shift", shift.shift},               {"mean_shift_total", shift.mean_shift_total},
               {"std_shift_total", shift.std_shift_total}};
}

void style_layers_method(PairWork& w) {
  auto& encoder = w.nets.generator->encoder;
  torch::NoGradGuard no_grad;
  constexpr int64_t kGroups = 4;
  const auto parts = style_contribution(encoder->forward_features(w.output.unsqueeze(0)),
                                        encoder->forward_features(w.style.unsqueeze(0)), w.style_statistics, kGroups);
  const auto& names = encoder->style_layer_names();
  w.image("style_layers.png", value_table(parts.per_group, names, "style loss per layer x channel group"));
  w.section = {{"layers", names},
               {"per_layer", parts.per_layer},
               {"per_group", parts.per_group},
               {"total", parts.total}};
}

void alpha_sweep_method(PairWork& w) {
  const auto sweep = alpha_sweep(w.nets.generator, w.content, w.style, 5, w.style_statistics);
  std::vector<cv::Mat> images;
  std::vector<std::string> labels;
  for (size_t i = 0; i < sweep.alphas.size(); ++i) {
    images.push_back(to_bgr(sweep.outputs[i], 128));
    char label[32];
    std::snprintf(label, sizeof label, "alpha %.2f", sweep.alphas[i]);
    labels.push_back(label);
  }
  w.image("alpha_sweep.png", labelled_strip(images, labels));
  w.section = {{"alpha", sweep.alphas}, {"content_loss", sweep.content_loss}, {"style_loss", sweep.style_loss}};
}

void occlusion_method(PairWork& w) {
  auto& encoder = w.nets.generator->encoder;
  const int64_t patch = std::max<int64_t>(1, w.style.size(1) / 4);
  const auto occ = occlusion(w.g, [&](const torch::Tensor& x) { return encoder->forward_features(x); }, w.content,
                             w.style, patch);
  w.image("occlusion_style.png", heat_overlay(w.style, occ.change, "occlusion: style-statistics change", kDisplay));
  std::vector<std::vector<double>> grid;
  for (int64_t r = 0; r < occ.change.size(0); ++r) {
    const auto row = occ.change[r].to(torch::kCPU, torch::kDouble).contiguous();
    grid.emplace_back(row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
  }
  w.section = {{"patch", patch}, {"change", grid}};
}

void probe_method(PairWork& w) {
  const ProbeOptions options;
  const auto probe = adversarial_probe(w.g, w.content, w.style, options);
  w.image("probe.png", line_plot(probe.budgets, {probe.fgsm_change, probe.pgd_change}, {"FGSM", "PGD"},
                                 "output RMS change vs L-inf budget"));
  w.section = {{"budgets", probe.budgets},     {"fgsm_change", probe.fgsm_change},
               {"pgd_change", probe.pgd_change}, {"target_change", options.target_change},
               {"pgd_steps", options.steps},   {"smallest_budget", probe.smallest_budget}};
}

void trust_method(PairWork& w) {
  const auto trained = saliency(w.g, w.content, w.style);
  // The same architecture with freshly initialised decoder weights (the
  // encoder is fixed either way): Adebayo et al.'s cascading randomisation
  // collapsed to its last step.
  torch::manual_seed(1);
  models::AdaINGenerator random(w.generator_options);
  random->to(w.content.device());
  {
    // Only the trained part is randomised: the encoder is the checkpoint's
    // (a pretrained VGG there would otherwise become a random one here).
    torch::NoGradGuard no_grad;
    const auto trained_encoder = w.nets.generator->encoder->named_parameters();
    for (auto& p : random->encoder->named_parameters()) p.value().copy_(trained_encoder[p.key()]);
  }
  random->eval();
  const ImageFunction g_random = [&](const torch::Tensor& c, const torch::Tensor& s) { return random->forward(c, s); };
  const auto randomised = saliency(g_random, w.content, w.style);
  w.image("randomised_saliency_content.png",
          heat_overlay(w.content, pixel_map(randomised.content), "saliency, randomised G", kDisplay));
  const auto map = pixel_map(trained.content);
  const auto curve =
      deletion_curve(w.g, w.content, w.style, map, make_baseline(w.content, Baseline::Blurred), {}, 10, 0);
  w.image("deletion_curve.png", line_plot(curve.fraction, {curve.by_attribution, curve.random},
                                          {"by saliency", "random"}, "deletion: output RMS change"));
  w.section = {{"randomisation_spearman_content", spearman(map, pixel_map(randomised.content))},
               {"randomisation_spearman_style", spearman(pixel_map(trained.style), pixel_map(randomised.style))},
               {"deletion_fraction", curve.fraction},
               {"deletion_by_attribution", curve.by_attribution},
               {"deletion_random", curve.random},
               {"deletion_auc_attribution", curve.auc_attribution},
               {"deletion_auc_random", curve.auc_random}};
}

using Method = void (*)(PairWork&);
const std::vector<std::pair<std::string, Method>>& methods() {
  static const std::vector<std::pair<std::string, Method>> all = {
      {"saliency", saliency_method},       {"smoothgrad", smoothgrad_method},
      {"integrated_gradients", integrated_gradients_method},
      {"gradcam", gradcam_method},         {"features", features_method},
      {"adain", adain_method},             {"style_layers", style_layers_method},
      {"alpha_sweep", alpha_sweep_method}, {"occlusion", occlusion_method},
      {"probe", probe_method},             {"trust", trust_method}};
  return all;
}

}  // namespace

const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& m : methods()) n.push_back(m.first);
    return n;
  }();
  return names;
}

void PairWork::image(const std::string& file, const cv::Mat& picture) {
  write_png(dir / file, picture);
  images.push_back(dir.filename().string() + "/" + file);
}

std::string explain_pair(PairWork& w, const std::vector<std::string>& wanted) {
  fs::create_directories(w.dir);
  {
    torch::NoGradGuard no_grad;
    w.output = w.nets.generator->forward(w.content.unsqueeze(0), w.style.unsqueeze(0))[0];
  }
  const std::string prefix = w.dir.filename().string() + "/";
  write_png(w.dir / "content.png", to_bgr(w.content, kDisplay));
  write_png(w.dir / "style.png", to_bgr(w.style, kDisplay));
  write_png(w.dir / "output.png", to_bgr(w.output, kDisplay));
  json summary = {{"content_image", prefix + "content.png"},
                  {"style_image", prefix + "style.png"},
                  {"output_image", prefix + "output.png"}};
  for (const auto& [name, method] : methods()) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), name) == wanted.end()) continue;
    w.section = json::object();
    w.images.clear();
    method(w);
    w.section["images"] = w.images;
    summary["methods"][name] = w.section;
  }
  return summary.dump();
}

}  // namespace atelier::explain
