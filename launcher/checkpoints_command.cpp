// `atelier checkpoints --run runs/x [--verify]`: what can this run resume from?
#include <cstdio>
#include <filesystem>
#include <memory>

#include "checkpoint/checkpoint.h"
#include "launcher/commands.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

struct CheckpointsArgs {
  std::string run_dir;
  bool verify = false;
};

uint64_t directory_bytes(const fs::path& dir) {
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) total += entry.file_size();
  return total;
}

std::string human_bytes(uint64_t bytes) {
  char buf[32];
  if (bytes >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  else if (bytes >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1ull << 20));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024);
  return buf;
}

// Prints one row per checkpoint; returns the number that failed their check.
int run_checkpoints(const CheckpointsArgs& args) {
  const fs::path dir = fs::path(args.run_dir) / "checkpoints";
  if (!fs::is_directory(dir))
    throw std::runtime_error("'" + args.run_dir + "' has no checkpoints/ directory (is it a run directory?)");
  const auto latest = checkpoint::named_latest(dir);
  const auto check = args.verify ? checkpoint::Check::Checksums : checkpoint::Check::Sizes;
  std::printf("%-10s %-22s %-6s %-10s %-10s %s\n", "step", "created (UTC)", "epoch", "size", "ranks", "status");
  int bad = 0;
  for (const auto& ckpt : checkpoint::list(dir)) {
    std::string created = "?", epoch = "?", ranks = "?", status;
    try {
      const auto manifest = checkpoint::read_manifest(ckpt);
      created = manifest.created;
      epoch = std::to_string(manifest.epoch);
      ranks = checkpoint::describe_world_history(manifest.world_history, manifest.step);
      checkpoint::verify(ckpt, check);
      status = args.verify ? "verified" : "complete (sizes checked; --verify for checksums)";
    } catch (const checkpoint::CheckpointError& e) {
      status = std::string("CORRUPT: ") + e.what();
      ++bad;
    }
    if (latest && *latest == ckpt) status += "  <- LATEST";
    std::printf("%-10s %-22s %-6s %-10s %-10s %s\n", ckpt.filename().string().c_str(), created.c_str(),
                epoch.c_str(), human_bytes(directory_bytes(ckpt)).c_str(), ranks.c_str(), status.c_str());
  }
  return bad == 0 ? 0 : kExitFailure;
}

}  // namespace

void add_checkpoints_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<CheckpointsArgs>();
  auto* cmd = app.add_subcommand("checkpoints", "List a run's checkpoints with step, time, size, the ranks that trained them and status");
  cmd->add_option("--run", args->run_dir, "Run directory (runs/<name>)")->required();
  cmd->add_flag("--verify", args->verify, "Re-check every file's CRC-32C (default: sizes only)");
  cmd->footer("Exit code 1 when any checkpoint is corrupt.");
  cmd->callback([args, &exit_code] { exit_code = run_checkpoints(*args); });
}

}  // namespace atelier::launcher
