// A shell command started in the background in its own process group (an
// mpirun job, say), waited for or killed whole, and the PIDs of its MPI
// ranks, for the tests that kill one. Whatever still runs when the object
// goes away gets SIGKILL.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

extern char** environ;

namespace atelier::testing_support {

// A job started in the background, in its own process group.
class Job {
 public:
  explicit Job(const std::string& command) {
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    std::string sh = "/bin/sh", c = "-c", cmd = "exec " + command + " >/dev/null 2>&1";
    char* argv[] = {sh.data(), c.data(), cmd.data(), nullptr};
    if (posix_spawn(&pid_, "/bin/sh", nullptr, &attr, argv, environ) != 0) pid_ = -1;
    posix_spawnattr_destroy(&attr);
  }
  ~Job() {
    if (pid_ > 0 && !exited_) {
      ::kill(-pid_, SIGKILL);
      wait();
    }
  }
  bool running() {
    if (exited_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) record(status);
    return !exited_;
  }
  int wait() {
    int status = 0;
    if (!exited_ && ::waitpid(pid_, &status, 0) == pid_) record(status);
    return code_;
  }
  // The pid of MPI rank `rank` among this job's processes.
  pid_t rank_pid(int rank) const {
    const std::string wanted = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      const auto name = entry.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      const pid_t pid = std::stoi(name);
      if (!descends_from_job(pid)) continue;
      std::ifstream env(entry.path() / "environ", std::ios::binary);
      for (std::string var; std::getline(env, var, '\0');)
        if (var == wanted) return pid;
    }
    return -1;
  }

 private:
  // mpirun puts its ranks into process groups of their own: follow parents.
  bool descends_from_job(pid_t pid) const {
    for (int depth = 0; depth < 8 && pid > 1; ++depth) {
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string line;
      if (!std::getline(stat, line)) return false;
      // "pid (comm) state ppid ...": comm may hold spaces, so parse after ')'.
      std::istringstream rest(line.substr(line.rfind(')') + 2));
      char state = 0;
      pid_t parent = 0;
      rest >> state >> parent;
      if (parent == pid_) return true;
      pid = parent;
    }
    return false;
  }

  void record(int status) {
    exited_ = true;
    code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = -1;
};

// Lines in a text file (0 when it does not exist yet).
inline int lines_in(const std::filesystem::path& path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

// Waits until the training `job` has written `steps` lines of `metrics`
// (metrics.jsonl) with ranks 0 .. ranks-1 still alive. False when it finished
// first (the machine outran the test) or two minutes passed.
inline bool reach_steps(Job& job, const std::filesystem::path& metrics, int steps, int ranks) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (job.running() && std::chrono::steady_clock::now() < deadline) {
    if (lines_in(metrics) >= steps) {
      for (int r = 0; r < ranks; ++r)
        if (job.rank_pid(r) <= 0) return false;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

}  // namespace atelier::testing_support
