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
#include "tests/support/background_job.h"
#include "tests/support/pattern_images.h"
#include "tests/support/tiny_run.h"

namespace atelier::checkpoint {
namespace {
namespace fs = std::filesystem;
using comm::testing::run_command;
using testing_support::Job;

constexpr int kSteps = 40;

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
    return testing_support::reach_steps(job, run_dir(name) / "metrics.jsonl", steps, 2);
  }

  static void expect_matches_reference(const std::string& name) {
    const auto resumed = run_command(train_command(name, 3, " --resume"));
    ASSERT_EQ(resumed.status, 0) << resumed.output;
    const auto actual = testing_support::checkpoint_parameters(checkpoint_of(name, kSteps));
    ASSERT_EQ(actual.size(), reference.size());
    for (const auto& [key, value] : reference) EXPECT_TRUE(torch::equal(value, actual.at(key))) << name << " " << key;
    // Byte-identical too, optimiser files included (Adam's state is saved
    // by parameter position, not by this process's tensor addresses).
    const auto files = read_manifest(checkpoint_of(name, kSteps)).files;
    const auto expected = read_manifest(checkpoint_of("reference", kSteps)).files;
    ASSERT_EQ(files.size(), expected.size()) << name;
    for (size_t i = 0; i < files.size(); ++i) {
      EXPECT_EQ(files[i].name, expected[i].name) << name;
      if (files[i].name == "config.yaml") continue;  // names the run
      EXPECT_EQ(files[i].crc32c, expected[i].crc32c) << name << " " << files[i].name << " differs from the reference's";
    }
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
