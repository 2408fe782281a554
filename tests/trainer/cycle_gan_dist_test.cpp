// CycleGAN data-parallel through the real binary: 2 ranks of batch 1 against
// 1 rank of batch 2, and a 2-rank resume where each rank restores its own
// history pools.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <torch/torch.h>

#include "tests/comm/run_command.h"
#include "tests/support/tiny_run.h"

namespace atelier {
namespace {
namespace fs = std::filesystem;
using comm::testing::mpirun;
using comm::testing::run_command;

class CycleGANDist : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-cyclegan-dist-" + std::to_string(std::random_device{}()));
    // Photographs (Debian's opencv-doc): on the synthetic patterns some
    // weights get gradients so close to 0 that rounding decides their sign.
    const fs::path photos = "/usr/share/doc/opencv-doc/examples/data";
    fs::create_directories(root / "content");
    fs::create_directories(root / "style");
    for (const char* name : {"aero1.jpg", "apple.jpg", "baboon.jpg", "building.jpg", "butterfly.jpg", "fruits.jpg"})
      fs::copy_file(photos / name, root / "content" / name);
    for (const char* name : {"starry_night.jpg", "graf1.png", "graf3.png"}) fs::copy_file(photos / name, root / "style" / name);
  }
  void TearDown() override { fs::remove_all(root); }

  std::string tiny(const std::string& name, int steps, int batch, int pool) const {
    return testing_support::tiny_train_args(root, name, steps, batch, /*checkpoint_every=*/3) +
           " --set model.family=cyclegan --set model.resnet_width=4 --set model.resnet_blocks=1"
           " --set optim.schedule=constant --set model.pool_size=" + std::to_string(pool) +
           testing_support::kRoundingSafeAdam;
  }

  fs::path ckpt(const std::string& run, int step) const {
    return root / "runs" / run / "checkpoints" / ("step-" + std::to_string(step));
  }

  static constexpr models::ResnetGeneratorOptions kGenerator{4, 1};

  // Every parameter of the four networks of a checkpoint (width 4, one block).
  static std::map<std::string, torch::Tensor> networks(const fs::path& dir) {
    models::DiscriminatorOptions d;
    d.width = 4;
    return testing_support::cyclegan_parameters(dir, kGenerator, d);
  }

  static std::vector<torch::Tensor> pools(const fs::path& dir, int rank) {
    std::vector<torch::Tensor> out;
    torch::load(out, (dir / ("rank-" + std::to_string(rank)) / "pools.pt").string());
    return out;
  }

  fs::path root;
};

// While the pools fill they hand back this step's fakes, so splitting the
// global batch over ranks must give the one-rank result (to float rounding).
TEST_F(CycleGANDist, TwoRanksOfBatch1MatchOneRankOfBatch2) {
  const std::string bin = ATELIER_BINARY;
  const auto one = run_command(bin + " train" + tiny("one", 3, 2, 50));
  ASSERT_EQ(one.status, 0) << one.output;
  const auto two = run_command("timeout 240 " + mpirun(2) + bin + " train" + tiny("two", 3, 1, 50) +
                               " --set dist.verify_every=1 --set dist.bucket_mb=0.005");
  ASSERT_EQ(two.status, 0) << two.output;
  const auto expected = networks(ckpt("one", 3));
  const auto actual = networks(ckpt("two", 3));
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, value] : expected)
    EXPECT_LT((value - actual.at(name)).abs().max().item<double>(), 1e-5) << name;
  // Each rank pooled its own fakes: one image per step each.
  EXPECT_EQ(pools(ckpt("two", 3), 0)[0].size(0), 3);
  EXPECT_EQ(pools(ckpt("two", 3), 1)[0].size(0), 3);
  EXPECT_FALSE(torch::equal(pools(ckpt("two", 3), 0)[0], pools(ckpt("two", 3), 1)[0]));
}

