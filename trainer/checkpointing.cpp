#include "trainer/checkpointing.h"

#include <spdlog/spdlog.h>

#include <boost/crc.hpp>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

namespace atelier::trainer {
namespace fs = std::filesystem;
namespace {

constexpr const char* kTrainerState = "trainer_state.json";
constexpr const char* kConfig = "config.yaml";
constexpr const char* kRankRng = "rng.pt";
constexpr const char* kRankState = "state.json";

nlohmann::json cursor_json(const data::Cursor& c) { return {{"epoch", c.epoch}, {"index", c.index}}; }
data::Cursor cursor_of(const nlohmann::json& j) {
  return {j.at("epoch").get<int64_t>(), j.at("index").get<int64_t>()};
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw TrainError("checkpoint file '" + path.string() + "' is missing");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw TrainError("checkpoint file '" + path.string() + "' is not valid JSON: " + e.what());
  }
}

std::string rng_bytes() {
  std::ostringstream out;
  torch::save(at::detail::getDefaultCPUGenerator().get_state(), out);
  return out.str();
}

// This rank's generator state; checkpoints written before per-rank files
// (one process only) kept it as rng.pt beside the weights.
void restore_rng(const fs::path& checkpoint_dir, int rank) {
  auto path = checkpoint_dir / ("rank-" + std::to_string(rank)) / kRankRng;
  if (!fs::exists(path) && rank == 0 && fs::exists(checkpoint_dir / kRankRng)) path = checkpoint_dir / kRankRng;
  if (!fs::exists(path)) throw TrainError("checkpoint " + checkpoint_dir.string() + " has no RNG state for rank " +
                                          std::to_string(rank) + " (" + path.string() + ")");
  torch::Tensor state;
  torch::load(state, path.string());
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global generator
  generator.set_state(state);
}

}  // namespace

std::string config_hash(const std::string& resolved_yaml) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(resolved_yaml.data(), resolved_yaml.size());
  std::ostringstream hex;
  hex << std::hex << std::setw(8) << std::setfill('0') << crc.checksum();
  return hex.str();
}

checkpoint::SaveRequest checkpoint_request(GanModel& gan, const RunPosition& position, int world_size,
                                           const RunConfigText& config, double lr_factor) {
  checkpoint::SaveRequest request;
  request.info = {position.step, position.cursor.epoch, world_size, config.hash};
  request.shared = gan.snapshot();
  const nlohmann::json state = {{"step", position.step},          {"epoch", position.cursor.epoch},
                                {"cursor", cursor_json(position.cursor)}, {"lr_factor", lr_factor},
                                {"world_size", world_size}};
  request.shared.push_back({kTrainerState, state.dump(2) + "\n", {}});
  request.shared.push_back({kConfig, config.yaml, {}});
  request.own.push_back({kRankRng, rng_bytes(), {}});
  request.own.push_back({kRankState, nlohmann::json{{"cursor", cursor_json(position.cursor)}}.dump(2) + "\n", {}});
  for (auto& file : gan.snapshot_own()) request.own.push_back(std::move(file));
  return request;
}

RunPosition restore_checkpoint(const fs::path& checkpoint_dir, GanModel& gan, int rank, int world_size,
                               const std::string& hash) {
  const auto manifest = checkpoint::read_manifest(checkpoint_dir);
  // The global batch and each rank's slice of it depend on the world size:
  // resuming with another one would not continue the same sample stream.
  if (manifest.world_size != world_size)
    throw TrainError("--resume: " + checkpoint_dir.string() + " was trained by " +
                     std::to_string(manifest.world_size) + " rank(s) but this job has " + std::to_string(world_size) +
                     ": resume with the same number of ranks (mpirun -np " + std::to_string(manifest.world_size) + ")");
  if (manifest.config_hash != hash && rank == 0)
    spdlog::warn("resuming {} with a configuration that differs from the one it was saved with",
                 checkpoint_dir.string());
  gan.load(checkpoint_dir, checkpoint_dir / ("rank-" + std::to_string(rank)));
  restore_rng(checkpoint_dir, rank);
  const auto shared = read_json(checkpoint_dir / kTrainerState);
  RunPosition position{shared.at("step").get<int64_t>(), cursor_of(shared.at("cursor"))};
  const auto own_path = checkpoint_dir / ("rank-" + std::to_string(rank)) / kRankState;
  if (fs::exists(own_path)) {
    const auto own = cursor_of(read_json(own_path).at("cursor"));
    // One sampler serves every rank from the global cursor; a rank whose
    // own record disagrees was saved from another stream.
    if (!(own == position.cursor))
      throw TrainError("checkpoint " + checkpoint_dir.string() + ": rank " + std::to_string(rank) +
                       "'s data cursor differs from the run's");
  }
  return position;
}

}  // namespace atelier::trainer
