// Rank and world size from whichever launcher started this process; every
// getenv of comm/ lives here.
#include <cstdlib>
#include <optional>

#include <torch/cuda.h>

#include "comm/comm.h"

namespace atelier::comm {
namespace {

std::optional<std::string> variable(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

int number(const char* name, const std::string& text) {
  try {
    size_t used = 0;
    const int v = std::stoi(text, &used);
    if (used == text.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw CommError(std::string("environment variable ") + name + "='" + text + "' is not a non-negative integer");
}

int number_or(const char* name, int fallback) {
  const auto v = variable(name);
  return v ? number(name, *v) : fallback;
}

// Reads one launcher's triple of variables when its rank variable is set.
bool read_triple(Environment& env, Launcher launcher, const char* rank, const char* size, const char* local,
                 const char* local_size) {
  const auto r = variable(rank);
  if (!r) return false;
  env.launcher = launcher;
  env.rank = number(rank, *r);
  const auto s = variable(size);
  if (!s) throw CommError(std::string(rank) + " is set but " + size + " is not");
  env.world_size = number(size, *s);
  env.local_rank = number_or(local, 0);
  env.local_size = number_or(local_size, 0);
  if (env.world_size < 1 || env.rank >= env.world_size)
    throw CommError(std::string(rank) + "=" + std::to_string(env.rank) + " is not below " + size + "=" +
                    std::to_string(env.world_size));
  if (env.local_size > 0 && env.local_rank >= env.local_size)
    throw CommError(std::string(local) + "=" + std::to_string(env.local_rank) + " is not below " + local_size + "=" +
                    std::to_string(env.local_size));
  return true;
}

}  // namespace

Environment detect_environment() {
  Environment env;
  // Ranks per node: OpenMPI and torchrun say; SLURM only when the job was
  // given --ntasks-per-node (SLURM_TASKS_PER_NODE's "2(x3),1" is per node id).
  if (!read_triple(env, Launcher::Mpi, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                   "OMPI_COMM_WORLD_LOCAL_SIZE") &&
      !read_triple(env, Launcher::Slurm, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE") &&
      read_triple(env, Launcher::Torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")) {
    env.master_addr = variable("MASTER_ADDR").value_or("127.0.0.1");
    env.master_port = number_or("MASTER_PORT", 29500);
    if (env.master_port < 1 || env.master_port > 65535)
      throw CommError("MASTER_PORT=" + std::to_string(env.master_port) + " is not a TCP port");
  }
  return env;
}

DeviceFacts device_facts() {
  DeviceFacts facts;
#ifdef ATELIER_TORCH_CUDA
  facts.cuda_built = true;
#endif
  facts.cuda_devices = facts.cuda_built ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) facts.visible_devices = visible;
  return facts;
}

}  // namespace atelier::comm
