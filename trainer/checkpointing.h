// What a training checkpoint holds and how a rank gets it back. Private to
// trainer/.
//
// Shared (written once by rank 0): the model's networks and optimisers
// (every Adam moment; GanModel::snapshot), trainer_state.json (step, epoch,
// cursor, learning-rate factor, world size) and config.yaml, so tools can
// rebuild the networks from the checkpoint alone. Per rank, under
// rank-<r>/: rng.pt (the CPU generator), state.json (that rank's data
// cursor) and what the model keeps per rank (CycleGAN's history pools).
// Resume restores each rank's own files, so every rank continues exactly
// where it stopped; a job on another number of ranks takes a deterministic
// share of them (trainer/elastic.h). manifest.json records the world-size
// history.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "data/data.h"
#include "trainer/gan_model.h"

namespace atelier::trainer {

// Where a run is: the steps completed and the data cursor after them.
struct RunPosition {
  int64_t step = 0;
  data::Cursor cursor;
};

// The resolved YAML of a run and its hash (recorded in every manifest).
struct RunConfigText {
  std::string yaml;
  std::string hash;
  std::string loss_network;  // models::describe_encoder, for the manifest
};

std::string config_hash(const std::string& resolved_yaml);

// This rank's SaveRequest at `position`: copies of every tensor, serialised
// and written by the checkpoint's writer thread while training goes on.
// `history` is the run's world-size history; its last span is this job's.
checkpoint::SaveRequest checkpoint_request(GanModel& gan, const RunPosition& position,
                                           const std::vector<checkpoint::WorldSpan>& history,
                                           const RunConfigText& config, double lr_factor);

// What a resume found in the checkpoint.
struct Restored {
  RunPosition position;
  int saved_world_size = 1;                          // ranks that wrote it
  std::vector<checkpoint::WorldSpan> world_history;  // as its manifest records it
  std::string redistributed;                         // per-rank state dealt out, in words ("" when none)
};

// Restores the networks, the optimisers, this rank's RNG and per-rank model
// state from `checkpoint_dir`. With the world size it was saved with, each
// rank gets its own files back (a bit-identical resume); with another, the
// per-rank state is redistributed as trainer/elastic.h says (`seed` is
// train.seed). Throws TrainError when files are missing or the saved ranks'
// data cursors disagree.
Restored restore_checkpoint(const std::filesystem::path& checkpoint_dir, GanModel& gan, int rank, int world_size,
                            const std::string& config_hash, uint64_t seed);

}  // namespace atelier::trainer
