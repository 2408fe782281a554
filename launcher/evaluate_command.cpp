// `atelier evaluate --checkpoint C --content DIR --style DIR [--pairs N] --out eval.json
// [--compare other.json]`: measure a checkpoint on (content, style) pairs
// (evaluate/ does the work), spread over the ranks of an mpirun job; rank 0
// writes the JSON and prints a one-screen table, or the difference to
// another evaluation.
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "comm/comm.h"
#include "data/data.h"
#include "evaluate/evaluate.h"
#include "launcher/commands.h"
#include "launcher/launcher.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

struct EvaluateArgs {
  std::string checkpoint;
  std::vector<std::string> content;  // folders or files
  std::vector<std::string> style;    // folders or files
  int64_t pairs = 0;                 // 0: every content x style pair
  int64_t size = 0;                  // 0: the checkpoint's data.crop_size
  int64_t batch = 8;
  int64_t threads = 0;               // 0: the cores shared among this machine's ranks
  std::string out;
  std::string compare;               // an earlier eval.json, or empty
  std::string vgg_weights;           // cyclegan: VGG-19 .pth for the loss network (empty = random VGG);
                                     // no checkpoint: AdaIN's encoder
  std::string decoder_weights;       // no checkpoint: AdaIN's decoder.pth
  std::string device = "auto";
};

const char* const kGroupTitles[][2] = {
    {"content", "content preservation (output vs its content image)"},
    {"style", "style match (output vs its style image, per VGG layer)"},
    {"cycle", "cycle reconstruction (cyclegan: each image through both generators)"},
    {"distribution", "distribution (outputs vs style images, pooled relu4_1 features)"},
};

// The images of one source option; a missing or empty folder is named.
std::vector<std::string> images_of(const std::vector<std::string>& sources, const std::string& option) {
  try {
    return data::list_images(sources);
  } catch (const data::DataError& e) {
    throw std::runtime_error(option + ": " + e.what());
  }
}

// Usage errors (exit 2), found before the checkpoint is loaded.
void check_args(const EvaluateArgs& args) {
  if (args.pairs < 0) throw ConfigError("--pairs: must be >= 0 (0 = every pair), got " + std::to_string(args.pairs));
  if (args.size != 0 && (args.size < 16 || args.size % 8 != 0))
    throw ConfigError("--size: " + std::to_string(args.size) + " must be a multiple of 8 and at least 16");
  if (args.batch < 1) throw ConfigError("--batch: must be at least 1, got " + std::to_string(args.batch));
  if (args.checkpoint.empty() && (args.vgg_weights.empty() || args.decoder_weights.empty()))
    throw ConfigError("--checkpoint: give a checkpoint, or AdaIN's pretrained model as --vgg-weights and "
                      "--decoder-weights");
  if (!args.checkpoint.empty() && !args.decoder_weights.empty())
    throw ConfigError("--decoder-weights measures AdaIN's pretrained model without a checkpoint; a checkpoint holds "
                      "its own decoder: give one or the other");
  const auto content = images_of(args.content, "--content");
  const auto style = images_of(args.style, "--style");
  const auto all = static_cast<int64_t>(content.size() * style.size());
  if (args.pairs > all)
    throw ConfigError("--pairs: " + std::to_string(args.pairs) + " asked for, but " + std::to_string(content.size()) +
                      " content x " + std::to_string(style.size()) + " style images make only " +
                      std::to_string(all) + " distinct pairs");
}

// Whether the checkpoint's encoder came from torchvision's ImageNet VGG-19:
// its config.yaml named a .pth (checkpoint_config clears the key, since the
// checkpoint holds the weights themselves).
bool trained_with_imagenet_vgg(const fs::path& checkpoint_dir) {
  try {
    const auto root = YAML::LoadFile((checkpoint_dir / "config.yaml").string());
    const auto path = root["model"]["vgg_weights"];
    return path && path.IsScalar() && !path.as<std::string>().empty();
  } catch (const YAML::Exception& e) {
    throw std::runtime_error("cannot read '" + (checkpoint_dir / "config.yaml").string() + "': " + e.what());
  }
}

