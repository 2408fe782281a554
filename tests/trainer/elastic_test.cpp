// Gradient accumulation and the pieces of an elastic resume, in process:
// k micro-batches train the model one batch k times larger trains, the
// refusal of a global batch the ranks cannot split, the RNG seeds of a
// changed world, the dealing of history pools and the world-size history.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <set>

#include "tests/support/tiny_config.h"
#include "trainer/cycle_gan.h"
#include "trainer/elastic.h"
#include "trainer/gan_model.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace {

Config tiny(const std::string& family) {
  Config c = testing_support::tiny_config(family);
  c.model.pool_size = 6;
  c.optim.eps = 1e-4;  // see kRoundingSafeAdam in tests/support/tiny_run.h
  return c;
}

struct Trained {
  std::vector<StepLosses> losses;
  std::vector<torch::Tensor> state;
  std::vector<torch::Tensor> pools;  // CycleGAN: A, B
};

// Three steps on fixed batches of 4 images, each fed as `k` micro-batches.
Trained three_steps(const Config& config, int64_t k) {
  torch::manual_seed(3);
  auto model = make_model(config, nullptr);
  Trained out;
  for (int step = 0; step < 3; ++step) {
    torch::manual_seed(40 + step);
    const auto a = torch::rand({4, 3, 32, 32}) * 2 - 1, b = torch::rand({4, 3, 32, 32}) * 2 - 1;
    const auto parts_a = a.chunk(k), parts_b = b.chunk(k);
    std::vector<MicroBatch> micro;
    for (int64_t j = 0; j < k; ++j) micro.push_back({parts_a[j], parts_b[j]});
    torch::manual_seed(50 + step);  // the pools draw from the global generator
    out.losses.push_back(model->step(micro, 1.0));
  }
  for (const auto& t : model->state_tensors()) out.state.push_back(t.detach().clone());
  if (auto* gan = dynamic_cast<CycleGAN*>(model.get())) out.pools = {gan->pool_a.state(), gan->pool_b.state()};
  return out;
}

class Accumulation : public ::testing::TestWithParam<std::string> {};

// The gradients of one step (at learning rate 0, so both see the same
// networks in both phases): k micro-batches give every network what one
// batch of their images gives, up to float rounding.
TEST_P(Accumulation, MicroBatchesGiveTheGradientsOfTheWholeBatch) {
  const auto gradients = [&](int64_t k) {
    torch::manual_seed(3);
    auto model = make_model(tiny(GetParam()), nullptr);
    torch::manual_seed(40);
    const auto a = torch::rand({4, 3, 32, 32}) * 2 - 1, b = torch::rand({4, 3, 32, 32}) * 2 - 1;
    const auto parts_a = a.chunk(k), parts_b = b.chunk(k);
    std::vector<MicroBatch> micro;
    for (int64_t j = 0; j < k; ++j) micro.push_back({parts_a[j], parts_b[j]});
    torch::manual_seed(50);
    model->step(micro, 0.0);
    std::vector<torch::Tensor> out;
    for (const auto& t : model->state_tensors())
      if (t.grad().defined()) out.push_back(t.grad().clone());
    return out;
  };
  const auto whole = gradients(1);
  ASSERT_FALSE(whole.empty());
  for (const int64_t k : {2, 4}) {
    const auto parts = gradients(k);
    ASSERT_EQ(parts.size(), whole.size());
    for (size_t i = 0; i < whole.size(); ++i) {
      const double scale = whole[i].abs().max().item<double>();
      // The floor covers biases before an instance norm, whose true
      // gradient is 0 and whose computed one is rounding (~1e-8).
      EXPECT_LE((parts[i] - whole[i]).abs().max().item<double>(), 1e-5 * scale + 1e-6) << k << " gradient " << i;
    }
  }
}

