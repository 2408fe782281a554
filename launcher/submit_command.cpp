// `atelier submit`: a training job on a SLURM cluster. The configuration is
// checked here first, so a bad key is refused before anything reaches
// sbatch; the rendered script and the configuration the job trains with are
// kept in <run>/slurm/, and the job id is recorded there for `atelier status`.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "checkpoint/checkpoint.h"
#include "launcher/commands.h"
#include "launcher/launcher.h"
#include "launcher/slurm_job.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

struct SubmitArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string profile = "local";
  JobRequest request;
  bool dry_run = false;
};

void write_file(const fs::path& path, const std::string& text) {
  const fs::path partial = path.string() + ".partial";
  {
    std::ofstream out(partial, std::ios::trunc);
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + partial.string());
  }
  fs::rename(partial, path);  // a job restarting now reads the old file or the new one
}

// A second job on the same run directory would train it twice at once.
void refuse_if_active(const fs::path& run_dir) {
  const auto previous = recorded_job_id(run_dir);
  if (!previous) return;
  const auto state = query_job(*previous);
  if (state && job_is_active(state->state))
    throw std::runtime_error("run directory " + run_dir.string() + " already has job " + *previous + " (" +
                             state->state + "): wait for it or scancel it before submitting again");
}

// Says what the job will do with the run directory as it is now.
void log_start_point(const fs::path& run_dir) {
  if (const auto found = checkpoint::latest(run_dir / "checkpoints"))
    spdlog::info("the job will resume from {}", found->string());
  else
    spdlog::info("the job will start {} from step 0", run_dir.string());
}

int run_submit(SubmitArgs args) {
  const auto config = load_config(args.config_path, args.overrides);
  const auto profile = load_profile(args.profile);
  auto& r = args.request;
  r.run_name = config.run.name;
  r.workdir = fs::current_path();
  r.run_dir = fs::absolute(fs::path(config.run.dir) / config.run.name).lexically_normal();
  if (r.atelier.empty() && profile.atelier.empty()) r.atelier = fs::read_symlink("/proc/self/exe").string();
  const auto job = resolve_job(r, profile);
  const auto script = render_sbatch_script(job, profile);
  if (args.dry_run) {
    std::cout << script;
    return 0;
  }
  refuse_if_active(r.run_dir);
  fs::create_directories(slurm_dir(r.run_dir));
  // The job trains with this snapshot, so a requeue months later, or an
  // edit of job.yaml meanwhile, still continues the same configuration.
  write_file(job_config_path(r.run_dir), dump_config(config));
  write_file(job_script_path(r.run_dir), script);
  log_start_point(r.run_dir);
  const auto job_id = submit_script(job_script_path(r.run_dir));
  record_job_id(r.run_dir, job_id);
  const auto& t = job.request;
  const std::string tasks = t.ntasks > 0 ? std::to_string(t.ntasks) + " task(s) on " + std::to_string(t.nodes) + " node(s)"
                                         : std::to_string(t.nodes) + " node(s) x " + std::to_string(t.ntasks_per_node) + " task(s)";
  spdlog::info("submitted job {}: {}, profile '{}', log {}/job-{}.out", job_id, tasks, profile.name,
               slurm_dir(r.run_dir).string(), job_id);
  std::cout << job_id << std::endl;
  return 0;
}

}  // namespace

void add_submit_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<SubmitArgs>();
  auto& r = args->request;
  auto* cmd = app.add_subcommand("submit", "Train on a SLURM cluster: render an sbatch script and submit it");
  add_config_options(*cmd, args->config_path, args->overrides);
  cmd->add_option("--profile", args->profile, "Site profile: NAME (cluster/profiles/NAME.yaml) or a .yaml path")
      ->capture_default_str();
  cmd->add_option("-N,--nodes", r.nodes, "Nodes")->check(CLI::Range(1, 100000))->capture_default_str();
  cmd->add_option("--gpus-per-node", r.gpus_per_node, "GPUs per node (0: a CPU job)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  cmd->add_option("--ntasks-per-node", r.ntasks_per_node, "Ranks per node (default: one per GPU, 1 on CPU)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("-n,--ntasks", r.ntasks,
                  "Ranks in all, placed by SLURM (CPU jobs; `scontrol update` can change it while the job is requeued)")
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("-p,--partition", r.partition, "Partition (default: the profile's)");
  cmd->add_option("-t,--time", r.time, "Time limit, e.g. 24:00:00 (default: the profile's)");
  cmd->add_option("--grace", r.grace_s, "Seconds before the time limit at which the job checkpoints and requeues")
      ->check(CLI::Range(1, 65535));
  cmd->add_option("--max-requeues", r.max_requeues, "Requeue at most this often (default: the profile's)")
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--atelier", r.atelier, "atelier binary the ranks run (default: this one, or the profile's)");
  cmd->add_flag("--dry-run", args->dry_run, "Print the sbatch script instead of submitting it");
  cmd->footer(
      "The job trains <run.dir>/<run.name> with `atelier train --auto-resume`. On SIGUSR1 (sent --grace\n"
      "seconds before the time limit, or by `scancel --signal=USR1 JOB`) the ranks checkpoint and exit 75,\n"
      "and the job requeues itself up to --max-requeues times. Its script, configuration, log and job ids\n"
      "are kept in <run>/slurm/; `atelier status <run>` shows where it stands.");
  cmd->callback([args, &exit_code] { exit_code = run_submit(*args); });
}

}  // namespace atelier::launcher
