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

inline Ran run_atelier(const std::string& args) {
  const std::string cmd = std::string(ATELIER_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string output;
  char buf[512];
  while (fgets(buf, sizeof buf, pipe)) output += buf;
  return {WEXITSTATUS(pclose(pipe)), output};
}

}  // namespace atelier::launcher