// Three steps: Adam turns rounding differences in near-zero gradients into
// whole steps, so this holds to 1e-5 for two micro-batches, not for more.
TEST_P(Accumulation, MicroBatchesTrainWhatOneBatchOfTheirImagesTrains) {
  const auto whole = three_steps(tiny(GetParam()), 1);
  for (const int64_t k : {2}) {
    const auto parts = three_steps(tiny(GetParam()), k);
    for (size_t s = 0; s < whole.losses.size(); ++s) {
      EXPECT_NEAR(parts.losses[s].g, whole.losses[s].g, 1e-4 * std::abs(whole.losses[s].g)) << k << " step " << s;
      EXPECT_NEAR(parts.losses[s].d, whole.losses[s].d, 1e-4 * std::abs(whole.losses[s].d)) << k << " step " << s;
      ASSERT_EQ(parts.losses[s].terms.size(), whole.losses[s].terms.size());
      for (size_t t = 0; t < whole.losses[s].terms.size(); ++t)
        EXPECT_NEAR(parts.losses[s].terms[t].second, whole.losses[s].terms[t].second, 1e-4)
            << whole.losses[s].terms[t].first;
    }
    ASSERT_EQ(parts.state.size(), whole.state.size());
    for (size_t i = 0; i < whole.state.size(); ++i)
      EXPECT_LT((parts.state[i] - whole.state[i]).abs().max().item<double>(), 1e-5) << k << " tensor " << i;
    ASSERT_EQ(parts.pools.size(), whole.pools.size());
    for (size_t p = 0; p < whole.pools.size(); ++p) {
      ASSERT_EQ(parts.pools[p].sizes(), whole.pools[p].sizes()) << "the pools answered different draws";
      EXPECT_LT((parts.pools[p] - whole.pools[p]).abs().max().item<double>(), 1e-4) << "pool " << p;
    }
  }
}