// nlohmann writes inf and NaN as null; a PSNR of identical images is +inf.
json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// What was measured: a checkpoint at its step, or AdaIN's pretrained files.
struct Measured {
  json checkpoint, step, weights;  // weights: {vgg, decoder} without a checkpoint, else null
  std::string family;
  models::EncoderOptions encoder;  // the configured loss network (random VGG's width and seed)
  std::string loss_network;        // what measured: evaluate::loss_network_key
  std::string name() const {
    if (!checkpoint.is_null()) return checkpoint.get<std::string>() + " (step " + step.dump() + ")";
    return "AdaIN's pretrained model (" + weights["vgg"].get<std::string>() + ", " +
           weights["decoder"].get<std::string>() + ")";
  }
};

json to_json(const EvaluateArgs& args, const Measured& measured, int64_t size, const evaluate::EvalResult& result,
             int64_t skipped_files) {
  json loss_network = {{"weights", measured.loss_network == "random_vgg" ? "random" : "imagenet"},
                       {"distance", result.distance_name}};
  if (measured.loss_network == "squeezenet") {
    loss_network["network"] = "squeezenet1_1";
  } else {
    loss_network["network"] = "vgg19";
    loss_network["width"] = measured.loss_network == "vgg" ? int64_t{64} : measured.encoder.width;
    loss_network["seed"] = measured.encoder.random_seed;
  }
  json out = {{"checkpoint", measured.checkpoint},
              {"step", measured.step},
              {"model", measured.family},
              {"content", args.content},
              {"style", args.style},
              {"pairs", result.pairs},
              {"style_images", result.style_images},
              {"skipped_files", skipped_files},
              {"size", size},
              {"loss_network", loss_network}};
  if (!measured.weights.is_null()) out["weights"] = measured.weights;
  if (!result.distances_skipped.empty()) out["distances_skipped"] = result.distances_skipped;
  json metrics = json::object();
  for (const auto& m : result.metrics) metrics[m.key] = number_or_null(m.value);
  out["metrics"] = metrics;
  return out;
}

void print_table(const json& report, const Measured& measured, const evaluate::EvalResult& result) {
  std::printf("evaluated %s: %lld pairs, %lld style images, %lld px\n", measured.name().c_str(),
              static_cast<long long>(result.pairs), static_cast<long long>(result.style_images),
              static_cast<long long>(report["size"].get<int64_t>()));
  if (measured.loss_network == "random_vgg")
    std::printf("loss network: the fixed random VGG (width %lld, seed %lld), so the distances are \"%s\", not FID;\n"
                "comparable only with runs of the same loss network\n",
                static_cast<long long>(report["loss_network"]["width"].get<int64_t>()),
                static_cast<long long>(report["loss_network"]["seed"].get<int64_t>()), result.distance_name.c_str());
  for (const auto& [group, title] : kGroupTitles) {
    std::printf("%s\n", title);
    for (const auto& m : result.metrics)
      if (m.group == group) std::printf("  %-38s %12.5g  (%s is better)\n", m.label.c_str(), m.value,
                                        m.higher_is_better ? "higher" : "lower");
  }
  if (!result.distances_skipped.empty()) std::printf("  (no distances: %s)\n", result.distances_skipped.c_str());
}

json read_report(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("--compare: cannot read '" + path + "'");
  try {
    auto report = json::parse(in);
    if (!report.contains("metrics") || !report["metrics"].is_object())
      throw std::runtime_error("it has no \"metrics\" object");
    return report;
  } catch (const std::exception& e) {
    throw std::runtime_error("--compare: '" + path + "' is not an atelier evaluate report: " + e.what());
  }
}

// Warns where the two evaluations did not measure the same thing.
void print_comparability(const json& mine, const json& other) {
  if (mine["loss_network"] != other["loss_network"])
    std::printf("note: the loss networks differ (%s vs %s): the distances are not comparable\n",
                mine["loss_network"].dump().c_str(), other["loss_network"].dump().c_str());
  for (const char* key : {"content", "style", "pairs", "size"})
    if (mine[key] != other[key])
      std::printf("note: %s differs (%s vs %s)\n", key, mine[key].dump().c_str(), other[key].dump().c_str());
}

