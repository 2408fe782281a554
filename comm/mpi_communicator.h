// The MPI backend of Communicator. Private to comm/.
#pragma once

#include <memory>
#include <mutex>

#include "comm/comm.h"

namespace atelier::comm {

class Watchdog;

class MpiCommunicator final : public Communicator {
 public:
  // Initialises MPI on first use (finalised at process exit); a collective
  // running longer than `timeout_s` aborts the job.
  explicit MpiCommunicator(double timeout_s);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "mpi"; }
  void all_reduce(torch::Tensor& tensor, ReduceOp op) override;
  void broadcast(torch::Tensor& tensor, int root) override;
  torch::Tensor all_gather(const torch::Tensor& tensor) override;
  void barrier() override;

 private:
  void check_cpu(const torch::Tensor& tensor, const char* operation) const;

  int rank_ = 0;
  int world_size_ = 1;
  // Collectives from the training thread and the reducer's thread must
  // reach MPI one at a time and in the same order on every rank.
  std::mutex mutex_;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace atelier::comm