// Pools of 2 are full after two steps and swap at random from then on; the
// resumed 2-rank run restores both ranks' pools and ends bit-identical.
TEST_F(CycleGANDist, TwoRankResumeRestoresEachRanksPools) {
  const std::string bin = ATELIER_BINARY;
  const auto full = run_command("timeout 240 " + mpirun(2) + bin + " train" + tiny("full", 6, 1, 2));
  ASSERT_EQ(full.status, 0) << full.output;
  const auto first = run_command("timeout 240 " + mpirun(2) + bin + " train" + tiny("split", 3, 1, 2));
  ASSERT_EQ(first.status, 0) << first.output;
  const auto resumed = run_command("timeout 240 " + mpirun(2) + bin + " train --resume" + tiny("split", 6, 1, 2));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  const auto expected = networks(ckpt("full", 6));
  const auto actual = networks(ckpt("split", 6));
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, value] : expected) EXPECT_TRUE(torch::equal(value, actual.at(name))) << name;
  for (int rank = 0; rank < 2; ++rank) {
    const auto a = pools(ckpt("full", 6), rank);
    const auto b = pools(ckpt("split", 6), rank);
    ASSERT_EQ(a.size(), 2u);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "rank " << rank << " pool " << i;
  }
}

// The images of pool `which` (0: A, 1: B) of a rank's pools.pt, in order.
std::vector<torch::Tensor> images(const std::vector<torch::Tensor>& pools, size_t which) {
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < pools[which].size(0); ++i) out.push_back(pools[which][i]);
  return out;
}

// 1 rank -> 2: the saved pool's 3 images are dealt 0, 2 to rank 0 and 1 to
// rank 1; each then takes one step's fake (the pools of 4 still fill).
TEST_F(CycleGANDist, OneRankResumedOnTwoDealsItsPoolsOut) {
  const std::string bin = ATELIER_BINARY;
  const auto first = run_command(bin + " train" + tiny("deal", 3, 1, 4));
  ASSERT_EQ(first.status, 0) << first.output;
  const auto resumed = run_command("timeout 240 " + mpirun(2) + bin + " train --resume" + tiny("deal", 4, 1, 4) +
                                   " --set run.log_level=info --set dist.verify_every=1");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("history pools: the 3 + 3 images (pool A + pool B) of 1 saved rank(s) dealt out to 2 "
                                "rank(s), round robin; none dropped"),
            std::string::npos)
      << resumed.output;
  const auto saved = pools(ckpt("deal", 3), 0);
  const auto rank0 = pools(ckpt("deal", 4), 0), rank1 = pools(ckpt("deal", 4), 1);
  for (size_t which = 0; which < 2; ++which) {
    const auto old = images(saved, which), zero = images(rank0, which), one = images(rank1, which);
    ASSERT_EQ(old.size(), 3u);
    ASSERT_EQ(zero.size(), 3u) << "two dealt + one new";
    ASSERT_EQ(one.size(), 2u) << "one dealt + one new";
    EXPECT_TRUE(torch::equal(zero[0], old[0]) && torch::equal(zero[1], old[2])) << "pool " << which;
    EXPECT_TRUE(torch::equal(one[0], old[1])) << "pool " << which;
  }
}

// 2 ranks -> 1: the two saved pools of 3 are dealt r0[0], r1[0], r0[1],
// r1[1] into the one pool of 4, and the 2 left over are dropped, loudly. A
// step then swaps at most one image (batch 1).
TEST_F(CycleGANDist, TwoRanksResumedOnOneDealThePoolsAndSayWhatIsDropped) {
  const std::string bin = ATELIER_BINARY;
  const auto first = run_command("timeout 240 " + mpirun(2) + bin + " train" + tiny("merge", 3, 1, 4));
  ASSERT_EQ(first.status, 0) << first.output;
  const auto resumed = run_command(bin + " train --resume" + tiny("merge", 4, 1, 4) + " --set run.log_level=info");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("world size changed from 2 to 1 rank(s) at step 3"), std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("6 + 6 images (pool A + pool B) of 2 saved rank(s) dealt out to 1 rank(s), round "
                                "robin; 2 + 2 did not fit pools of model.pool_size 4 and were dropped"),
            std::string::npos)
      << resumed.output;
  const auto r0 = pools(ckpt("merge", 3), 0), r1 = pools(ckpt("merge", 3), 1);
  const auto now = pools(ckpt("merge", 4), 0);
  for (size_t which = 0; which < 2; ++which) {
    const auto a = images(r0, which), b = images(r1, which), merged = images(now, which);
    ASSERT_EQ(merged.size(), 4u);
    const std::vector<torch::Tensor> dealt = {a[0], b[0], a[1], b[1]};
    int same = 0;
    for (size_t i = 0; i < dealt.size(); ++i) same += torch::equal(merged[i], dealt[i]) ? 1 : 0;
    EXPECT_GE(same, 3) << "pool " << which;
  }
}

}  // namespace
}  // namespace atelier
