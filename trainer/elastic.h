// Training on another number of ranks than a checkpoint was written by, and
// gradient accumulation (train.global_batch). Private to trainer/.
//
// The sample stream is global (data/: global sample n is the same image and
// crop whoever draws it), so a resumed job of M ranks simply continues it
// from the checkpoint's global cursor. What was per rank is redistributed
// deterministically:
//  - RNG: every rank of a job whose world size changed seeds its CPU
//    generator with resumed_rank_seed(train.seed, step, rank);
//  - CycleGAN's history pools: the saved ranks' pools are dealt out to the
//    new ranks (deal_pool), none duplicated; what does not fit a pool of
//    model.pool_size is dropped, and the log says how many.
// With the same world size nothing is redistributed: each rank gets its own
// state back and the resume stays bit-identical.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"

namespace atelier::trainer {

// Micro-batches each rank runs per optimiser step: global_batch / (ranks x
// batch_size), or 1 when global_batch is 0 (the global batch is then
// batch_size x ranks). Throws TrainError naming the numbers when they do
// not divide.
int64_t micro_batches_per_step(int64_t global_batch, int64_t batch_size, int world_size);

// The seed of rank `rank`'s CPU generator in a job that resumed `step` on a
// different number of ranks than saved it: SplitMix64 of (seed, step, rank),
// so it depends on nothing but those three numbers.
uint64_t resumed_rank_seed(uint64_t seed, int64_t step, int rank);

// Deals the images of `saved` pools (one [n_q, C, H, W] tensor per saved
// rank q, or an empty tensor) to `world_size` new ranks: the images are
// taken in the order pool 0 image 0, pool 1 image 0, ..., pool 0 image 1,
// ..., and the i-th goes to new rank i mod world_size, up to `capacity`
// images per rank. Returns new rank `rank`'s images ([0] when none).
torch::Tensor deal_pool(const std::vector<torch::Tensor>& saved, int rank, int world_size, int64_t capacity);

// Images of `saved` pools that deal_pool() leaves out for want of capacity,
// over all new ranks.
int64_t pool_images_dropped(const std::vector<int64_t>& saved_sizes, int world_size, int64_t capacity);

// The world-size history a job continues: `saved` (empty for a fresh run)
// with a span for this job appended when its ranks or global batch differ
// from the last one's.
std::vector<checkpoint::WorldSpan> continued_history(std::vector<checkpoint::WorldSpan> saved, int64_t step,
                                                     int world_size, int64_t global_batch);

}  // namespace atelier::trainer
