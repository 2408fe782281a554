// atelier re-executes itself with GOMP_SPINCOUNT=1000 unless the user chose
// how OpenMP threads wait: the log reports the value the process image
// started with (what libgomp read), so a setenv without the re-exec fails.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>

#include "tests/launcher/run_atelier.h"
#include "tests/support/pattern_images.h"
#include "tests/support/tiny_run.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

class OpenMPWaits : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-omp-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 2, 1);
    testing_support::write_pattern_images(root / "style", 2, 2);
  }
  void TearDown() override { fs::remove_all(root); }

  // The "OpenMP threads wait with ..." log line of a 1-step run under `env`
  // (and `runner`, e.g. the dynamic loader).
  std::string waits(const std::string& env, const std::string& name, const std::string& runner = "") {
    const auto ran = run_shell("env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT " + env + " " + runner + " " +
                               ATELIER_BINARY + " train" + testing_support::tiny_train_args(root, name, 1, 1) +
                               " --set run.log_level=info");
    EXPECT_EQ(ran.status, 0) << ran.output;
    const auto at = ran.output.find("OpenMP threads wait with ");
    if (at == std::string::npos) return "(no line) " + ran.output;
    return ran.output.substr(at, ran.output.find('\n', at) - at);
  }

  fs::path root;
};

TEST_F(OpenMPWaits, ShortSpinsUnlessTheUserChose) {
  EXPECT_EQ(waits("", "a"), "OpenMP threads wait with GOMP_SPINCOUNT=1000 (atelier's default)");
  EXPECT_EQ(waits("GOMP_SPINCOUNT=5000", "b"), "OpenMP threads wait with GOMP_SPINCOUNT=5000 (yours)");
  EXPECT_EQ(waits("OMP_WAIT_POLICY=active", "c"), "OpenMP threads wait with OMP_WAIT_POLICY=active (yours)");
}

// Started through the dynamic loader, /proc/self/exe is the loader: atelier
// must not re-execute that, and trains with libgomp's default instead.
TEST_F(OpenMPWaits, StartedThroughTheDynamicLoaderItTrainsWithoutReexecuting) {
  const std::string loader = "/lib64/ld-linux-x86-64.so.2";
  if (!fs::exists(loader)) GTEST_SKIP() << "no " << loader << " on this machine";
  EXPECT_EQ(waits("", "d", loader),
            "OpenMP threads wait with libgomp's default spin (atelier could not re-execute itself with "
            "GOMP_SPINCOUNT here)");
}

}  // namespace
}  // namespace atelier::launcher
