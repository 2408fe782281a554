#include "comm/watchdog.h"

#include <iterator>

namespace atelier::comm {

Watchdog::Watchdog(double timeout_s, Expired on_expired)
    : timeout_(timeout_s), on_expired_(std::move(on_expired)), thread_([this] { loop(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

Watchdog::Watch::Watch(Watchdog& dog, std::string operation) : dog_(dog) {
  std::lock_guard<std::mutex> lock(dog_.mutex_);
  id_ = dog_.next_id_++;
  dog_.running_.emplace(id_, Entry{std::move(operation), Clock::now()});
}

Watchdog::Watch::~Watch() {
  std::lock_guard<std::mutex> lock(dog_.mutex_);
  dog_.running_.erase(id_);
}

void Watchdog::track(std::string operation, std::function<bool()> finished) {
  std::lock_guard<std::mutex> lock(mutex_);
  running_.emplace(next_id_++, Entry{std::move(operation), Clock::now(), std::move(finished)});
}

void Watchdog::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    // Polling at a tenth of the timeout (at most 1 s) bounds how late an
    // expiry is noticed without a timer per operation.
    const auto period = std::min<std::chrono::duration<double>>(timeout_ / 10, std::chrono::seconds(1));
    wake_.wait_for(lock, period);
    if (stop_ || fired_) continue;
    const auto now = Clock::now();
    for (auto it = running_.begin(); it != running_.end();)
      it = it->second.finished && it->second.finished() ? running_.erase(it) : std::next(it);
    for (const auto& [id, entry] : running_) {
      const std::chrono::duration<double> waited = now - entry.started;
      if (waited < timeout_) continue;
      fired_ = true;
      const auto operation = entry.operation;
      lock.unlock();
      on_expired_(operation, waited.count());
      lock.lock();
      break;
    }
  }
}

}  // namespace atelier::comm
