// `atelier shard --input DIR --output DIR --shard-mb N`: pack a folder of
// images into checksummed shard files plus index.json for `atelier serve-data`.
#include <spdlog/spdlog.h>

#include <iostream>
#include <memory>

#include "data/data.h"
#include "launcher/commands.h"

namespace atelier::launcher {
namespace {

struct ShardArgs {
  std::string input;
  std::string output;
  int64_t shard_mb = 256;
};

int run_shard(const ShardArgs& args) {
  data::ShardOptions options;
  options.input = args.input;
  options.output = args.output;
  options.shard_bytes = args.shard_mb << 20;
  const auto report = data::write_shards(options);
  // Corrupt inputs were warned about one by one while packing; the summary
  // repeats them so that a re-run (which packs nothing) still shows them.
  for (const auto& file : report.corrupt) std::cout << "left out (does not decode): " << file << "\n";
  std::cout << (report.unchanged ? "unchanged: " : "wrote ") << report.records << " images in " << report.shards
            << " shard(s) under " << args.output << (report.corrupt.empty() ? "" : ", ") 
            << (report.corrupt.empty() ? "" : std::to_string(report.corrupt.size()) + " corrupt input(s) left out")
            << "\n";
  return 0;
}

}  // namespace

void add_shard_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ShardArgs>();
  auto* cmd = app.add_subcommand("shard", "Pack a folder of images into shards for `atelier serve-data`");
  cmd->add_option("--input", args->input, "Folder of images (searched recursively: .jpg .jpeg .png)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--output", args->output, "Folder for shard-NNNNN.bin files and index.json")->required();
  cmd->add_option("--shard-mb", args->shard_mb, "Start a new shard past this many MiB")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->footer("Re-running on an unchanged input (same paths, sizes, modification times) writes nothing.\n"
              "Images that do not decode are reported and left out.");
  cmd->callback([args, &exit_code] { exit_code = run_shard(*args); });
}

}  // namespace atelier::launcher
