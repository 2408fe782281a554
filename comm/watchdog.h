// Deadlines for collectives: a thread that notices an operation running past
// its timeout and calls the expiry action (the MPI backend aborts the job,
// the NCCL backend its communicator). An operation is watched for a scope
// (a blocking MPI call) or tracked until it reports itself finished (a
// collective queued on a GPU).
// Private to comm/.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace atelier::comm {

class Watchdog {
 public:
  // Called once, from the watchdog thread, with the operation and the
  // seconds it has run. It may not return (MPI_Abort).
  using Expired = std::function<void(const std::string& operation, double waited_s)>;

  Watchdog(double timeout_s, Expired on_expired);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Watches `operation` from now until the Watch is destroyed.
  class Watch {
   public:
    Watch(Watchdog& dog, std::string operation);
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

   private:
    Watchdog& dog_;
    uint64_t id_;
  };
  [[nodiscard]] Watch watch(std::string operation) { return Watch(*this, std::move(operation)); }

  // Watches `operation`, which runs on after the call returns (work queued
  // on a GPU), until `finished()` returns true. The watchdog thread polls
  // it; it must be quick and must not call back into the Watchdog.
  void track(std::string operation, std::function<bool()> finished);

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::string operation;
    Clock::time_point started;
    std::function<bool()> finished;  // tracked entries only
  };
  void loop();

  const std::chrono::duration<double> timeout_;
  Expired on_expired_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<uint64_t, Entry> running_;
  uint64_t next_id_ = 0;
  bool stop_ = false;
  bool fired_ = false;
  std::thread thread_;
};

}  // namespace atelier::comm
