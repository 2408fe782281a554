// From a checkpoint path and image files to explained pairs: resolve and
// verify the checkpoint, load the networks, load the images, split the pairs
// across ranks.
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <spdlog/spdlog.h>

#include "checkpoint/checkpoint.h"
#include "data/data.h"
#include "explain/pipeline.h"

namespace atelier::explain {
namespace fs = std::filesystem;

namespace {

std::string shape_text(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

// torch::load replaces a parameter of another shape without complaint, so
// the shapes the configuration builds are checked against what was loaded.
template <typename Module>
void load_module(Module& module, const fs::path& file) {
  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& p : module->named_parameters()) expected[p.key()] = p.value().sizes().vec();
  for (const auto& b : module->named_buffers()) expected[b.key()] = b.value().sizes().vec();
  try {
    torch::load(module, file.string());
  } catch (const c10::Error& e) {
    throw ExplainError("cannot load '" + file.string() + "': " + e.what_without_backtrace());
  }
  const auto check = [&](const std::string& key, const torch::Tensor& t) {
    if (expected.at(key) != t.sizes().vec())
      throw ExplainError("'" + file.string() + "' holds " + key + " of shape " + shape_text(t) +
                         ", but the checkpoint's config.yaml builds " + shape_text(torch::empty(expected.at(key))) +
                         " (widths or layers differ)");
  };
  for (const auto& p : module->named_parameters()) check(p.key(), p.value());
  for (const auto& b : module->named_buffers()) check(b.key(), b.value());
}

Networks load_networks(const ExplainOptions& options, const fs::path& dir) {
  Networks nets;
  try {
    nets.generator = models::AdaINGenerator(options.generator);
    nets.discriminator = models::PatchDiscriminator(options.discriminator);
  } catch (const models::ModelError& e) {
    throw ExplainError(std::string("cannot build the checkpoint's networks: ") + e.what());
  }
  load_module(nets.generator, dir / "generator.pt");
  load_module(nets.discriminator, dir / "discriminator.pt");
  // Explanations read the model as it is used, not as it trains (batch
  // norm running statistics, no dropout).
  nets.generator->eval();
  nets.discriminator->eval();
  nets.generator->to(options.device);
  nets.discriminator->to(options.device);
  return nets;
}

// The images of `sources` (files or folders, as data::list_images takes
// them) at the explain size, with the files they came from.
struct Inputs {
  std::vector<std::string> files;
  std::vector<torch::Tensor> images;
};

// An unreadable file is skipped with a warning naming it (from rank 0;
// every rank skips alike, so all agree on the pairs) and counted in
// `skipped`; sources without a readable image are an ExplainError naming them.
Inputs read_inputs(const std::vector<std::string>& sources, const ExplainOptions& options, const char* role,
                   int64_t& skipped) {
  std::vector<std::string> files;
  try {
    files = data::list_images(sources);
  } catch (const data::DataError& e) {
    throw ExplainError(std::string(role) + " images: " + e.what());
  }
  Inputs inputs;
  for (const auto& file : files) {
    try {
      inputs.images.push_back(data::load_centered(file, options.size).to(options.device));
      inputs.files.push_back(file);
    } catch (const data::DataError& e) {
      if (options.rank == 0) spdlog::warn("skipping {} image: {}", role, e.what());
      ++skipped;
    }
  }
  if (inputs.images.empty()) {
    std::string named;
    for (const auto& source : sources) named += (named.empty() ? "'" : ", '") + source + "'";
    throw ExplainError(std::string(role) + " images: none of the " + std::to_string(files.size()) +
                       " image files in " + named + " can be decoded");
  }
  return inputs;
}

void check_methods(const std::vector<std::string>& wanted) {
  for (const auto& name : wanted) {
    const auto& all = method_names();
    if (std::find(all.begin(), all.end(), name) != all.end()) continue;
    std::string allowed;
    for (const auto& m : all) allowed += (allowed.empty() ? "" : ", ") + m;
    throw ExplainError("unknown explanation method '" + name + "' (allowed: " + allowed + ")");
  }
}

}  // namespace

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

fs::path resolve_checkpoint(const fs::path& path) {
  try {
    return checkpoint::resolve(path);
  } catch (const checkpoint::CheckpointError& e) {
    throw ExplainError(e.what());
  }
}

std::vector<std::string> explain_pairs(const ExplainOptions& options) {
  check_methods(options.methods);
  if (options.content.empty() || options.style.empty()) throw ExplainError("explain needs content and style images");
  if (options.size < 16) throw ExplainError("explain needs --size >= 16, got " + std::to_string(options.size));
  const fs::path dir = resolve_checkpoint(options.checkpoint);
  try {
    checkpoint::verify(dir);
  } catch (const checkpoint::CheckpointError& e) {
    throw ExplainError(std::string("checkpoint does not verify: ") + e.what());
  }
  torch::set_num_threads(static_cast<int>(std::max<int64_t>(1, options.threads)));
  auto nets = load_networks(options, dir);
  // Every input is read before any work so bad inputs show in seconds.
  int64_t skipped = 0;
  const Inputs content = read_inputs(options.content, options, "content", skipped);
  const Inputs style = read_inputs(options.style, options, "style", skipped);
  if (skipped > 0 && options.rank == 0) spdlog::warn("skipped {} unreadable image file(s)", skipped);
  const auto& contents = content.images;
  const auto& styles = style.images;

  std::vector<std::string> summaries;
  const int64_t pairs = static_cast<int64_t>(contents.size() * styles.size());
  for (int64_t p = options.rank; p < pairs; p += std::max<int64_t>(1, options.world_size)) {
    const auto ci = static_cast<size_t>(p) / styles.size(), si = static_cast<size_t>(p) % styles.size();
    PairWork work;
    work.nets = nets;
    work.g = [&nets](const torch::Tensor& c, const torch::Tensor& s) { return nets.generator->forward(c, s); };
    work.generator_options = options.generator;
    work.style_statistics = options.style_statistics;
    work.content = contents[ci];
    work.style = styles[si];
    // The centre half: where the subject of a centre-cropped photo usually is.
    work.region = {options.size / 4, options.size / 4, options.size / 2, options.size / 2};
    work.dir = options.out / ("pair-" + std::to_string(p));
    // Seeded per pair so a pair's numbers do not depend on which rank ran it.
    torch::manual_seed(static_cast<uint64_t>(p));
    auto summary = nlohmann::json::parse(explain_pair(work, options.methods));
    summary["pair"] = p;
    summary["content"] = content.files[ci];
    summary["style"] = style.files[si];
    summaries.push_back(summary.dump());
  }
  return summaries;
}

void explain_checkpoint(const ExplainOptions& options) { write_report(options, explain_pairs(options)); }

}  // namespace atelier::explain
