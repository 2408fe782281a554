// `atelier export --checkpoint C --out g.pt [--direction a2b|b2a]`: the
// generator's weights as a state dict that Python's torch.load reads, for
// python/atelier_models.py (AdaINGenerator, or CycleGAN's ResnetGenerator).
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "launcher/commands.h"
#include "launcher/launcher.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

struct ExportArgs {
  std::string checkpoint;
  std::string out;
  std::string direction;  // cyclegan: a2b | b2a; empty = a2b
};

// Parameters and buffers (the encoder's ImageNet statistics) under their
// module paths, e.g. `decoder.layers.1.weight`: the keys a PyTorch module of
// the same structure has, so load_state_dict(strict=True) accepts them. A
// plain dict, not an OrderedDict with _metadata: that is what pickle_save
// writes and what load_state_dict needs.
c10::Dict<std::string, at::Tensor> state_dict(const torch::nn::Module& generator) {
  c10::Dict<std::string, at::Tensor> state;
  for (const auto& item : generator.named_parameters()) state.insert(item.key(), item.value().detach().contiguous());
  for (const auto& item : generator.named_buffers()) state.insert(item.key(), item.value().detach().contiguous());
  return state;
}

// Written under a temporary name and renamed: a reader never sees half a file.
void write_bytes(const fs::path& path, const std::vector<char>& bytes) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  const fs::path partial = path.string() + ".partial";
  std::ofstream out(partial, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::error_code ignored;
    fs::remove(partial, ignored);
    throw std::runtime_error("cannot write '" + path.string() + "'");
  }
  fs::rename(partial, path);
}

// The keyword arguments python/atelier_models.AdaINGenerator needs beyond
// the weights: none for VGG-19; the taps (and a linear output) for SqueezeNet.
std::string python_encoder_arguments(const models::GeneratorOptions& g) {
  if (g.encoder.network == "vgg19") return "";
  std::ostringstream out;
  out << ", encoder='" << g.encoder.network << "', content_layer='" << g.encoder.content_layer
      << "', style_layers=[";
  for (size_t i = 0; i < g.encoder.style_layers.size(); ++i) out << (i ? ", " : "") << "'" << g.encoder.style_layers[i] << "'";
  out << "]";
  if (g.decoder.output == "linear") out << ", tanh=False";
  return out.str();
}

int export_cyclegan(const ExportArgs& args, const fs::path& dir, const trainer::Config& config) {
  const auto direction = args.direction.empty() ? std::string("a2b") : args.direction;
  const auto generator = load_cyclegan_generator(dir, config, direction);
  const auto state = state_dict(*generator);
  write_bytes(args.out, torch::pickle_save(c10::IValue(state)));
  spdlog::info("exported {} tensors of {} ({}) to {}", state.size(), dir.string(), direction, args.out);
  std::cout << "Wrote " << args.out << " (CycleGAN generator " << direction << ", width " << config.model.resnet.width
            << ", " << config.model.resnet.blocks << " blocks). In Python:\n"
            << "  import torch, atelier_models  # python/atelier_models.py\n"
            << "  g = atelier_models.ResnetGenerator.from_state_dict(torch.load('" << args.out << "'))\n";
  return 0;
}

int run_export(const ExportArgs& args) {
  const fs::path dir = checkpoint::resolve(args.checkpoint);
  const auto config = checkpoint_config(dir);
  if (config.model.family == "cyclegan") return export_cyclegan(args, dir, config);
  if (!args.direction.empty())
    throw ConfigError("--direction: only cyclegan checkpoints have directions; this one is model.family '" +
                      config.model.family + "'");
  const auto generator = load_generator(dir, config);
  const auto state = state_dict(*generator);
  write_bytes(args.out, torch::pickle_save(c10::IValue(state)));
  spdlog::info("exported {} tensors of {} to {}", state.size(), dir.string(), args.out);
  const auto& encoder = config.model.generator.encoder;
  std::cout << "Wrote " << args.out << " (AdaIN generator, " << encoder.network << " encoder). In Python:\n"
            << "  import torch, atelier_models  # python/atelier_models.py\n"
            << "  g = atelier_models.AdaINGenerator.from_state_dict(torch.load('" << args.out << "')"
            << python_encoder_arguments(config.model.generator) << ")\n";
  return 0;
}

}  // namespace

void add_export_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "Write a checkpoint's generator as a PyTorch state dict (torch.load)");
  cmd->add_option("--checkpoint", args->checkpoint,
                  "Checkpoint: runs/x, runs/x/checkpoints, a step-N directory or a LATEST file")
      ->required();
  cmd->add_option("--out", args->out, "Output file, e.g. g.pt")->required();
  cmd->add_option("--direction", args->direction,
                  "cyclegan: which generator, a2b (content domain to style domain, default) or b2a");
  cmd->footer("Load it with python/atelier_models.py: AdaINGenerator.from_state_dict(torch.load(path)) (a\n"
              "SqueezeNet one also takes its layers; the command prints the call), or for a cyclegan\n"
              "checkpoint ResnetGenerator.from_state_dict(torch.load(path)).");
  cmd->callback([args, &exit_code] { exit_code = run_export(*args); });
}

}  // namespace atelier::launcher
