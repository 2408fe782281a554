// CycleGAN's networks and pieces: the ResNet generator's layout (its size
// against the reference implementation's), the history pool, the L1 term.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <set>

#include "models/models.h"

namespace atelier::models {
namespace {

int64_t count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(ResnetGenerator, KeepsTheImageSizeAndRangeAtTinyWidths) {
  torch::manual_seed(0);
  ResnetGenerator g(ResnetGeneratorOptions{8, 2});
  const auto out = g->forward(torch::rand({2, 3, 32, 48}) * 2 - 1);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 3, 32, 48}));
  EXPECT_LE(out.abs().max().item<double>(), 1.0);
  EXPECT_GT(out.std().item<double>(), 0.0);
}

// The reference's ResnetGenerator(ngf=64, n_blocks=9) has 11,378,179
// parameters (what its training log prints as 11.378 M); 6 blocks, 7,837,699.
TEST(ResnetGenerator, HasTheReferenceImplementationsParameterCount) {
  EXPECT_EQ(count(*ResnetGenerator(ResnetGeneratorOptions{64, 9})), 11378179);
  EXPECT_EQ(count(*ResnetGenerator(ResnetGeneratorOptions{64, 6})), 7837699);
}

TEST(ResnetGenerator, WeightsStartNormalWithStd002AndBiasesZero) {
  torch::manual_seed(1);
  ResnetGenerator g(ResnetGeneratorOptions{32, 3});
  std::vector<torch::Tensor> weights;
  for (const auto& p : g->named_parameters()) {
    if (p.key().find("bias") != std::string::npos) EXPECT_EQ(p.value().abs().max().item<double>(), 0.0) << p.key();
    else weights.push_back(p.value().flatten());
  }
  const auto all = torch::cat(weights);
  EXPECT_NEAR(all.mean().item<double>(), 0.0, 1e-3);
  EXPECT_NEAR(all.std().item<double>(), 0.02, 1e-3);
}

TEST(ResnetGenerator, SizesThatAreNotMultiplesOfFourAreRefusedByName) {
  ResnetGenerator g(ResnetGeneratorOptions{4, 1});
  try {
    g->forward(torch::zeros({1, 3, 30, 32}));
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("multiples of 4"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ResnetGenerator(ResnetGeneratorOptions{0, 1}), ModelError);
}

TEST(ResnetBlock, AddsItsInputToTheResidual) {
  torch::manual_seed(2);
  ResnetBlock block(4, Norm::Instance, false);
  const auto x = torch::rand({1, 4, 8, 8});
  EXPECT_TRUE(torch::allclose(block->forward(x), x + block->block->forward(x)));
}

// A batch of images whose first pixel is its id.
torch::Tensor numbered(int64_t first, int64_t n) {
  auto out = torch::zeros({n, 1, 2, 2});
  for (int64_t i = 0; i < n; ++i) out[i][0][0][0] = static_cast<double>(first + i);
  return out;
}

std::vector<int64_t> ids(const torch::Tensor& images) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < images.size(0); ++i) out.push_back(images[i][0][0][0].item<int64_t>());
  return out;
}

TEST(ImagePool, ReturnsTheImagesThemselvesWhileFilling) {
  ImagePool pool(4);
  EXPECT_EQ(ids(pool.query(numbered(0, 3))), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(pool.size(), 3);
  EXPECT_EQ(ids(pool.query(numbered(3, 1))), (std::vector<int64_t>{3}));
  EXPECT_EQ(pool.size(), 4);
}

// Once full: each image is returned itself or swapped for a stored one,
// about half the time each; the pool keeps every image it did not return.
TEST(ImagePool, OnceFullSwapsAboutHalfTheImagesForStoredOnes) {
  torch::manual_seed(3);
  ImagePool pool(5);
  pool.query(numbered(0, 5));
  int64_t swapped = 0, next = 5;
  std::set<int64_t> seen = {0, 1, 2, 3, 4};
  for (int round = 0; round < 200; ++round) {
    const auto batch = numbered(next, 2);
    const auto out = ids(pool.query(batch));
    for (size_t i = 0; i < out.size(); ++i) {
      const int64_t in = next + static_cast<int64_t>(i);
      if (out[i] != in) {
        ++swapped;
        EXPECT_TRUE(seen.count(out[i])) << out[i] << " was never given to the pool";
        seen.erase(out[i]);  // handed out: it left the pool
        seen.insert(in);
      }
    }
    next += 2;
    ASSERT_EQ(pool.size(), 5);
  }
  const auto stored = ids(pool.state());
  EXPECT_EQ(std::set<int64_t>(stored.begin(), stored.end()), seen);
  EXPECT_GT(swapped, 400 * 0.4);
  EXPECT_LT(swapped, 400 * 0.6);
}

TEST(ImagePool, IsReproducibleFromTheSeedAndItsState) {
  const auto run = [](ImagePool& pool) {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < 10; ++i) {
      const auto got = ids(pool.query(numbered(100 + 3 * i, 3)));
      out.insert(out.end(), got.begin(), got.end());
    }
    return out;
  };
  torch::manual_seed(7);
  ImagePool a(4);
  a.query(numbered(0, 4));
  const auto state = a.state().clone();
  const auto rng = at::detail::getDefaultCPUGenerator().get_state();
  const auto first = run(a);
  // A new pool from the saved images and generator state continues identically.
  at::Generator g = at::detail::getDefaultCPUGenerator();
  g.set_state(rng);
  ImagePool b(4);
  b.load_state(state);
  EXPECT_EQ(run(b), first);
  EXPECT_NE(first, std::vector<int64_t>(first.size(), 0));
}

TEST(ImagePool, SizeZeroPassesBatchesThroughAndBadStatesAreRefused) {
  ImagePool none(0);
  const auto batch = numbered(0, 3);
  EXPECT_TRUE(torch::equal(none.query(batch), batch));
  ImagePool small(2);
  EXPECT_THROW(small.load_state(numbered(0, 3)), ModelError);
  small.load_state(torch::empty({0}));
  EXPECT_EQ(small.size(), 0);
}

TEST(L1Loss, IsTheMeanAbsoluteDifference) {
  const auto a = torch::tensor({1.0, -2.0, 3.0, 0.5});
  const auto b = torch::tensor({0.0, 2.0, 3.0, -0.5});
  EXPECT_DOUBLE_EQ(models::l1_loss(a, b).item<double>(), (1.0 + 4.0 + 0.0 + 1.0) / 4);
  EXPECT_THROW(models::l1_loss(a, b.slice(0, 0, 3)), ModelError);
}

}  // namespace
}  // namespace atelier::models
