// The `atelier` command line (CLI11). Errors from the libraries become one
// clear message and an exit code here, and nowhere else.
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>

#include "checkpoint/checkpoint.h"
#include "comm/comm.h"
#include "launcher/commands.h"
#include "launcher/launcher.h"

namespace atelier::launcher {
namespace {

// Rank for log prefixes, from whichever launcher started us (comm/ reads
// the variables). A malformed variable is reported when training starts.
int env_rank() {
  try {
    return comm::detect_environment().rank;
  } catch (const comm::CommError&) {
    return 0;
  }
}

struct TrainArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false;
  bool auto_resume = false;
  bool print_config = false;
};

// --auto-resume: continue when the run directory has a checkpoint that
// verifies, start fresh when it has none. What a SLURM job runs, so that a
// requeued or resubmitted job picks up where the last one stopped.
bool resume_automatically(const trainer::Config& config) {
  const auto dir = std::filesystem::path(config.run.dir) / config.run.name / "checkpoints";
  const auto found = checkpoint::latest(dir);
  if (env_rank() == 0) {
    if (found) spdlog::info("--auto-resume: resuming from {}", found->string());
    else spdlog::info("--auto-resume: no checkpoint under {}: starting from step 0", dir.string());
  }
  return found.has_value();
}

int run_train(const TrainArgs& args) {
  const auto config = load_config(args.config_path, args.overrides);
  const auto yaml = dump_config(config);
  if (args.print_config) {
    std::cout << yaml;
    return 0;
  }
  set_up_logging(config.run.log_level);
  // Refused here, before any work, with the reason (exit code 2); the
  // run's log names the device it chose.
  resolve_device(config.train.device, "train.device");
  if (env_rank() == 0) spdlog::info("OpenMP threads wait with {}", describe_openmp_waits());
  // Held around the whole run: a stop signal (SLURM's preemption USR1, a
  // TERM) that arrives while the run starts up is kept for its first step
  // boundary, and one that arrives after the last step no longer kills a
  // run that is complete.
  const checkpoint::StopSignals signals;
  const bool resume = args.resume || (args.auto_resume && resume_automatically(config));
  const auto result = trainer::train(config, yaml, resume);
  if (result.stop_signal != 0) {
    spdlog::warn("stopped on signal {} after step {}, checkpoint {}: continue with --resume (exit code {})",
                 result.stop_signal, result.last_step, result.checkpoint, checkpoint::kExitStopped);
    return checkpoint::kExitStopped;
  }
  if (signals.received() != 0)
    spdlog::info("signal {} arrived after the last step: the run is complete", signals.received());
  spdlog::info("done: {} steps; run directory {}", result.last_step, result.run_dir);
  if (result.rank != 0) return 0;  // rank 0 wrote the run directory and reports it
  std::cout << "\nResults in " << result.run_dir << "/:\n"
            << "  config.yaml    resolved configuration\n"
            << "  log.txt        log\n"
            << "  metrics.jsonl  losses, learning rates, images/s per step\n"
            << "  tb/            TensorBoard events (tensorboard --logdir " << result.run_dir << "/tb)\n"
            << "  samples/       " << result.sample_legend << " grids\n"
            << "  checkpoints/   " << (result.checkpoint.empty() ? "(none)" : result.checkpoint) << "\n";
  return 0;
}

}  // namespace

void add_device_option(CLI::App& cmd, std::string& device) {
  cmd.add_option("--device", device, "auto (a GPU when LibTorch sees one), cpu, cuda or cuda:N")->capture_default_str();
}

comm::DeviceChoice resolve_device(const std::string& requested, const std::string& option) {
  try {
    return comm::choose_device(requested, comm::detect_environment(), comm::device_facts());
  } catch (const comm::CommError& e) {
    throw ConfigError(option + ": " + e.what());
  }
}

void set_up_logging(const std::string& level) {
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [rank " + std::to_string(env_rank()) + "] [%^%l%$] %v");
  spdlog::set_level(spdlog::level::from_str(level));
}

void add_config_options(CLI::App& cmd, std::string& config_path, std::vector<std::string>& overrides) {
  cmd.add_option("-c,--config", config_path, "YAML configuration (default: the embedded configs/demo.yaml)")
      ->check(CLI::ExistingFile);
  cmd.add_option("--set", overrides, "Override one key, e.g. --set train.steps=50 (repeatable)")
      ->type_name("KEY=VALUE")
      ->expected(1)
      ->take_all();
}

void add_train_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", "Train a style-transfer GAN in <run.dir>/<run.name>");
  add_config_options(*cmd, args->config_path, args->overrides);
  auto* resume = cmd->add_flag("--resume", args->resume, "Continue from <run>/checkpoints/LATEST");
  cmd->add_flag("--auto-resume", args->auto_resume,
                "Continue from the newest verified checkpoint if there is one, else start fresh (SLURM jobs)")
      ->excludes(resume);
  cmd->add_flag("--print-config", args->print_config, "Print the resolved configuration and exit");
  cmd->footer("Configuration keys (YAML sections; each can be --set):\n" + describe_config_keys());
  cmd->callback([args, &exit_code] { exit_code = run_train(*args); });
}

int run(int argc, char** argv) {
  CLI::App app{"atelier: train style-transfer GANs data-parallel, resume exactly, explain what they learned"};
  app.require_subcommand(1);
  app.set_version_flag("--version", trainer::build_info());
  int exit_code = kExitUsage;
  add_train_command(app, exit_code);
  add_checkpoints_command(app, exit_code);
  add_stylize_command(app, exit_code);
  add_export_command(app, exit_code);
  add_launch_command(app, exit_code);
  add_submit_command(app, exit_code);
  add_status_command(app, exit_code);
  add_explain_command(app, exit_code);
  add_shard_command(app, exit_code);
  add_serve_data_command(app, exit_code);
  add_evaluate_command(app, exit_code);
  set_up_logging("info");
  // A file-size limit (ulimit -f) must fail the write that exceeds it with
  // EFBIG, which the checkpoint code reports, not kill the process silently.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every real parse error is a usage error,
    // whatever CLI11's own code for it (105, 106, ...).
    return app.exit(e) == 0 ? 0 : kExitUsage;
  } catch (const ConfigError& e) {
    spdlog::error("configuration: {}", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    // One failed rank ends the whole job now rather than at dist.timeout_s.
    comm::abort_job(kExitFailure);
    return kExitFailure;
  }
  return exit_code;
}

}  // namespace atelier::launcher
