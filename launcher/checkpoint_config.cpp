// What a checkpoint holds for the commands that use a trained model
// (stylize, export, evaluate): its training configuration and its
// generator; or AdaIN's pretrained generator from its weight files.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "launcher/commands.h"
#include "launcher/launcher.h"

namespace atelier::launcher {
namespace fs = std::filesystem;

trainer::Config checkpoint_config(const fs::path& checkpoint_dir) {
  const fs::path file = checkpoint_dir / "config.yaml";
  std::ifstream in(file);
  if (!in) throw std::runtime_error("checkpoint has no readable config.yaml: '" + file.string() + "'");
  std::ostringstream text;
  text << in.rdbuf();
  // The checkpoint holds the encoder's and decoder's weights itself; the
  // .pth files they were first loaded from may not exist on this machine, and
  // parse_config would refuse the configuration (and the networks would try
  // to read them) if they stayed. Their layouts stay (vgg_layout, decoder_output).
  // A SqueezeNet encoder is rebuilt from the shipped weights, which the
  // checkpoint's own copy then overwrites.
  try {
    return parse_config(text.str(), {"model.vgg_weights=", "model.decoder_weights=", "model.squeezenet_dir="},
                        file.string());
  } catch (const ConfigError& e) {
    // A damaged checkpoint is a failed run (exit 1), not a bad command line.
    throw std::runtime_error(std::string("checkpoint configuration unusable: ") + e.what());
  }
}

namespace {

// The checkpoint must hold a `family` model and verify.
void check_verified(const fs::path& checkpoint_dir, const trainer::Config& config, const std::string& family) {
  if (config.model.family != family)
    throw std::runtime_error("checkpoint '" + checkpoint_dir.string() + "' holds a model.family '" +
                             config.model.family + "' model, not " + family);
  checkpoint::verify(checkpoint_dir);
}

// `generator` with the checkpoint's `file` loaded into it, in eval mode.
template <typename Generator>
Generator loaded(const fs::path& checkpoint_dir, const std::string& file, Generator generator) {
  const fs::path path = checkpoint_dir / file;
  try {
    torch::load(generator, path.string());
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot load generator '" + path.string() + "': " + e.what_without_backtrace());
  }
  generator->eval();
  return generator;
}

// G_A translates A (content) to B (style); G_B the other way.
const char* cyclegan_file(const std::string& direction) {
  return direction == "a2b" ? "generator_a.pt" : "generator_b.pt";
}

}  // namespace

models::AdaINGenerator load_generator(const fs::path& checkpoint_dir, const trainer::Config& config) {
  check_verified(checkpoint_dir, config, "adain");
  return loaded(checkpoint_dir, "generator.pt", models::AdaINGenerator(config.model.generator));
}

models::AdaINGenerator load_pretrained_generator(const std::string& vgg_weights, const std::string& decoder_weights) {
  models::GeneratorOptions options;
  options.encoder.width = 64;  // AdaIN's decoder reads relu4_1's 512 channels
  options.encoder.weights_path = vgg_weights;
  options.decoder.width = 64;
  options.decoder.weights_path = decoder_weights;
  try {
    models::AdaINGenerator generator(options);
    generator->eval();
    return generator;
  } catch (const models::ModelError& e) {
    throw std::runtime_error(std::string("cannot build the pretrained AdaIN model: ") + e.what());
  }
}

models::ResnetGenerator load_cyclegan_generator(const fs::path& checkpoint_dir, const trainer::Config& config,
                                                const std::string& direction) {
  if (direction != "a2b" && direction != "b2a")
    throw ConfigError("--direction: unknown value '" + direction + "' (allowed: a2b, b2a)");
  check_verified(checkpoint_dir, config, "cyclegan");
  return loaded(checkpoint_dir, cyclegan_file(direction), models::ResnetGenerator(config.model.resnet));
}

CycleGANGenerators load_cyclegan_generators(const fs::path& checkpoint_dir, const trainer::Config& config) {
  check_verified(checkpoint_dir, config, "cyclegan");
  return {loaded(checkpoint_dir, cyclegan_file("a2b"), models::ResnetGenerator(config.model.resnet)),
          loaded(checkpoint_dir, cyclegan_file("b2a"), models::ResnetGenerator(config.model.resnet))};
}

}  // namespace atelier::launcher
