// Rank and world size from whichever launcher started this process; every
// getenv of comm/ lives here.
#include <cstdlib>
#include <optional>

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
bool read_triple(Environment& env, Launcher launcher, const char* rank, const char* size, const char* local) {
  const auto r = variable(rank);
  if (!r) return false;
  env.launcher = launcher;
  env.rank = number(rank, *r);
  const auto s = variable(size);
  if (!s) throw CommError(std::string(rank) + " is set but " + size + " is not");
  env.world_size = number(size, *s);
  env.local_rank = number_or(local, 0);
  if (env.world_size < 1 || env.rank >= env.world_size)
    throw CommError(std::string(rank) + "=" + std::to_string(env.rank) + " is not below " + size + "=" +
                    std::to_string(env.world_size));
  return true;
}

}  // namespace

Environment detect_environment() {
  Environment env;
  if (!read_triple(env, Launcher::Mpi, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK") &&
      !read_triple(env, Launcher::Slurm, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID") &&
      read_triple(env, Launcher::Torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK")) {
    env.master_addr = variable("MASTER_ADDR").value_or("127.0.0.1");
    env.master_port = number_or("MASTER_PORT", 29500);
    if (env.master_port < 1 || env.master_port > 65535)
      throw CommError("MASTER_PORT=" + std::to_string(env.master_port) + " is not a TCP port");
  }
  return env;
}

}  // namespace atelier::comm
