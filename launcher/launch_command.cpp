// `atelier launch -n N`: data-parallel training on this machine. It renders
// the mpirun line a user would otherwise have to get right by hand and runs
// it; the job's exit code is ours.
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

#include "launcher/commands.h"
#include "launcher/launcher.h"

namespace atelier::launcher {
namespace {

struct LaunchArgs {
  int ranks = 2;
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false;
  std::string mpirun = "mpirun";
};

// The mpirun line for `ranks` local ranks running `atelier train train_args`.
std::vector<std::string> mpirun_command(const std::string& mpirun, int ranks, unsigned cores, bool as_root,
                                        const std::string& atelier, const std::vector<std::string>& train_args) {
  std::vector<std::string> argv{mpirun};
  // OpenMPI refuses both by default: more ranks than cores, and root.
  if (static_cast<unsigned>(ranks) > cores) argv.push_back("--oversubscribe");
  if (as_root) argv.push_back("--allow-run-as-root");
  argv.insert(argv.end(), {"-np", std::to_string(ranks), atelier, "train"});
  argv.insert(argv.end(), train_args.begin(), train_args.end());
  return argv;
}

int run_launch(const LaunchArgs& args) {
  // The configuration is checked once here, so a bad key is one message
  // instead of one per rank.
  load_config(args.config_path, args.overrides);
  std::vector<std::string> train_args;
  if (!args.config_path.empty()) train_args.insert(train_args.end(), {"--config", args.config_path});
  for (const auto& o : args.overrides) train_args.insert(train_args.end(), {"--set", o});
  if (args.resume) train_args.push_back("--resume");
  const auto self = std::filesystem::read_symlink("/proc/self/exe").string();
  const auto argv = mpirun_command(args.mpirun, args.ranks, std::thread::hardware_concurrency(), geteuid() == 0,
                                   self, train_args);
  std::string line;
  for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
  spdlog::info("running: {}", line);
  std::vector<char*> c_argv;
  for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  const pid_t child = fork();
  if (child < 0) throw std::runtime_error("launch: fork failed: " + std::string(std::strerror(errno)));
  if (child == 0) {
    execvp(c_argv[0], c_argv.data());
    std::fprintf(stderr, "launch: cannot run %s: %s\n", c_argv[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0)
    if (errno != EINTR) throw std::runtime_error("launch: waitpid failed: " + std::string(std::strerror(errno)));
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace

void add_launch_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<LaunchArgs>();
  auto* cmd = app.add_subcommand("launch", "Train data-parallel on N local ranks (runs mpirun -np N atelier train)");
  cmd->add_option("-n,--ranks", args->ranks, "Number of ranks (processes)")->required()->check(CLI::Range(1, 4096));
  add_config_options(*cmd, args->config_path, args->overrides);
  cmd->add_flag("--resume", args->resume, "Continue from <run>/checkpoints/LATEST (same number of ranks)");
  cmd->add_option("--mpirun", args->mpirun, "The mpirun program")->capture_default_str();
  cmd->footer("train.batch_size is per rank: the global batch is batch_size x N.");
  cmd->callback([args, &exit_code] { exit_code = run_launch(*args); });
}

}  // namespace atelier::launcher