// The comparison above can fail: training on half of each batch ends
// measurably elsewhere.
TEST_P(Accumulation, OneMicroBatchAloneIsNotTheWholeBatch) {
  const auto whole = three_steps(tiny(GetParam()), 1);
  torch::manual_seed(3);
  auto model = make_model(tiny(GetParam()), nullptr);
  for (int step = 0; step < 3; ++step) {
    torch::manual_seed(40 + step);
    const auto a = torch::rand({4, 3, 32, 32}) * 2 - 1, b = torch::rand({4, 3, 32, 32}) * 2 - 1;
    torch::manual_seed(50 + step);
    model->step(a.slice(0, 0, 2), b.slice(0, 0, 2), 1.0);
  }
  double worst = 0;
  const auto state = model->state_tensors();
  for (size_t i = 0; i < state.size(); ++i)
    worst = std::max(worst, (state[i] - whole.state[i]).abs().max().item<double>());
  EXPECT_GT(worst, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(BothFamilies, Accumulation, ::testing::Values("adain", "cyclegan"));

TEST(MicroBatches, GlobalBatchIsSplitOverRanksAndMicroBatches) {
  EXPECT_EQ(micro_batches_per_step(0, 4, 3), 1);
  EXPECT_EQ(micro_batches_per_step(8, 4, 1), 2);
  EXPECT_EQ(micro_batches_per_step(8, 4, 2), 1);
  EXPECT_EQ(micro_batches_per_step(12, 2, 3), 2);
}

TEST(MicroBatches, AGlobalBatchTheRanksCannotSplitIsRefusedWithItsNumbers) {
  for (const auto& [global, batch, ranks] : {std::tuple{6, 4, 1}, std::tuple{8, 2, 3}, std::tuple{2, 2, 2}}) {
    try {
      micro_batches_per_step(global, batch, ranks);
      FAIL() << global << " / (" << batch << " x " << ranks << ") accepted";
    } catch (const TrainError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("train.global_batch " + std::to_string(global)), std::string::npos) << what;
      EXPECT_NE(what.find("train.batch_size " + std::to_string(batch)), std::string::npos) << what;
      EXPECT_NE(what.find(std::to_string(ranks) + " rank(s) = " + std::to_string(batch * ranks)), std::string::npos)
          << what;
    }
  }
}

TEST(ResumedRankSeed, DependsOnSeedStepAndRankOnly) {
  EXPECT_EQ(resumed_rank_seed(7, 40, 1), resumed_rank_seed(7, 40, 1));
  std::set<uint64_t> seen;
  for (const uint64_t seed : {0u, 7u})
    for (const int64_t step : {0, 40, 41})
      for (const int rank : {0, 1, 2}) seen.insert(resumed_rank_seed(seed, step, rank));
  EXPECT_EQ(seen.size(), 18u) << "every (seed, step, rank) gets its own stream";
}

// Pools of 3 and 2 images (values = 10 * saved rank + index) dealt round
// robin in the order r0[0], r1[0], r0[1], r1[1], r0[2].
std::vector<torch::Tensor> two_saved_pools() {
  const auto pool = [](int rank, int n) {
    std::vector<torch::Tensor> images;
    for (int i = 0; i < n; ++i) images.push_back(torch::full({1, 2, 2}, 10.0 * rank + i));
    return torch::stack(images);
  };
  return {pool(0, 3), pool(1, 2)};
}

std::vector<double> ids(const torch::Tensor& pool) {
  std::vector<double> out;
  for (int64_t i = 0; i < (pool.numel() == 0 ? 0 : pool.size(0)); ++i) out.push_back(pool[i][0][0][0].item<double>());
  return out;
}

TEST(DealPool, EveryImageGoesToExactlyOneNewRank) {
  const auto saved = two_saved_pools();
  EXPECT_EQ(ids(deal_pool(saved, 0, 1, 10)), (std::vector<double>{0, 10, 1, 11, 2}));
  EXPECT_EQ(ids(deal_pool(saved, 0, 2, 10)), (std::vector<double>{0, 1, 2}));
  EXPECT_EQ(ids(deal_pool(saved, 1, 2, 10)), (std::vector<double>{10, 11}));
  EXPECT_EQ(ids(deal_pool(saved, 0, 3, 10)), (std::vector<double>{0, 11}));
  EXPECT_EQ(ids(deal_pool(saved, 1, 3, 10)), (std::vector<double>{10, 2}));
  EXPECT_EQ(ids(deal_pool(saved, 2, 3, 10)), (std::vector<double>{1}));
  EXPECT_EQ(ids(deal_pool(saved, 5, 6, 10)), (std::vector<double>{}));
  for (int ranks = 1; ranks <= 6; ++ranks) EXPECT_EQ(pool_images_dropped({3, 2}, ranks, 10), 0) << ranks;
}

TEST(DealPool, WhatDoesNotFitTheCapacityIsDroppedAndCounted) {
  const auto saved = two_saved_pools();
  EXPECT_EQ(ids(deal_pool(saved, 0, 1, 3)), (std::vector<double>{0, 10, 1}));
  EXPECT_EQ(pool_images_dropped({3, 2}, 1, 3), 2);
  EXPECT_EQ(pool_images_dropped({3, 3}, 1, 3), 3);
  EXPECT_EQ(pool_images_dropped({3, 3, 3}, 2, 3), 3);  // 5 and 4 images dealt to pools of 3
  EXPECT_EQ(pool_images_dropped({0, 0}, 1, 3), 0);
  EXPECT_EQ(ids(deal_pool({torch::empty({0}), torch::empty({0})}, 0, 1, 3)), (std::vector<double>{}));
}

TEST(WorldHistory, ASpanIsAddedOnlyWhenRanksOrGlobalBatchChange) {
  using Spans = std::vector<checkpoint::WorldSpan>;
  const Spans fresh = continued_history({}, 0, 2, 8);
  EXPECT_EQ(fresh, (Spans{{0, 2, 8}}));
  EXPECT_EQ(continued_history(fresh, 40, 2, 8), fresh);
  EXPECT_EQ(continued_history(fresh, 40, 1, 8), (Spans{{0, 2, 8}, {40, 1, 8}}));
  EXPECT_EQ(continued_history(fresh, 40, 2, 4), (Spans{{0, 2, 8}, {40, 2, 4}}));
  // A checkpoint from before the history knew no global batch.
  EXPECT_EQ(continued_history({{0, 2, 0}}, 40, 2, 8), (Spans{{0, 2, 8}}));
  EXPECT_EQ(checkpoint::describe_world_history({{0, 2, 8}, {40, 1, 8}}, 60), "2 ranks (steps 1-40), 1 rank (steps 41-60)");
  EXPECT_EQ(checkpoint::describe_world_history({{0, 2, 8}}, 60), "2 ranks");
}

}  // namespace
}  // namespace atelier::trainer
