#include "trainer/elastic.h"

#include "trainer/trainer.h"

namespace atelier::trainer {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// How many images new rank r receives from pools of these sizes, before
// the capacity cut.
std::vector<int64_t> dealt_counts(const std::vector<int64_t>& saved_sizes, int world_size) {
  int64_t total = 0;
  for (const auto n : saved_sizes) total += n;
  std::vector<int64_t> counts(static_cast<size_t>(world_size), total / world_size);
  for (int64_t r = 0; r < total % world_size; ++r) ++counts[static_cast<size_t>(r)];
  return counts;
}

}  // namespace

int64_t micro_batches_per_step(int64_t global_batch, int64_t batch_size, int world_size) {
  if (global_batch == 0) return 1;
  const int64_t per_pass = batch_size * world_size;
  if (global_batch < per_pass || global_batch % per_pass != 0)
    throw TrainError("train.global_batch " + std::to_string(global_batch) + " is not a multiple of train.batch_size " +
                     std::to_string(batch_size) + " x " + std::to_string(world_size) + " rank(s) = " +
                     std::to_string(per_pass) + ": choose a global batch that " + std::to_string(world_size) +
                     " rank(s) of micro-batches of " + std::to_string(batch_size) + " can split evenly");
  return global_batch / per_pass;
}

uint64_t resumed_rank_seed(uint64_t seed, int64_t step, int rank) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(step)) ^ static_cast<uint64_t>(rank));
}

torch::Tensor deal_pool(const std::vector<torch::Tensor>& saved, int rank, int world_size, int64_t capacity) {
  int64_t longest = 0;
  for (const auto& pool : saved)
    if (pool.numel() > 0) longest = std::max(longest, pool.size(0));
  std::vector<torch::Tensor> mine;
  int64_t dealt = 0;  // position in the dealing order
  for (int64_t i = 0; i < longest; ++i) {
    for (const auto& pool : saved) {
      if (pool.numel() == 0 || i >= pool.size(0)) continue;
      if (dealt++ % world_size == rank && static_cast<int64_t>(mine.size()) < capacity) mine.push_back(pool[i]);
    }
  }
  return mine.empty() ? torch::empty({0}) : torch::stack(mine);
}

int64_t pool_images_dropped(const std::vector<int64_t>& saved_sizes, int world_size, int64_t capacity) {
  int64_t dropped = 0;
  for (const auto n : dealt_counts(saved_sizes, world_size)) dropped += std::max<int64_t>(0, n - capacity);
  return dropped;
}

std::vector<checkpoint::WorldSpan> continued_history(std::vector<checkpoint::WorldSpan> saved, int64_t step,
                                                     int world_size, int64_t global_batch) {
  // A checkpoint from before the history knew only its world size: the
  // span it implies is completed rather than followed by a twin.
  if (!saved.empty() && saved.back().world_size == world_size && saved.back().global_batch == 0)
    saved.back().global_batch = global_batch;
  if (saved.empty() || saved.back().world_size != world_size || saved.back().global_batch != global_batch)
    saved.push_back({step, world_size, global_batch});
  return saved;
}

}  // namespace atelier::trainer