void print_comparison(const json& mine, const json& other, const evaluate::EvalResult& result,
                      const std::string& other_path) {
  std::printf("\ncompared with %s (%s, step %s)\n", other_path.c_str(), other.value("checkpoint", "?").c_str(),
              other.contains("step") ? other["step"].dump().c_str() : "?");
  print_comparability(mine, other);
  std::printf("  %-38s %12s %12s %12s\n", "metric", "this", "other", "this-other");
  for (const auto& m : result.metrics) {
    const auto& theirs = other["metrics"];
    if (!theirs.contains(m.key) || !theirs[m.key].is_number() || !std::isfinite(m.value)) {
      std::printf("  %-38s %12.5g %12s\n", m.label.c_str(), m.value,
                  theirs.contains(m.key) ? theirs[m.key].dump().c_str() : "(absent)");
      continue;
    }
    const double diff = m.value - theirs[m.key].get<double>();
    const char* verdict = diff == 0 ? "same" : ((diff > 0) == m.higher_is_better ? "better" : "worse");
    std::printf("  %-38s %12.5g %12.5g %+12.4g  %s\n", m.label.c_str(), m.value, theirs[m.key].get<double>(), diff,
                verdict);
  }
  for (const auto& [key, value] : other["metrics"].items()) {
    bool mine_has = false;
    for (const auto& m : result.metrics) mine_has = mine_has || m.key == key;
    if (!mine_has) std::printf("  %-38s %12s %12s\n", key.c_str(), "(absent)", value.dump().c_str());
  }
}

void write_report(const std::string& path, const json& report) {
  const fs::path out(path);
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  std::ofstream file(out, std::ios::trunc);
  file << report.dump(2) << "\n";
  if (!file) throw std::runtime_error("--out: cannot write '" + path + "'");
}

// A checkpoint's generator(s) on this rank's share of the set.
evaluate::EvalResult evaluate_checkpoint(const EvaluateArgs& args, const fs::path& dir, const trainer::Config& config,
                                         const evaluate::EvalSet& set, comm::Communicator& comm,
                                         evaluate::EvalOptions& options, torch::Device device) {
  if (config.model.family == "cyclegan") {
    // The checkpoint has no loss network: the configured one (random VGG of
    // its width and seed) or the VGG-19 file given here, in its own layout.
    auto encoder_options = config.model.generator.encoder;
    encoder_options.weights_path = args.vgg_weights;
    if (!args.vgg_weights.empty()) {
      encoder_options.network = "vgg19";
      encoder_options.width = 64;
      encoder_options.layout = "auto";
    }
    models::Encoder loss_network(encoder_options);
    auto generators = load_cyclegan_generators(dir, config);
    loss_network->to(device);
    generators.a2b->to(device);
    generators.b2a->to(device);
    options.loss_network = evaluate::loss_network_key(encoder_options);
    return evaluate::evaluate(generators.a2b, generators.b2a, loss_network, set, comm, options);
  }
  if (!args.vgg_weights.empty())
    throw ConfigError("--vgg-weights: an adain checkpoint measures with its own encoder; leave the option out");
  auto generator = load_generator(dir, config);
  generator->to(device);
  if (config.model.generator.encoder.network == "squeezenet1_1") {
    options.loss_network = "squeezenet";
  } else {
    options.loss_network = trained_with_imagenet_vgg(dir) ? "vgg" : "random_vgg";
  }
  return evaluate::evaluate(generator, set, comm, options);
}

