// `make install` (cmake --install): the installed binary reads its data
// files (shipped weights, cluster profiles) under its prefix, so it keeps
// working after the source tree is gone; the build-tree binary reads the
// source tree's.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>

#include "tests/launcher/run_atelier.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

TEST(Install, TheInstalledBinaryReadsItsDataFilesUnderItsPrefix) {
  const auto prefix = fs::temp_directory_path() / ("atelier-install-" + std::to_string(std::random_device{}()));
  const auto build_dir = fs::path(ATELIER_BINARY).parent_path();
  const auto installed = run_shell(std::string(ATELIER_CMAKE) + " --install " + build_dir.string() + " --prefix " +
                                   prefix.string());
  ASSERT_EQ(installed.status, 0) << installed.output;
  const auto share = prefix / "share" / "atelier";
  EXPECT_TRUE(fs::exists(prefix / "bin" / "atelier"));
  EXPECT_TRUE(fs::exists(share / "models" / "pretrained" / "squeezenet1_1" / "SHA256SUMS"));
  EXPECT_TRUE(fs::exists(share / "cluster" / "profiles" / "local.yaml"));
  EXPECT_TRUE(fs::exists(share / "python" / "atelier_models.py"));
  EXPECT_TRUE(fs::exists(share / "configs" / "demo.yaml"));

  const auto version = run_shell((prefix / "bin" / "atelier").string() + " --version");
  ASSERT_EQ(version.status, 0) << version.output;
  EXPECT_NE(version.output.find("data files: " + share.string() + "\n"), std::string::npos) << version.output;
  const auto here = run_atelier("--version");
  EXPECT_NE(here.output.find(std::string("data files: ") + ATELIER_SOURCE_DIR + "\n"), std::string::npos)
      << here.output;
  fs::remove_all(prefix);
}

}  // namespace
}  // namespace atelier::launcher
