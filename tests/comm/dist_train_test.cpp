// Data-parallel training end to end through the real binary: 2 ranks under
// mpirun against 1 rank with the same global batch, and `atelier launch`
// followed by a resume on another world size.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <torch/torch.h>

#include "models/models.h"
#include "tests/comm/run_command.h"
#include "tests/support/pattern_images.h"
#include "tests/support/tiny_run.h"

namespace atelier::comm {
namespace {
namespace fs = std::filesystem;
using testing::run_command;


class DistTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-dist-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 9, 1);
    testing_support::write_pattern_images(root / "style", 5, 2);
  }
  void TearDown() override { fs::remove_all(root); }

  std::string tiny(const std::string& name, int steps, int batch) const {
    return testing_support::tiny_train_args(root, name, steps, batch);
  }

  std::map<std::string, torch::Tensor> parameters(const fs::path& ckpt) const {
    return testing_support::checkpoint_parameters(ckpt);
  }

  nlohmann::json manifest(const fs::path& ckpt) const {
    std::ifstream in(ckpt / "manifest.json");
    return nlohmann::json::parse(in);
  }

  fs::path root;
};

// Five steps with kRoundingSafeAdam: the runs stay within ~1e-7 of each
// other (GAN training amplifies rounding over many more steps).
constexpr int kSteps = 5;

// Replicas are compared bit for bit after every step by the trainer itself
// (dist.verify_every=1 makes a divergence a failed run).
TEST_F(DistTrain, TwoRanksOfBatchBMatchOneRankOfBatch2B) {
  const std::string bin = ATELIER_BINARY;
  const auto one = run_command(bin + " train" + tiny("one", kSteps, 4) + testing_support::kRoundingSafeAdam);
  ASSERT_EQ(one.status, 0) << one.output;
  const auto two = run_command("timeout 240 " + testing::mpirun(2) + bin + " train" + tiny("two", kSteps, 2) + testing_support::kRoundingSafeAdam +
                               " --set dist.verify_every=1 --set dist.bucket_mb=0.005");
  ASSERT_EQ(two.status, 0) << two.output;

  const auto expected = parameters(root / "runs" / "one" / "checkpoints" / ("step-" + std::to_string(kSteps)));
  const auto actual = parameters(root / "runs" / "two" / "checkpoints" / ("step-" + std::to_string(kSteps)));
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, value] : expected)
    EXPECT_LT((value - actual.at(name)).abs().max().item<double>(), 1e-5) << name;
  EXPECT_EQ(manifest(root / "runs" / "two" / "checkpoints" / ("step-" + std::to_string(kSteps)))["world_size"], 2);
  EXPECT_EQ(manifest(root / "runs" / "one" / "checkpoints" / ("step-" + std::to_string(kSteps)))["world_size"], 1);

  // Only rank 0 writes the run directory; metrics hold one line per step.
  std::ifstream log(root / "runs" / "two" / "log.txt");
  for (std::string line; std::getline(log, line);) EXPECT_EQ(line.find("[rank 1]"), std::string::npos) << line;
  std::ifstream metrics(root / "runs" / "two" / "metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line);) ++lines;
  EXPECT_EQ(lines, kSteps);
}

TEST_F(DistTrain, LaunchRunsMpirunAndAnotherWorldSizeResumes) {
  const std::string bin = ATELIER_BINARY;
  const auto launched = run_command("timeout 240 " + bin + " launch -n 2" + tiny("launched", 2, 1));
  ASSERT_EQ(launched.status, 0) << launched.output;
  EXPECT_NE(launched.output.find("running: mpirun"), std::string::npos) << launched.output;
  EXPECT_EQ(launched.output.find("--allow-run-as-root") != std::string::npos, geteuid() == 0) << launched.output;
  EXPECT_EQ(manifest(root / "runs" / "launched" / "checkpoints" / "step-2")["world_size"], 2);

  // One rank goes on where two stopped and says once what that does to the batch.
  const auto resumed = run_command(bin + " train --resume" + tiny("launched", 4, 1));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  const std::string changed = "world size changed from 2 to 1 rank(s) at step 2";
  const auto at = resumed.output.find(changed);
  ASSERT_NE(at, std::string::npos) << resumed.output;
  EXPECT_EQ(resumed.output.find(changed, at + 1), std::string::npos) << "said twice:\n" << resumed.output;
  EXPECT_NE(resumed.output.find("the global batch changes from 2 to 1"), std::string::npos) << resumed.output;
  const auto history = manifest(root / "runs" / "launched" / "checkpoints" / "step-4")["world_history"];
  ASSERT_EQ(history.size(), 2u) << history.dump();
  EXPECT_EQ(history[0]["world_size"], 2);
  EXPECT_EQ(history[1]["world_size"], 1);
  EXPECT_EQ(history[1]["from_step"], 2);
}

// More ranks than cores needs --oversubscribe; a failing job's exit code is
// launch's (here every rank fails on a missing data folder).
TEST_F(DistTrain, LaunchOversubscribesAndReturnsTheJobsExitCode) {
  const std::string bin = ATELIER_BINARY;
  const int ranks = static_cast<int>(std::thread::hardware_concurrency()) + 1;
  const auto job = run_command("timeout 240 " + bin + " launch -n " + std::to_string(ranks) + tiny("bad", 2, 1) +
                               " --set data.content=" + (root / "missing").string());
  EXPECT_EQ(job.status, 1) << job.output;
  EXPECT_NE(job.output.find("--oversubscribe"), std::string::npos) << job.output;
  EXPECT_NE(job.output.find("missing"), std::string::npos) << job.output;
}

TEST_F(DistTrain, LaunchChecksTheConfigurationBeforeStartingRanks) {
  const auto job = run_command(std::string(ATELIER_BINARY) + " launch -n 2 --set dist.compression=int4");
  EXPECT_EQ(job.status, 2) << job.output;
  EXPECT_NE(job.output.find("dist.compression"), std::string::npos) << job.output;
  EXPECT_EQ(job.output.find("running:"), std::string::npos) << job.output;
}

}  // namespace
}  // namespace atelier::comm
