// `atelier checkpoints`: lists what a run can resume from and flags damage.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "checkpoint/checkpoint.h"
#include "tests/launcher/run_atelier.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

class CheckpointsCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    run = fs::temp_directory_path() / ("atelier-cmd-" + std::to_string(std::random_device{}()));
    for (int step : {10, 20}) {
      checkpoint::save(run / "checkpoints", {step, 1, 1, "h"}, [](const fs::path& dir) {
        std::ofstream(dir / "weights.bin") << "0123456789";
      });
    }
  }
  void TearDown() override { fs::remove_all(run); }

  void flip_a_byte_of_step_20() {
    std::fstream f(run / "checkpoints" / "step-20" / "weights.bin", std::ios::in | std::ios::out);
    f.seekp(3);
    f.put('X');
  }

  fs::path run;
};

TEST_F(CheckpointsCommand, ListsEveryCheckpointNewestFirstAndMarksLatest) {
  const auto ran = run_atelier("checkpoints --run " + run.string() + " --verify");
  EXPECT_EQ(ran.status, 0) << ran.output;
  const auto at20 = ran.output.find("step-20"), at10 = ran.output.find("step-10");
  ASSERT_NE(at20, std::string::npos) << ran.output;
  ASSERT_NE(at10, std::string::npos) << ran.output;
  EXPECT_LT(at20, at10);
  EXPECT_NE(ran.output.find("verified  <- LATEST"), std::string::npos) << ran.output;
}

TEST_F(CheckpointsCommand, VerifyFindsAFlippedByteThatSizesAloneMiss) {
  flip_a_byte_of_step_20();
  EXPECT_EQ(run_atelier("checkpoints --run " + run.string()).status, 0);
  const auto ran = run_atelier("checkpoints --run " + run.string() + " --verify");
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find("CORRUPT"), std::string::npos) << ran.output;
  EXPECT_NE(ran.output.find("weights.bin"), std::string::npos) << ran.output;
}

TEST_F(CheckpointsCommand, MissingRunDirectoryIsNamed) {
  const auto ran = run_atelier("checkpoints --run " + (run / "nope").string());
  EXPECT_EQ(ran.status, 1);
  EXPECT_NE(ran.output.find("nope"), std::string::npos) << ran.output;
}

}  // namespace
}  // namespace atelier::launcher
