// The NCCL backend of Communicator, on the CUDA runtime and NCCL alone (raw
// device pointers, a communication stream, events): no c10/cuda headers, so
// it compiles against a CPU LibTorch. Built only with ATELIER_NCCL. Private
// to comm/.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "comm/comm.h"

namespace atelier::comm {

// A fresh ncclUniqueId's bytes (what rank 0 hands to the others), and
// how many there are.
std::string nccl_unique_id();
size_t nccl_unique_id_bytes();

class NcclCommunicator final : public Communicator {
 public:
  // Joins the clique of `world_size` ranks named by `unique_id` (see
  // exchange_nccl_id) on `device` (a CUDA device). Collectives of CUDA
  // tensors are queued and return at once (stream-ordered; see the .cpp). A
  // collective that does not finish within `timeout_s` aborts the
  // communicator (ncclCommAbort) from the watchdog thread; every later call
  // then throws CommError naming the rank and the operation.
  NcclCommunicator(int rank, int world_size, const std::string& unique_id, torch::Device device, double timeout_s);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "nccl"; }
  // CUDA tensors of this device in place; CPU tensors through a device copy.
  void all_reduce(torch::Tensor& tensor, ReduceOp op) override;
  void broadcast(torch::Tensor& tensor, int root) override;
  torch::Tensor all_gather(const torch::Tensor& tensor) override;
  void barrier() override;
  void synchronize() override;

 private:
  struct State;
  // Runs `issue` (which enqueues one NCCL call on the communication stream)
  // after the work already queued on the compute stream, makes the compute
  // stream wait for it and hands it to the watchdog; it does not wait.
  template <typename Issue>
  void run(const std::string& operation, Issue&& issue);
  torch::Tensor on_device(const torch::Tensor& tensor) const;
  // Waits for the last collective queued (caller holds mutex_); throws
  // CommError once the communicator was aborted.
  void wait_queued();

  int rank_ = 0;
  int world_size_ = 1;
  torch::Device device_;
  std::mutex mutex_;  // one collective at a time, in the same order on every rank
  std::unique_ptr<State> state_;
};

}  // namespace atelier::comm
