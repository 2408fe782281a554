// From a checkpoint path and image files to explained pairs: resolve and
// verify the checkpoint, load the networks, load the images, split the pairs
// across ranks.
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

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

torch::Tensor load_image(const std::string& path, int64_t size, const char* role) {
  try {
    return data::load_centered(path, size);
  } catch (const data::DataError& e) {
    throw ExplainError(std::string(role) + " image: " + e.what());
  }
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
  // Every input is read before any work so a bad file fails in seconds.
  std::vector<torch::Tensor> contents, styles;
  for (const auto& path : options.content) contents.push_back(load_image(path, options.size, "content").to(options.device));
  for (const auto& path : options.style) styles.push_back(load_image(path, options.size, "style").to(options.device));

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
    summary["content"] = options.content[ci];
    summary["style"] = options.style[si];
    summaries.push_back(summary.dump());
  }
  return summaries;
}

void explain_checkpoint(const ExplainOptions& options) { write_report(options, explain_pairs(options)); }

}  // namespace atelier::explain
