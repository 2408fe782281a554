// Exact resume through the real binary under `mpirun -np 2`: a rank killed
// with SIGKILL at several points, a SIGUSR1/SIGTERM on one rank, a write
// that fails on a file-size limit. Every interrupted run, resumed, must end
// with parameters bit-identical to a run that was never interrupted.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "tests/comm/run_command.h"
#include "tests/support/pattern_images.h"
#include "tests/support/tiny_run.h"

namespace atelier::checkpoint {
namespace {
namespace fs = std::filesystem;
using comm::testing::run_command;

constexpr int kSteps = 40;

// A job started in the background, in its own process group.
class Job {
 public:
  explicit Job(const std::string& command) {
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    std::string sh = "/bin/sh", c = "-c", cmd = "exec " + command + " >/dev/null 2>&1";
    char* argv[] = {sh.data(), c.data(), cmd.data(), nullptr};
    if (posix_spawn(&pid_, "/bin/sh", nullptr, &attr, argv, environ) != 0) pid_ = -1;
    posix_spawnattr_destroy(&attr);
  }
  ~Job() {
    if (pid_ > 0 && !exited_) {
      ::kill(-pid_, SIGKILL);
      wait();
    }
  }
  bool running() {
    if (exited_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) record(status);
    return !exited_;
  }
  int wait() {
    int status = 0;
    if (!exited_ && ::waitpid(pid_, &status, 0) == pid_) record(status);
    return code_;
  }
  // The pid of MPI rank `rank` among this job's processes.
  pid_t rank_pid(int rank) const {
    const std::string wanted = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
    for (const auto& entry : fs::directory_iterator("/proc")) {
      const auto name = entry.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      const pid_t pid = std::stoi(name);
      if (!descends_from_job(pid)) continue;
      std::ifstream env(entry.path() / "environ", std::ios::binary);
      for (std::string var; std::getline(env, var, '\0');)
        if (var == wanted) return pid;
    }
    return -1;
  }

 private:
  // mpirun puts its ranks into process groups of their own: follow parents.
  bool descends_from_job(pid_t pid) const {
    for (int depth = 0; depth < 8 && pid > 1; ++depth) {
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string line;
      if (!std::getline(stat, line)) return false;
      // "pid (comm) state ppid ...": comm may hold spaces, so parse after ')'.
      std::istringstream rest(line.substr(line.rfind(')') + 2));
      char state = 0;
      pid_t parent = 0;
      rest >> state >> parent;
      if (parent == pid_) return true;
      pid = parent;
    }
    return false;
  }

