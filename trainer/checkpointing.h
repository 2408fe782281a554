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
// where it stopped.
#pragma once

#include <filesystem>
#include <string>

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
};

std::string config_hash(const std::string& resolved_yaml);

// This rank's SaveRequest at `position`: copies of every tensor, serialised
// and written by the checkpoint's writer thread while training goes on.
checkpoint::SaveRequest checkpoint_request(GanModel& gan, const RunPosition& position, int world_size,
                                           const RunConfigText& config, double lr_factor);

// Restores G, D, the optimisers, this rank's RNG and returns the position of
// `checkpoint_dir`. Throws TrainError when the world size differs or this
// rank's files are missing.
RunPosition restore_checkpoint(const std::filesystem::path& checkpoint_dir, GanModel& gan, int rank, int world_size,
                               const std::string& config_hash);

}  // namespace atelier::trainer