int run_evaluate(const EvaluateArgs& args) {
  check_args(args);
  const json other = args.compare.empty() ? json() : read_report(args.compare);
  const auto env = comm::detect_environment();
  const auto comm = comm::make_communicator(env, {});
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(args.threads > 0 ? args.threads : std::max<int64_t>(1, cores / comm->world_size())));
  const auto device = resolve_device(args.device, "--device");  // refused before any work
  if (comm->rank() == 0) spdlog::info("device {}", device.reason);
  Measured measured;
  trainer::Config config;
  fs::path dir;
  if (args.checkpoint.empty()) {
    measured.family = "adain";
    measured.weights = {{"vgg", args.vgg_weights}, {"decoder", args.decoder_weights}};
  } else {
    dir = checkpoint::resolve(args.checkpoint);
    config = checkpoint_config(dir);
    measured.checkpoint = dir.string();
    measured.step = checkpoint::read_manifest(dir).step;
    measured.family = config.model.family;
  }
  measured.encoder = config.model.generator.encoder;
  // Without a checkpoint (and --size), data.crop_size's default: 128.
  const int64_t size = args.size > 0 ? args.size : config.data.augment.crop_size;
  const auto set = evaluate::load_eval_set({args.content, args.style, args.pairs, size}, comm->rank(), comm->world_size());
  if (comm->rank() == 0)
    spdlog::info("evaluating {} on {} pairs at {} px over {} rank(s)", measured.name(), set.total_pairs, size,
                 comm->world_size());
  evaluate::EvalOptions options;
  options.batch = args.batch;
  evaluate::EvalResult result;
  if (args.checkpoint.empty()) {
    auto generator = load_pretrained_generator(args.vgg_weights, args.decoder_weights);
    generator->to(device.device);
    options.loss_network = "vgg";
    result = evaluate::evaluate(generator, set, *comm, options);
  } else {
    result = evaluate_checkpoint(args, dir, config, set, *comm, options, device.device);
  }
  measured.loss_network = options.loss_network;
  if (comm->rank() != 0) return 0;  // every rank has the result; rank 0 reports it
  const auto report = to_json(args, measured, size, result, set.skipped_files);
  write_report(args.out, report);
  print_table(report, measured, result);
  if (!args.compare.empty()) print_comparison(report, other, result, args.compare);
  std::printf("\nwritten to %s\n", args.out.c_str());
  return 0;
}

}  // namespace

void add_evaluate_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<EvaluateArgs>();
  auto* cmd = app.add_subcommand("evaluate", "Measure a checkpoint: SSIM, PSNR, content/style losses, FD and KID");
  cmd->add_option("--checkpoint", args->checkpoint,
                  "Checkpoint: runs/x, runs/x/checkpoints, a step-N directory or a LATEST file");
  cmd->add_option("--content", args->content, "Content image folders or files (searched recursively)")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--style", args->style, "Style image folders or files")->required()->expected(1, -1);
  cmd->add_option("--pairs", args->pairs, "(content, style) pairs to evaluate (default 0: every pair)");
  cmd->add_option("--size", args->size, "Image side: centre crops of this size (default: the checkpoint's crop size; 128 without one)");
  cmd->add_option("--batch", args->batch, "Pairs stylised at once");
  cmd->add_option("--threads", args->threads, "LibTorch intra-op threads (default: cores / ranks on this machine)");
  cmd->add_option("--out", args->out, "JSON report to write")->required();
  add_device_option(*cmd, args->device);
  cmd->add_option("--compare", args->compare, "An earlier report: print this one's difference to it")
      ->check(CLI::ExistingFile);
  cmd->add_option("--vgg-weights", args->vgg_weights,
                  "cyclegan: a VGG-19 state dict (torchvision's, or AdaIN's vgg_normalised.pth) as the loss network "
                  "(default: the fixed random VGG); without --checkpoint: AdaIN's encoder, with --decoder-weights")
      ->check(CLI::ExistingFile);
  cmd->add_option("--decoder-weights", args->decoder_weights,
                  "Instead of a checkpoint: AdaIN's decoder.pth, with --vgg-weights (AdaIN's pretrained model)")
      ->check(CLI::ExistingFile);
  cmd->footer("A cyclegan checkpoint is measured on its a2b outputs, plus the cycle reconstruction both ways.\n"
              "Under mpirun the pairs are spread over the ranks; the numbers equal a single rank's.\n"
              "Exit code 2: bad options; 1: an image, a folder or the checkpoint could not be used.");
  cmd->callback([args, &exit_code] { exit_code = run_evaluate(*args); });
}

}  // namespace atelier::launcher
