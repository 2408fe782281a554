// Evaluation spread over the ranks of a real `mpirun -np 2` job (CTest runs
// it so, see CMakeLists.txt): every rank's result must equal what one
// process computes over the whole set, for an even and an uneven split and
// for a set too small to give every rank a pair.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "evaluate/evaluate.h"

namespace atelier::evaluate {
namespace {

comm::Communicator& world() {
  static auto comm = comm::make_communicator(comm::detect_environment(), {"mpi", 120});
  return *comm;
}

class AcrossRanks : public ::testing::TestWithParam<int64_t> {};

TEST_P(AcrossRanks, TwoRanksGiveWhatOneRankGives) {
  auto& ranks = world();
  ASSERT_EQ(ranks.world_size(), 2) << "run under mpirun -np 2";
  const int64_t pairs = GetParam();
  // Same seeds on every rank: the same generator and the same images.
  torch::manual_seed(0);
  models::GeneratorOptions options;
  options.encoder.width = options.decoder.width = 4;
  models::AdaINGenerator generator(options);
  torch::manual_seed(1);
  const auto content = torch::rand({pairs, 3, 32, 32}) * 2 - 1;
  const auto styles = torch::rand({3, 3, 32, 32}) * 2 - 1;
  std::vector<int64_t> style_of_pair;
  for (int64_t i = 0; i < pairs; ++i) style_of_pair.push_back((i * 2) % 3);
  const auto style = styles.index_select(0, torch::tensor(style_of_pair, torch::kLong));

  auto alone = comm::make_communicator(comm::Environment{}, {});
  const auto expected = evaluate(generator, slice_eval_set(content, style, style_of_pair, 0, 1), *alone, {2, "random_vgg"});
  const auto actual = evaluate(generator, slice_eval_set(content, style, style_of_pair, ranks.rank(), 2), ranks, {2, "random_vgg"});
  EXPECT_EQ(actual.pairs, expected.pairs);
  EXPECT_EQ(actual.style_images, expected.style_images);
  EXPECT_EQ(actual.distances_skipped, expected.distances_skipped);
  ASSERT_EQ(actual.metrics.size(), expected.metrics.size());
  for (size_t m = 0; m < expected.metrics.size(); ++m) {
    EXPECT_EQ(actual.metrics[m].key, expected.metrics[m].key);
    EXPECT_NEAR(actual.metrics[m].value, expected.metrics[m].value, 1e-6 * (1 + std::abs(expected.metrics[m].value)))
        << expected.metrics[m].key << " on rank " << ranks.rank();
  }
}

// 6: 3 pairs each; 5: 3 and 2; 1: rank 1 has none (and there are no distances).
INSTANTIATE_TEST_SUITE_P(Splits, AcrossRanks, ::testing::Values(int64_t{6}, int64_t{5}, int64_t{1}));

}  // namespace
}  // namespace atelier::evaluate
