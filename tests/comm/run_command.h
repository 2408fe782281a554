// Runs a shell command for the multi-process tests: its exit status and its
// combined output. Private to tests/comm/.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace atelier::comm::testing {

struct CommandResult {
  int status = -1;  // exit code; 128 + signal when killed
  std::string output;
};

inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> chunk{};
  while (size_t n = std::fread(chunk.data(), 1, chunk.size(), pipe)) result.output.append(chunk.data(), n);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// mpirun with the flags this machine needs (root, 2 cores for 2+ ranks).
inline std::string mpirun(int ranks) {
  return std::string(ATELIER_MPIEXEC) + " --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
}

}  // namespace atelier::comm::testing