  void record(int status) {
    exited_ = true;
    code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = -1;
};

int lines_in(const fs::path& path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

class ExactResume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root = fs::temp_directory_path() / ("atelier-resume-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 7, 1);
    testing_support::write_pattern_images(root / "style", 4, 2);
    const auto ref = run_command(train_command("reference", 3));
    ASSERT_EQ(ref.status, 0) << ref.output;
    reference = testing_support::checkpoint_parameters(checkpoint_of("reference", kSteps));
  }
  static void TearDownTestSuite() { fs::remove_all(root); }

  static std::string train_command(const std::string& name, int every, const std::string& extra = "") {
    return comm::testing::mpirun(2) + ATELIER_BINARY + " train" +
           testing_support::tiny_train_args(root, name, kSteps, 1, every) + extra;
  }
  static fs::path run_dir(const std::string& name) { return root / "runs" / name; }
  static fs::path checkpoint_of(const std::string& name, int step) {
    return run_dir(name) / "checkpoints" / ("step-" + std::to_string(step));
  }

  // Starts `name` in the background and waits until it has done `steps`
  // steps. False when it finished first (the machine outran the test).
  static bool start_and_reach(Job& job, const std::string& name, int steps) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (job.running() && std::chrono::steady_clock::now() < deadline) {
      if (lines_in(run_dir(name) / "metrics.jsonl") >= steps) return job.rank_pid(0) > 0 && job.rank_pid(1) > 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  }

  static void expect_matches_reference(const std::string& name) {
    const auto resumed = run_command(train_command(name, 3, " --resume"));
    ASSERT_EQ(resumed.status, 0) << resumed.output;
    const auto actual = testing_support::checkpoint_parameters(checkpoint_of(name, kSteps));
    ASSERT_EQ(actual.size(), reference.size());
    for (const auto& [key, value] : reference) EXPECT_TRUE(torch::equal(value, actual.at(key))) << name << " " << key;
  }

  static inline fs::path root;
  static inline std::map<std::string, torch::Tensor> reference;
};

// SIGKILL lands wherever the job is: mid-step, mid-write of an async
// checkpoint, between parts and manifest. The victim alternates between ranks.
TEST_F(ExactResume, ResumeIsBitIdenticalAfterAKillAtSeveralSteps) {
  for (const auto& [kill_at, victim] : std::vector<std::pair<int, int>>{{4, 1}, {14, 0}, {26, 1}}) {
    const std::string name = "killed-" + std::to_string(kill_at);
    bool killed = false;
    for (int attempt = 0; attempt < 3 && !killed; ++attempt) {
      fs::remove_all(run_dir(name));
      Job job(train_command(name, 3));
      if (!start_and_reach(job, name, kill_at)) continue;
      killed = ::kill(job.rank_pid(victim), SIGKILL) == 0;
      EXPECT_NE(job.wait(), 0) << name;
    }
    ASSERT_TRUE(killed) << name << ": the job finished before it could be killed, three times";
    EXPECT_FALSE(fs::exists(checkpoint_of(name, kSteps))) << name;
    ASSERT_TRUE(latest(run_dir(name) / "checkpoints").has_value()) << name;
    expect_matches_reference(name);
  }
}

// SLURM's --signal goes to one task; a second signal arrives during the
// save. Every rank stops at the same step with one checkpoint and exit 75.
TEST_F(ExactResume, ASignalToOneRankStopsTheJobWithOneCheckpointAndExit75) {
  for (const auto& [name, victim, signal] : std::vector<std::tuple<std::string, int, int>>{
           {"usr1-rank1", 1, SIGUSR1}, {"term-rank0", 0, SIGTERM}}) {
    bool signalled = false;
    int status = -1;
    for (int attempt = 0; attempt < 3 && !signalled; ++attempt) {
      fs::remove_all(run_dir(name));
      Job job(train_command(name, 1000));
      if (!start_and_reach(job, name, 5)) continue;
      signalled = ::kill(job.rank_pid(victim), signal) == 0;
      ::kill(job.rank_pid(victim), signal);
      ::kill(job.rank_pid(1 - victim), SIGUSR1);
      status = job.wait();
    }
    ASSERT_TRUE(signalled) << name;
    EXPECT_EQ(status, kExitStopped) << name;
    const auto stop = named_latest(run_dir(name) / "checkpoints");
    ASSERT_TRUE(stop.has_value()) << name;
    const auto manifest = read_manifest(*stop);
    EXPECT_GE(manifest.step, 5) << name;
    EXPECT_LT(manifest.step, kSteps) << name;
    EXPECT_NO_THROW(verify(*stop)) << name;
    for (const auto* part : {"rank-0/rng.pt", "rank-1/rng.pt", "rank-0/state.json", "rank-1/state.json"})
      EXPECT_TRUE(fs::exists(*stop / part)) << name << " " << part;
    EXPECT_EQ(list(run_dir(name) / "checkpoints").size(), 1u) << name;
    expect_matches_reference(name);
  }
}

// A full disk, simulated by `ulimit -f`: the checkpoint write fails with
// EFBIG, the run fails saying so, and the previous checkpoint stays intact.
TEST_F(ExactResume, AFailedCheckpointWriteKeepsThePreviousAndFailsTheRun) {
  const std::string name = "full-disk";
  const auto args = testing_support::tiny_train_args(root, name, 4, 2, 2);
  const auto first = run_command(std::string(ATELIER_BINARY) + " train" + args + " --set train.steps=2");
  ASSERT_EQ(first.status, 0) << first.output;
  const auto step2 = run_dir(name) / "checkpoints" / "step-2";
  uintmax_t largest = 0;
  for (const auto& f : read_manifest(step2).files) largest = std::max<uintmax_t>(largest, f.size);
  const auto blocks = (largest - 1) / 1024;  // ulimit -f counts 1 KiB blocks
  const auto limited = run_command("sh -c 'ulimit -f " + std::to_string(blocks) + "; exec " + ATELIER_BINARY +
                                   " train --resume" + args + "'");
  EXPECT_EQ(limited.status, 1) << limited.output;
  EXPECT_NE(limited.output.find("File too large"), std::string::npos) << limited.output;
  EXPECT_EQ(latest(run_dir(name) / "checkpoints"), step2);
  EXPECT_NO_THROW(verify(step2));
  EXPECT_FALSE(fs::exists(run_dir(name) / "checkpoints" / "step-4"));
}

}  // namespace
}  // namespace atelier::checkpoint
