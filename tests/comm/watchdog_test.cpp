// The collective watchdog on its own (comm/watchdog.h, private to comm/):
// what it fires for and what it lets go. Deadlines are short, waits bounded.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>

#include "comm/watchdog.h"

namespace atelier::comm {
namespace {

using namespace std::chrono_literals;

struct Fired {
  std::promise<std::string> operation;
  std::atomic<int> times{0};
};

Watchdog::Expired record(Fired& fired) {
  return [&fired](const std::string& operation, double) {
    if (fired.times++ == 0) fired.operation.set_value(operation);
  };
}

// Tracked work that reports itself finished is let go; work that never
// does fires the expiry once, with its operation's name.
TEST(Watchdog, FiresForTrackedWorkThatNeverFinishesOnly) {
  Fired fired;
  auto result = fired.operation.get_future();
  std::atomic<int> polls{0};
  {
    Watchdog dog(0.2, record(fired));
    dog.track("all_reduce finished", [&] {
      ++polls;
      return true;
    });
    dog.track("all_reduce stuck", [] { return false; });
    ASSERT_EQ(result.wait_for(30s), std::future_status::ready) << "the watchdog never fired";
    EXPECT_EQ(result.get(), "all_reduce stuck");
  }
  EXPECT_EQ(fired.times, 1);
  EXPECT_EQ(polls, 1) << "finished work is polled once, then dropped";
}

// Watched scopes and tracked work share one deadline: a scope that ends in
// time fires nothing.
TEST(Watchdog, AScopeThatEndsInTimeFiresNothing) {
  Fired fired;
  {
    Watchdog dog(60, record(fired));
    { const auto watch = dog.watch("barrier"); }
    dog.track("broadcast", [] { return true; });
  }
  EXPECT_EQ(fired.times, 0);
}

}  // namespace
}  // namespace atelier::comm
