// Runs the built atelier binary for command-line tests.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace atelier::launcher {

struct Ran {
  int status;          // exit code
  std::string output;  // stdout and stderr together
};

// A shell command line, stderr folded into the output.
inline Ran run_shell(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed: " + command};
  std::string output;
  char buf[512];
  while (fgets(buf, sizeof buf, pipe)) output += buf;
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}

inline Ran run_atelier(const std::string& args) { return run_shell(std::string(ATELIER_BINARY) + " " + args); }

}  // namespace atelier::launcher
