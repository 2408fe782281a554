#include "trainer/checkpointing.h"

#include "trainer/elastic.h"

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
constexpr const char* kRankCudaRng = "cuda_rng.pt";  // GPU runs: the rank's device generator
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

// The state of `device`'s default generator (a CUDA one), as a host tensor.
std::string device_rng_bytes(const torch::Device& device) {
  std::ostringstream out;
  torch::save(at::globalContext().defaultGenerator(device).get_state(), out);
  return out.str();
}

// A GPU checkpoint resumed on a GPU gets its device generator back; on a CPU
// it has none to restore, and a CPU checkpoint resumed on a GPU keeps the
// generator seeded from train.seed (nothing on the device was drawn yet).
void restore_device_rng(const fs::path& checkpoint_dir, int rank, const torch::Device& device) {
  const auto path = checkpoint_dir / ("rank-" + std::to_string(rank)) / kRankCudaRng;
  if (!device.is_cuda() || !fs::exists(path)) return;
  torch::Tensor state;
  torch::load(state, path.string());
  at::Generator generator = at::globalContext().defaultGenerator(device);
  generator.set_state(state);
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

checkpoint::SaveRequest checkpoint_request(GanModel& gan, const RunPosition& position,
                                           const std::vector<checkpoint::WorldSpan>& history,
                                           const RunConfigText& config, double lr_factor) {
  const int64_t world_size = history.back().world_size;
  checkpoint::SaveRequest request;
  request.info = {position.step, position.cursor.epoch, world_size, config.hash, history, config.loss_network};
  request.shared = gan.snapshot();
  const nlohmann::json state = {{"step", position.step},          {"epoch", position.cursor.epoch},
                                {"cursor", cursor_json(position.cursor)}, {"lr_factor", lr_factor},
                                {"world_size", world_size},       {"global_batch", history.back().global_batch}};
  request.shared.push_back({kTrainerState, state.dump(2) + "\n", {}});
  request.shared.push_back({kConfig, config.yaml, {}});
  request.own.push_back({kRankRng, rng_bytes(), {}});
  if (gan.device().is_cuda()) request.own.push_back({kRankCudaRng, device_rng_bytes(gan.device()), {}});
  request.own.push_back({kRankState, nlohmann::json{{"cursor", cursor_json(position.cursor)}}.dump(2) + "\n", {}});
  for (auto& file : gan.snapshot_own()) request.own.push_back(std::move(file));
  return request;
}

Restored restore_checkpoint(const fs::path& checkpoint_dir, GanModel& gan, int rank, int world_size,
                            const std::string& hash, uint64_t seed) {
  const auto manifest = checkpoint::read_manifest(checkpoint_dir);
  if (manifest.config_hash != hash && rank == 0)
    spdlog::warn("resuming {} with a configuration that differs from the one it was saved with",
                 checkpoint_dir.string());
  const auto shared = read_json(checkpoint_dir / kTrainerState);
  Restored restored;
  restored.position = {shared.at("step").get<int64_t>(), cursor_of(shared.at("cursor"))};
  restored.saved_world_size = static_cast<int>(manifest.world_size);
  restored.world_history = manifest.world_history;
  const RankShare share{restored.saved_world_size, rank, world_size};
  restored.redistributed = gan.load(checkpoint_dir, share);
  // The sample stream is global: one cursor serves every rank, old or new.
  // A saved rank whose own record disagrees was saved from another stream.
  for (int q = 0; q < restored.saved_world_size; ++q) {
    if (share.same_world() && q != rank) continue;
    const auto own_path = checkpoint_dir / ("rank-" + std::to_string(q)) / kRankState;
    if (fs::exists(own_path) && !(cursor_of(read_json(own_path).at("cursor")) == restored.position.cursor))
      throw TrainError("checkpoint " + checkpoint_dir.string() + ": rank " + std::to_string(q) +
                       "'s data cursor differs from the run's");
  }
  if (share.same_world()) restore_rng(checkpoint_dir, rank);
  if (share.same_world()) restore_device_rng(checkpoint_dir, rank, gan.device());
  else torch::manual_seed(resumed_rank_seed(seed, restored.position.step, rank));
  return restored;
}

}  // namespace atelier::trainer
