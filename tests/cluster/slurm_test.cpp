// `atelier submit` against a real single-node SLURM (cluster/local/, started
// and stopped by the CTest fixture): a 2-rank job of the tiny model that
// completes, one preempted twice that requeues itself and ends bit-identical
// to an uninterrupted run, one cancelled and submitted again, and a bad
// configuration that never becomes a job. Nothing is timed: every wait polls
// for a state with a generous deadline.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "tests/comm/run_command.h"
#include "tests/support/pattern_images.h"
#include "tests/support/tiny_run.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;
using comm::testing::run_command;

constexpr int kSteps = 60;
constexpr auto kDeadline = std::chrono::seconds(240);

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int lines_in(const fs::path& path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

// What `scontrol show job` says about a job, as key -> value.
std::map<std::string, std::string> job_fields(const std::string& job_id) {
  std::map<std::string, std::string> out;
  std::istringstream words(run_command("scontrol show job -o " + job_id).output);
  for (std::string word; words >> word;)
    if (const auto eq = word.find('='); eq != std::string::npos) out.emplace(word.substr(0, eq), word.substr(eq + 1));
  return out;
}

bool finished(const std::string& state) {
  return state == "COMPLETED" || state == "FAILED" || state == "CANCELLED" || state == "TIMEOUT" ||
         state == "NODE_FAIL" || state == "OUT_OF_MEMORY";
}

class Slurm : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("SLURM_CONF", ATELIER_SLURM_CONF, 1);
    root = fs::temp_directory_path() / ("atelier-slurm-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 7, 1);
    testing_support::write_pattern_images(root / "style", 4, 2);
  }
  static void TearDownTestSuite() { fs::remove_all(root); }

  // No job of this test outlives it: the next test needs the node's cores.
  void TearDown() override {
    for (const auto& id : submitted_) run_command("scancel " + id);
    for (const auto& id : submitted_) wait_until(id, [](const auto& f) { return finished(f.at("JobState")); });
  }

  static fs::path run_dir(const std::string& name) { return root / "runs" / name; }
  static std::string train_args(const std::string& name, int checkpoint_every, int steps = kSteps) {
    // info: the tests read what --auto-resume decided from the job's log.
    return testing_support::tiny_train_args(root, name, steps, 1, checkpoint_every) + " --set run.log_level=info";
  }
  static std::string job_log(const fs::path& run, const std::string& id) {
    return read_text(run / "slurm" / ("job-" + id + ".out"));
  }

  // `atelier submit` of a 2-rank CPU job on the local profile; the job id.
  std::string submit(const std::string& name, int checkpoint_every, int steps = kSteps,
                     const std::string& tasks = "--ntasks-per-node 2") {
    const auto r = run_command(std::string(ATELIER_BINARY) + " submit --profile local " + tasks +
                               " --time 10:00 --grace 30" + train_args(name, checkpoint_every, steps));
    EXPECT_EQ(r.status, 0) << r.output;
    const auto last_line = r.output.substr(r.output.rfind('\n', r.output.size() - 2) + 1);
    const auto id = last_line.substr(0, last_line.find('\n'));
    EXPECT_FALSE(id.empty() || id.find_first_not_of("0123456789") != std::string::npos) << r.output;
    submitted_.push_back(id);
    return id;
  }

  // Polls until `done(scontrol fields)` holds; false at the deadline.
  template <typename Done>
  static bool wait_until(const std::string& id, Done done) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto f = job_fields(id);
      if (f.count("JobState") && done(f)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // Until the job runs and its metrics.jsonl has `lines` lines; false when
  // it finished first or the deadline passed.
  static bool wait_for_steps(const std::string& id, const fs::path& run, int lines) {
    bool reached = false;
    wait_until(id, [&](const auto& f) {
      reached = f.at("JobState") == "RUNNING" && lines_in(run / "metrics.jsonl") >= lines;
      return reached || finished(f.at("JobState"));
    });
    return reached;
  }

  static std::map<std::string, torch::Tensor> reference(int checkpoint_every, int steps = kSteps) {
    const std::string name = "reference-" + std::to_string(checkpoint_every) + "-" + std::to_string(steps);
    const auto r =
        run_command(comm::testing::mpirun(2) + ATELIER_BINARY + " train" + train_args(name, checkpoint_every, steps));
    EXPECT_EQ(r.status, 0) << r.output;
    return testing_support::checkpoint_parameters(run_dir(name) / "checkpoints" / ("step-" + std::to_string(steps)));
  }

  static void expect_identical(const std::map<std::string, torch::Tensor>& expected, const fs::path& ckpt) {
    const auto actual = testing_support::checkpoint_parameters(ckpt);
    ASSERT_EQ(actual.size(), expected.size());
    for (const auto& [key, value] : expected) EXPECT_TRUE(torch::equal(value, actual.at(key))) << key;
  }

  static inline fs::path root;
  std::vector<std::string> submitted_;
};

TEST_F(Slurm, SubmittedTwoRankJobCompletesAndStatusShowsIt) {
  const auto id = submit("complete", 1000);
  const auto run = run_dir("complete");
  ASSERT_TRUE(wait_until(id, [](const auto& f) { return finished(f.at("JobState")); })) << job_log(run, id);
  const auto f = job_fields(id);
  const auto log = job_log(run, id);
  ASSERT_EQ(f.at("JobState"), "COMPLETED") << log;
  EXPECT_EQ(f.at("Restarts"), "0");
  EXPECT_NE(log.find("--auto-resume: no checkpoint under"), std::string::npos) << log;
  EXPECT_NE(log.find("atelier: ranks exited with 0"), std::string::npos) << log;
  EXPECT_EQ(lines_in(run / "metrics.jsonl"), kSteps);
  const auto last = checkpoint::latest(run / "checkpoints");
  ASSERT_TRUE(last.has_value());
  const auto manifest = checkpoint::read_manifest(*last);
  EXPECT_EQ(manifest.step, kSteps);
  EXPECT_EQ(manifest.world_size, 2) << "srun --mpi=pmix must form one MPI world of 2 ranks";
  EXPECT_EQ(read_text(run / "slurm" / "jobs").substr(0, id.size() + 1), id + " ");

  const auto status = run_command(std::string(ATELIER_BINARY) + " status " + run.string());
  EXPECT_EQ(status.status, 0) << status.output;
  for (const std::string& line : std::vector<std::string>{"job:         " + id + " COMPLETED", "exit code 0:0",
                                 "last step:   " + std::to_string(kSteps) + ", ",
                                 "checkpoint:  " + last->string() + " (step " + std::to_string(kSteps)})
    EXPECT_NE(status.output.find(line), std::string::npos) << line << "\n" << status.output;
}

// The two ways a preemption signal arrives: `scancel --signal=USR1` straight
// to the ranks, and `scancel -b --signal=USR1` to the batch shell (what
// --signal=B:USR1@grace does before the time limit), which passes it on.
// The tiny model trains ~150 steps/s on an idle machine: enough steps that
// each start is still running when its signal has travelled through SLURM
// (seconds under load: 400 steps were not always enough).
TEST_F(Slurm, PreemptedJobCheckpointsRequeuesResumesAndEndsBitIdentical) {
  constexpr int kPreemptSteps = 1000;
  const auto expected = reference(1000, kPreemptSteps);
  const auto id = submit("preempted", 1000, kPreemptSteps);
  const auto run = run_dir("preempted");
  int steps_before = 0;  // metrics lines when the job last stopped
  for (const auto& [restart, scancel] : std::vector<std::pair<int, std::string>>{
           {1, "scancel --signal=USR1 "}, {2, "scancel -b --signal=USR1 "}}) {
    // A few steps into this start: its ranks are up and handle the signal.
    ASSERT_TRUE(wait_for_steps(id, run, steps_before + 4)) << "restart " << restart << ": the job ended (or never ran)\n"
                                                           << job_log(run, id);
    const auto sent = run_command(scancel + id);
    ASSERT_EQ(sent.status, 0) << sent.output;
    ASSERT_TRUE(wait_until(id, [&](const auto& f) {
      return std::atoi(f.at("Restarts").c_str()) >= restart || finished(f.at("JobState"));
    })) << job_log(run, id);
    ASSERT_EQ(job_fields(id).at("Restarts"), std::to_string(restart)) << job_log(run, id);
    steps_before = lines_in(run / "metrics.jsonl");
    ASSERT_LT(steps_before, kPreemptSteps) << "the job finished before the signal reached it\n" << job_log(run, id);
  }
  ASSERT_TRUE(wait_until(id, [](const auto& f) { return finished(f.at("JobState")); })) << job_log(run, id);
  const auto log = job_log(run, id);
  ASSERT_EQ(job_fields(id).at("JobState"), "COMPLETED") << log;
  EXPECT_EQ(count(log, "atelier: ranks exited with 75"), 2u) << log;
  EXPECT_NE(log.find("atelier: requeued (restart 1 of at most 3)"), std::string::npos) << log;
  EXPECT_NE(log.find("atelier: requeued (restart 2 of at most 3)"), std::string::npos) << log;
  EXPECT_EQ(count(log, "--auto-resume: resuming from"), 2u) << log;
  EXPECT_EQ(lines_in(run / "metrics.jsonl"), kPreemptSteps) << "every step logged once, across three starts";
  expect_identical(expected, run / "checkpoints" / ("step-" + std::to_string(kPreemptSteps)));
}

// Elastic: a job of 2 tasks (--ntasks 2) is preempted, and while it waits
// requeued its allocation shrinks to 1 task (`scontrol update`, as an
// operator or a smaller free slot would). The next start counts 1 rank,
// resumes the 2-rank checkpoint on it and finishes; the manifest records
// both world sizes.
TEST_F(Slurm, PreemptedOnTwoTasksAndRequeuedWithOneResumesAndFinishes) {
  constexpr int kElasticSteps = 1000;
  const std::string name = "elastic";
  const auto id = submit(name, 1000, kElasticSteps, "--ntasks 2");
  const auto run = run_dir(name);
  ASSERT_TRUE(wait_for_steps(id, run, 4)) << job_log(run, id);
  ASSERT_EQ(run_command("scancel -b --signal=USR1 " + id).status, 0);
  // Requeued, the job passes through COMPLETING before it waits as PENDING.
  ASSERT_TRUE(wait_until(id, [](const auto& f) {
    return (f.at("Restarts") == "1" && f.at("JobState") == "PENDING") || finished(f.at("JobState"));
  }))
      << job_log(run, id);
  ASSERT_EQ(job_fields(id).at("JobState"), "PENDING") << job_log(run, id);
  const auto stopped = checkpoint::latest(run / "checkpoints");
  ASSERT_TRUE(stopped.has_value()) << job_log(run, id);
  const int64_t stop_step = checkpoint::read_manifest(*stopped).step;
  ASSERT_LT(stop_step, kElasticSteps) << "the job finished before the signal reached it";
  const auto shrunk = run_command("scontrol update JobId=" + id + " NumTasks=1 NumCPUs=1");
  ASSERT_EQ(shrunk.status, 0) << shrunk.output;

  ASSERT_TRUE(wait_until(id, [](const auto& f) { return finished(f.at("JobState")); })) << job_log(run, id);
  const auto log = job_log(run, id);
  ASSERT_EQ(job_fields(id).at("JobState"), "COMPLETED") << log;
  EXPECT_NE(log.find("(start 1) on localhost, 2 rank(s)"), std::string::npos) << log;
  EXPECT_NE(log.find("(start 2) on localhost, 1 rank(s)"), std::string::npos) << log;
  EXPECT_NE(log.find("world size changed from 2 to 1 rank(s) at step " + std::to_string(stop_step)), std::string::npos)
      << log;
  EXPECT_EQ(lines_in(run / "metrics.jsonl"), kElasticSteps) << "every step logged once, across both starts";
  const auto manifest = checkpoint::read_manifest(run / "checkpoints" / ("step-" + std::to_string(kElasticSteps)));
  EXPECT_EQ(manifest.world_size, 1);
  EXPECT_EQ(manifest.world_history,
            (std::vector<checkpoint::WorldSpan>{{0, 2, 2}, {stop_step, 1, 1}}));
}

// scancel: SIGTERM to every rank (SIGKILL after KillWait). The job stops
// and is not requeued; submitted again, it continues from the newest
// complete checkpoint.
TEST_F(Slurm, CancelledJobResumesFromItsLastCheckpointWhenSubmittedAgain) {
  constexpr int kCancelSteps = 200;  // still running when scancel's signal arrives
  const auto expected = reference(3, kCancelSteps);
  const auto first = submit("cancelled", 3, kCancelSteps);
  const auto run = run_dir("cancelled");
  ASSERT_TRUE(wait_for_steps(first, run, 10)) << job_log(run, first);
  ASSERT_EQ(run_command("scancel " + first).status, 0);
  ASSERT_TRUE(wait_until(first, [](const auto& f) { return finished(f.at("JobState")); })) << job_log(run, first);
  EXPECT_EQ(job_fields(first).at("JobState"), "CANCELLED");
  EXPECT_EQ(job_fields(first).at("Restarts"), "0") << "a cancelled job must not requeue itself\n" << job_log(run, first);
  const auto stopped_at = checkpoint::latest(run / "checkpoints");
  ASSERT_TRUE(stopped_at.has_value()) << job_log(run, first);
  ASSERT_LT(checkpoint::read_manifest(*stopped_at).step, kCancelSteps) << "the job finished before scancel";

  const auto second = submit("cancelled", 3, kCancelSteps);
  ASSERT_NE(second, first);
  ASSERT_TRUE(wait_until(second, [](const auto& f) { return finished(f.at("JobState")); })) << job_log(run, second);
  const auto log = job_log(run, second);
  ASSERT_EQ(job_fields(second).at("JobState"), "COMPLETED") << log;
  EXPECT_NE(log.find("--auto-resume: resuming from " + stopped_at->string()), std::string::npos) << log;
  expect_identical(expected, run / "checkpoints" / ("step-" + std::to_string(kCancelSteps)));
}

TEST_F(Slurm, BadConfigIsRefusedBeforeAnythingReachesSbatch) {
  const auto before = run_command("squeue -h -o %i");
  ASSERT_EQ(before.status, 0) << before.output;
  const auto r = run_command(std::string(ATELIER_BINARY) + " submit --profile local --ntasks-per-node 2 --time 10:00" +
                             train_args("refused", 1000) + " --set train.batch_size=0");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("train.batch_size"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(run_dir("refused")));
  EXPECT_EQ(run_command("squeue -h -o %i").output, before.output);
}

}  // namespace
}  // namespace atelier::launcher
