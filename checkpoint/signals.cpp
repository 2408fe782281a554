// SIGUSR1/SIGTERM turned into a stop that every rank agrees on.
#include <csignal>

#include "checkpoint/checkpoint.h"

namespace atelier::checkpoint {
namespace {

volatile std::sig_atomic_t g_received = 0;

extern "C" void remember_signal(int signal) {
  if (g_received == 0) g_received = signal;  // the first one counts; later ones change nothing
}

int g_guards = 0;  // StopSignals alive (they are made and ended on the main thread)

}  // namespace

struct StopSignals::Previous {
  struct sigaction usr1 {};
  struct sigaction term {};
};

StopSignals::StopSignals() : previous_(std::make_unique<Previous>()) {
  if (g_guards++ == 0) g_received = 0;
  struct sigaction action {};
  action.sa_handler = remember_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // file and MPI calls carry on; the step boundary looks at the flag
  sigaction(SIGUSR1, &action, &previous_->usr1);
  sigaction(SIGTERM, &action, &previous_->term);
}

StopSignals::~StopSignals() {
  sigaction(SIGUSR1, &previous_->usr1, nullptr);
  sigaction(SIGTERM, &previous_->term, nullptr);
  --g_guards;
}

int StopSignals::received() const { return static_cast<int>(g_received); }

int StopSignals::agree(comm::Communicator& comm) const {
  if (comm.world_size() == 1) return received();
  const auto all = comm.all_gather(torch::tensor({static_cast<int64_t>(received())}));
  for (int r = 0; r < comm.world_size(); ++r)
    if (const auto signal = all[r].item<int64_t>(); signal != 0) return static_cast<int>(signal);
  return 0;
}

}  // namespace atelier::checkpoint
