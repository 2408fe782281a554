// Fake SLURM commands (sbatch, scontrol, sacct) first on PATH, for tests of
// `atelier submit` and `atelier status` without a cluster.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace atelier::launcher {
namespace fs = std::filesystem;

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline void write_executable(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
  fs::permissions(path, fs::perms::owner_all);
}

// A temporary folder with fake SLURM commands first on PATH while alive.
class FakeSlurm {
 public:
  FakeSlurm() : dir(fs::temp_directory_path() / ("atelier-fake-slurm-" + std::to_string(std::random_device{}()))) {
    fs::create_directories(dir / "bin");
    old_path_ = std::getenv("PATH");
    setenv("PATH", ((dir / "bin").string() + ":" + old_path_).c_str(), 1);
  }
  ~FakeSlurm() {
    setenv("PATH", old_path_.c_str(), 1);
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  FakeSlurm(const FakeSlurm&) = delete;
  FakeSlurm& operator=(const FakeSlurm&) = delete;

  // `name` prints `out`, exits `status`, and appends its arguments to dir/calls.
  void command(const std::string& name, const std::string& out, int status = 0) const {
    write_executable(dir / "bin" / name, "#!/bin/sh\necho \"" + name + " $*\" >> '" + (dir / "calls").string() +
                                             "'\nprintf '%s' '" + out + "'\nexit " + std::to_string(status) + "\n");
  }
  std::string calls() const { return read_text(dir / "calls"); }

  fs::path dir;

 private:
  std::string old_path_;
};

}  // namespace atelier::launcher
