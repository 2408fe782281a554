// `atelier status RUN_DIR`: where a run stands — its SLURM job, the last
// step and speed from metrics.jsonl, the checkpoint it would resume from.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "checkpoint/checkpoint.h"
#include "launcher/commands.h"
#include "launcher/slurm_job.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

struct StatusArgs {
  std::string run_dir;
};

// The last complete JSON line of metrics.jsonl (a line being written is skipped).
std::optional<nlohmann::json> last_metrics(const fs::path& file) {
  std::ifstream in(file);
  std::optional<nlohmann::json> last;
  for (std::string line; std::getline(in, line);) {
    auto parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object() && parsed.contains("step")) last = std::move(parsed);
  }
  return last;
}

void print_job(const fs::path& run_dir) {
  const auto job_id = recorded_job_id(run_dir);
  if (!job_id) {
    std::printf("job:         none recorded (not submitted with atelier submit)\n");
    return;
  }
  const auto state = query_job(*job_id);
  if (!state) {
    std::printf("job:         %s, no longer known to SLURM (scontrol and sacct have no record)\n", job_id->c_str());
    return;
  }
  std::printf("job:         %s %s", job_id->c_str(), state->state.c_str());
  if (!state->reason.empty() && state->reason != "None") std::printf(" (%s)", state->reason.c_str());
  std::printf(", run time %s of %s", state->run_time.c_str(), state->time_limit.c_str());
  if (!state->nodes.empty() && state->nodes != "(null)") std::printf(", nodes %s", state->nodes.c_str());
  if (state->source == "scontrol") std::printf(", requeued %d time(s)", state->restarts);
  if (!job_is_active(state->state)) std::printf(", exit code %s", state->exit_code.c_str());
  std::printf("\n");
}

void print_progress(const fs::path& run_dir) {
  const auto metrics = last_metrics(run_dir / "metrics.jsonl");
  if (!metrics) {
    std::printf("last step:   none yet (no metrics.jsonl lines)\n");
    return;
  }
  std::printf("last step:   %lld", static_cast<long long>(metrics->at("step").get<int64_t>()));
  if (metrics->contains("images_per_s") && (*metrics)["images_per_s"].is_number())
    std::printf(", %.1f images/s", (*metrics)["images_per_s"].get<double>());
  std::printf("\n");
}

void print_checkpoint(const fs::path& run_dir) {
  const auto found = checkpoint::latest(run_dir / "checkpoints");
  if (!found) {
    std::printf("checkpoint:  none (a job would start from step 0)\n");
    return;
  }
  const auto manifest = checkpoint::read_manifest(*found);
  std::printf("checkpoint:  %s (step %lld, %s, trained on %s)\n", found->string().c_str(),
              static_cast<long long>(manifest.step), manifest.created.c_str(),
              checkpoint::describe_world_history(manifest.world_history, manifest.step).c_str());
}

int run_status(const StatusArgs& args) {
  const fs::path run_dir = args.run_dir;
  if (!fs::is_directory(run_dir)) throw std::runtime_error("'" + args.run_dir + "' is not a directory");
  if (!fs::exists(run_dir / "config.yaml") && !fs::exists(slurm_dir(run_dir)))
    throw std::runtime_error("'" + args.run_dir + "' is not a run directory (no config.yaml, no slurm/)");
  std::printf("run:         %s\n", fs::absolute(run_dir).lexically_normal().string().c_str());
  print_job(run_dir);
  print_progress(run_dir);
  print_checkpoint(run_dir);
  return 0;
}

}  // namespace

void add_status_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<StatusArgs>();
  auto* cmd = app.add_subcommand("status", "Show a run's SLURM job, last step, images/s and last checkpoint");
  cmd->add_option("run_dir", args->run_dir, "Run directory (runs/<name>)")->required();
  cmd->footer("The job is the one `atelier submit` recorded last in <run>/slurm/jobs.");
  cmd->callback([args, &exit_code] { exit_code = run_status(*args); });
}

}  // namespace atelier::launcher
