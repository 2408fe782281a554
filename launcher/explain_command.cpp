// `atelier explain --checkpoint ... --content ... --style ... --out DIR`:
// rebuild the checkpoint's networks from its own config.yaml and explain
// every (content, style) pair (explain/ does the work).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "comm/comm.h"
#include "explain/explain.h"
#include "launcher/commands.h"
#include "launcher/launcher.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

struct ExplainArgs {
  std::string checkpoint;
  std::vector<std::string> content;
  std::vector<std::string> style;
  std::string out;
  int64_t size = 0;  // 0: the checkpoint's training crop size
  std::vector<std::string> methods;
  int64_t threads = 2;
  std::string device = "auto";
};

std::string allowed_methods() {
  std::string list;
  for (const auto& m : explain::method_names()) list += (list.empty() ? "" : ", ") + m;
  return list;
}

int run_explain(const ExplainArgs& args) {
  for (const auto& m : args.methods)
    if (std::find(explain::method_names().begin(), explain::method_names().end(), m) == explain::method_names().end())
      throw ConfigError("--methods: unknown explanation method '" + m + "' (allowed: " + allowed_methods() + ")");
  // Under mpirun the pairs are split across ranks (pair p on rank
  // p % world_size); every rank writes its pair-<p>/ files, rank 0 gathers
  // the summaries and writes the report.
  const auto comm = comm::make_communicator(comm::detect_environment(), {});
  const auto device = resolve_device(args.device, "--device");  // refused before any work
  const fs::path dir = explain::resolve_checkpoint(args.checkpoint);
  // The networks' shapes come from the checkpoint's own config.yaml.
  const auto config = checkpoint_config(dir);
  if (config.model.family != "adain")
    throw std::runtime_error("checkpoint '" + dir.string() + "' holds a model.family '" + config.model.family +
                             "' model; explain supports adain");
  explain::ExplainOptions options;
  options.checkpoint = dir;
  options.generator = config.model.generator;
  options.discriminator = config.model.discriminator;
  options.style_statistics = config.loss.style_statistics;
  options.content = args.content;
  options.style = args.style;
  options.out = args.out;
  options.size = args.size > 0 ? args.size : config.data.augment.crop_size;
  options.methods = args.methods;
  options.threads = args.threads;
  options.device = device.device;
  options.rank = comm->rank();
  options.world_size = comm->world_size();
  const auto joined = [](const std::vector<std::string>& sources) {
    std::string text;
    for (const auto& source : sources) text += (text.empty() ? "" : ", ") + source;
    return text;
  };
  spdlog::info("explaining {} (content {}; style {}; at {} px, {} rank(s), device {}) into {}", dir.string(),
               joined(args.content), joined(args.style), options.size, comm->world_size(), device.reason, args.out);
  std::string mine;
  for (const auto& summary : explain::explain_pairs(options)) mine += summary + "\n";
  std::vector<std::string> summaries;
  for (const auto& part : comm::all_gather_strings(*comm, mine)) {
    std::istringstream lines(part);
    for (std::string line; std::getline(lines, line);) summaries.push_back(line);
  }
  if (comm->rank() != 0) return 0;
  explain::write_report(options, summaries);
  std::cout << "\nExplanations in " << args.out << "/:\n"
            << "  report.html    index: configuration, loss curves, pairs (open in a browser)\n"
            << "  pair-<p>.html  every explanation of one (content, style) pair\n"
            << "  pair-<p>/      one PNG per explanation\n"
            << "  summary.json   every number the report shows\n";
  return 0;
}

}  // namespace

void add_explain_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ExplainArgs>();
  auto* cmd = app.add_subcommand("explain", "Explain a checkpoint: saliency, IG, Grad-CAM, features, report.html");
  cmd->add_option("--checkpoint", args->checkpoint,
                  "Checkpoint: a step-N directory, a checkpoints/LATEST file, or a run directory (its newest)")
      ->required();
  cmd->add_option("--content", args->content, "Content images or folders of them (one or more)")->required()->expected(1, -1);
  cmd->add_option("--style", args->style, "Style images or folders (one or more); every content x style pair is explained")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--out", args->out, "Output directory (report.html, summary.json, PNGs)")->required();
  cmd->add_option("--size", args->size, "Image side in pixels (default: the checkpoint's data.crop_size)")
      ->check(CLI::Range(16, 1024));
  cmd->add_option("--methods", args->methods, "Explanations to run (default: all): " + allowed_methods())
      ->expected(1, -1);
  cmd->add_option("--threads", args->threads, "LibTorch intra-op threads")->check(CLI::Range(1, 256));
  add_device_option(*cmd, args->device);
  cmd->callback([args, &exit_code] { exit_code = run_explain(*args); });
}

}  // namespace atelier::launcher
