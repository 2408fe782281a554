// A program the test runs beside itself (a loader server, say): started with
// fork/execv, its stdout and stderr drained by a thread so that its logging
// can never block it, stopped by its PID. Whatever still runs when the object
// goes away gets SIGKILL, so no test leaves one behind, pass or fail.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace atelier::testing_support {

class ChildProcess {
 public:
  // argv[0] is the program's path (no PATH search).
  explicit ChildProcess(const std::vector<std::string>& argv) {
    int fds[2];
    if (::pipe(fds) != 0) {
      ADD_FAILURE() << "pipe() failed: cannot start " << argv.at(0);
      return;
    }
    pid_ = ::fork();
    if (pid_ < 0) ADD_FAILURE() << "fork() failed: cannot start " << argv.at(0);
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      ::close(fds[0]);
      ::close(fds[1]);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
    reader_ = std::thread([this] { drain(); });
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (pid_ > 0 && !waited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) reader_.join();
    if (out_ >= 0) ::close(out_);
  }

  pid_t pid() const { return pid_; }

  // The first complete output line that contains `text`; "" when the process
  // ended, or `timeout` passed, before one appeared.
  std::string wait_for_line(const std::string& text, std::chrono::seconds timeout = std::chrono::seconds(60)) {
    std::unique_lock<std::mutex> lock(mutex_);
    size_t at = std::string::npos, end = std::string::npos;
    cv_.wait_for(lock, timeout, [&] {
      at = output_.find(text);
      end = at == std::string::npos ? at : output_.find('\n', at);
      return ended_ || end != std::string::npos;
    });
    if (end == std::string::npos) return "";
    const auto start = output_.rfind('\n', at);
    const auto begin = start == std::string::npos ? 0 : start + 1;
    return output_.substr(begin, end - begin);
  }

  // Sends `signal` and waits: the exit code, or 128 + the signal that ended it.
  int terminate(int signal = SIGTERM) {
    if (pid_ <= 0 || waited_) return -1;  // never started, or already ended here
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    waited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::string output() {
    std::lock_guard<std::mutex> lock(mutex_);
    return output_;
  }

 private:
  void drain() {
    char buffer[4096];
    for (;;) {
      const ssize_t got = ::read(out_, buffer, sizeof buffer);
      if (got <= 0) break;
      std::lock_guard<std::mutex> lock(mutex_);
      output_.append(buffer, static_cast<size_t>(got));
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ended_ = true;
    cv_.notify_all();
  }

  pid_t pid_ = -1;
  int out_ = -1;
  bool waited_ = false;
  std::thread reader_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::string output_;
  bool ended_ = false;
};

// The port of `atelier serve-data` from its "serving ... on host:port" line
// (with --port 0 it is the real one); 0 when the server ended first.
inline int serve_data_port(ChildProcess& server) {
  const auto line = server.wait_for_line("serving ");
  const auto colon = line.rfind(':');
  if (colon == std::string::npos) return 0;
  return std::stoi(line.substr(colon + 1));
}

}  // namespace atelier::testing_support
