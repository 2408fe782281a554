// NCCL collectives on raw device pointers, stream-ordered as PyTorch's
// ProcessGroupNCCL: atelier never sets a current CUDA stream, so LibTorch's
// kernels run on the default stream; a collective is queued on a
// communication stream after an event recorded there, the default stream
// waits on the collective's own event, and the call returns at once, so the
// host keeps queueing work (the optimiser step after the gradient buckets)
// while the GPU communicates. The watchdog thread polls every queued
// collective: one that does not finish within the deadline, or an
// asynchronous NCCL error, aborts the communicator; the next call on this
// rank then throws, naming the rank and the operation. Results the host
// reads (CPU tensors, the all_gather layout) are waited for under the same
// deadline first.
#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>
#include <vector>

#include "comm/watchdog.h"

namespace atelier::comm {
namespace {

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw CommError(std::string("NCCL backend: ") + what + ": " + cudaGetErrorString(status));
}

void nccl_check(ncclResult_t status, const char* what) {
  if (status != ncclSuccess) throw CommError(std::string("NCCL backend: ") + what + ": " + ncclGetErrorString(status));
}

ncclDataType_t nccl_type(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kLong: return ncclInt64;
    case torch::kInt: return ncclInt32;
    case torch::kByte: return ncclUint8;
    case torch::kChar: return ncclInt8;
    default: throw CommError(std::string("NCCL backend: no NCCL type for ") + c10::toString(t.scalar_type()));
  }
}

std::string describe(const torch::Tensor& t) {
  std::ostringstream out;
  out << c10::toString(t.scalar_type()) << t.sizes();
  return out.str();
}

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;  // the communication stream
  cudaEvent_t queued = nullptr;   // the compute stream's work so far
  cudaEvent_t last = nullptr;     // the last collective queued
  int rank = 0;
  std::unique_ptr<Watchdog> watchdog;

  std::mutex mutex;                 // guards what follows (the watchdog thread fails and polls)
  std::string failure;              // why the communicator was aborted; empty while healthy
  std::vector<cudaEvent_t> events;  // one per collective in flight, recycled
  std::vector<cudaEvent_t> spare;

  // Aborts the communicator once, remembering why `operation` failed (from
  // the watchdog thread). The reason is set first and the abort runs outside
  // the lock: ncclCommAbort may wait for queued work, and the rank's calls
  // must fail at once, not wait for it.
  void fail(const std::string& operation, const std::string& why) {
    const auto what = "rank " + std::to_string(rank) + ": NCCL collective " + operation + " " + why;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!failure.empty()) return;
      failure = what + "; the communicator was aborted";
    }
    spdlog::error("{}; aborting the communicator", what);
    ncclCommAbort(comm);
  }
  std::string failed() {
    std::lock_guard<std::mutex> lock(mutex);
    return failure;
  }
  cudaEvent_t take_event() {
    std::lock_guard<std::mutex> lock(mutex);
    if (!spare.empty()) {
      const auto event = spare.back();
      spare.pop_back();
      return event;
    }
    cudaEvent_t event = nullptr;
    cuda_check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
    events.push_back(event);
    return event;
  }
  void give_back(cudaEvent_t event) {
    std::lock_guard<std::mutex> lock(mutex);
    spare.push_back(event);
  }
};

NcclCommunicator::NcclCommunicator(int rank, int world_size, const std::string& unique_id, torch::Device device,
                                   double timeout_s)
    : rank_(rank), world_size_(world_size), device_(device), state_(std::make_unique<State>()) {
  if (!device.is_cuda()) throw CommError("NCCL backend: needs a CUDA device, not " + device.str());
  if (unique_id.size() != sizeof(ncclUniqueId))
    throw CommError("NCCL backend: the unique id has " + std::to_string(unique_id.size()) + " bytes, not " +
                    std::to_string(sizeof(ncclUniqueId)));
  ncclUniqueId id;
  std::memcpy(&id, unique_id.data(), sizeof id);
  cuda_check(cudaSetDevice(device.index()), "cudaSetDevice");
  cuda_check(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  cuda_check(cudaEventCreateWithFlags(&state_->queued, cudaEventDisableTiming), "cudaEventCreate");
  cuda_check(cudaEventCreateWithFlags(&state_->last, cudaEventDisableTiming), "cudaEventCreate");
  nccl_check(ncclCommInitRank(&state_->comm, world_size, id, rank), "ncclCommInitRank");
  state_->rank = rank;
  State* state = state_.get();
  state_->watchdog = std::make_unique<Watchdog>(timeout_s, [state, timeout_s](const std::string& operation, double) {
    state->fail(operation, fmt::format("did not finish within dist.timeout_s ({:g} s): a peer rank died or hangs",
                                       timeout_s));
  });
}

NcclCommunicator::~NcclCommunicator() {
  try {
    wait_queued();  // what is queued finishes, or the watchdog aborts it
  } catch (const CommError&) {
  }
  state_->watchdog.reset();  // no more polls of the events below
  if (state_->comm != nullptr && state_->failed().empty()) ncclCommDestroy(state_->comm);
  for (const auto event : state_->events) cudaEventDestroy(event);
  if (state_->last != nullptr) cudaEventDestroy(state_->last);
  if (state_->queued != nullptr) cudaEventDestroy(state_->queued);
  if (state_->stream != nullptr) cudaStreamDestroy(state_->stream);
}

template <typename Issue>
void NcclCommunicator::run(const std::string& operation, Issue&& issue) {
  if (const auto failure = state_->failed(); !failure.empty())
    throw CommError("NCCL backend: rank " + std::to_string(rank_) + ": " + operation + " after an earlier failure: " +
                    failure);
  cuda_check(cudaSetDevice(device_.index()), "cudaSetDevice");
  cuda_check(cudaEventRecord(state_->queued, /*default stream*/ nullptr), "cudaEventRecord");
  cuda_check(cudaStreamWaitEvent(state_->stream, state_->queued, 0), "cudaStreamWaitEvent");
  nccl_check(issue(state_->comm, state_->stream), operation.c_str());
  const auto done = state_->take_event();
  cuda_check(cudaEventRecord(done, state_->stream), "cudaEventRecord");
  cuda_check(cudaEventRecord(state_->last, state_->stream), "cudaEventRecord");
  cuda_check(cudaStreamWaitEvent(nullptr, done, 0), "cudaStreamWaitEvent");
  State* state = state_.get();
  // Polled on the watchdog thread, which alone fails the communicator
  // after construction, so an aborted (freed) communicator is never asked.
  state_->watchdog->track(operation, [state, done, operation] {
    if (!state->failed().empty()) return true;
    const auto status = cudaEventQuery(done);
    if (status == cudaErrorNotReady) {
      ncclResult_t async = ncclSuccess;
      const auto asked = ncclCommGetAsyncError(state->comm, &async);
      if (asked == ncclSuccess && async == ncclSuccess) return false;
      state->fail(operation, std::string("failed: ") + ncclGetErrorString(asked != ncclSuccess ? asked : async));
    } else if (status != cudaSuccess) {
      state->fail(operation, std::string("failed on the GPU: ") + cudaGetErrorString(status));
    }
    state->give_back(done);
    return true;
  });
}

void NcclCommunicator::synchronize() {
  const std::lock_guard<std::mutex> lock(mutex_);
  wait_queued();
}

void NcclCommunicator::wait_queued() {
  for (;;) {
    if (const auto failure = state_->failed(); !failure.empty()) throw CommError(failure);
    const auto status = cudaEventQuery(state_->last);
    if (status == cudaSuccess) return;
    if (status != cudaErrorNotReady) cuda_check(status, "waiting for the collectives");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

torch::Tensor NcclCommunicator::on_device(const torch::Tensor& tensor) const {
  if (tensor.is_cuda() && tensor.device() != device_)
    throw CommError("NCCL backend: a tensor on " + tensor.device().str() + " but this rank's device is " +
                    device_.str());
  return tensor.to(device_).contiguous();
}

void NcclCommunicator::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  if (op == ReduceOp::Avg && !tensor.is_floating_point())
    throw CommError("all_reduce: average of " + describe(tensor) + " (integer) is not defined");
  const std::lock_guard<std::mutex> lock(mutex_);
  auto flat = on_device(tensor);
  const auto type = nccl_type(flat);
  run("all_reduce " + describe(tensor), [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(flat.data_ptr(), flat.data_ptr(), static_cast<size_t>(flat.numel()), type,
                         op == ReduceOp::Avg ? ncclAvg : ncclSum, comm, stream);
  });
  if (!tensor.is_cuda()) wait_queued();  // the host reads the result
  if (!flat.is_same(tensor)) tensor.copy_(flat);
}

void NcclCommunicator::broadcast(torch::Tensor& tensor, int root) {
  if (root < 0 || root >= world_size_)
    throw CommError("broadcast: root " + std::to_string(root) + " is not a rank of " + std::to_string(world_size_));
  const std::lock_guard<std::mutex> lock(mutex_);
  auto flat = on_device(tensor);
  const auto type = nccl_type(flat);
  run("broadcast " + describe(tensor), [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclBroadcast(flat.data_ptr(), flat.data_ptr(), static_cast<size_t>(flat.numel()), type, root, comm,
                         stream);
  });
  if (!tensor.is_cuda()) wait_queued();  // the host reads the result
  if (!flat.is_same(tensor)) tensor.copy_(flat);
}

torch::Tensor NcclCommunicator::all_gather(const torch::Tensor& tensor) {
  const std::lock_guard<std::mutex> lock(mutex_);
  // The ranks first agree on dtype and element count, so a mismatch is an
  // error naming both ranks rather than a garbled gather.
  auto meta = torch::tensor({static_cast<int64_t>(tensor.scalar_type()), tensor.numel()}, torch::kLong).to(device_);
  auto metas = torch::empty({world_size_, 2}, meta.options());
  run("all_gather (layout)", [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllGather(meta.data_ptr(), metas.data_ptr(), 2, ncclInt64, comm, stream);
  });
  wait_queued();
  const auto seen = metas.to(torch::kCPU);
  for (int r = 0; r < world_size_; ++r)
    if (!seen[r].equal(seen[rank_]))
      throw CommError("all_gather: rank " + std::to_string(r) + " and rank " + std::to_string(rank_) +
                      " gather tensors of different dtype or size (" + describe(tensor) + " here)");
  const auto flat = on_device(tensor);
  std::vector<int64_t> sizes = {world_size_};
  for (const auto s : tensor.sizes()) sizes.push_back(s);
  auto out = torch::empty(sizes, flat.options());
  const auto type = nccl_type(flat);
  run("all_gather " + describe(tensor), [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllGather(flat.data_ptr(), out.data_ptr(), static_cast<size_t>(flat.numel()), type, comm, stream);
  });
  if (!tensor.is_cuda()) wait_queued();  // the host reads the result
  return out.to(tensor.device());
}

void NcclCommunicator::barrier() {
  auto token = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat).device(device_));
  all_reduce(token, ReduceOp::Sum);
  synchronize();  // a barrier holds the host
}

size_t nccl_unique_id_bytes() { return sizeof(ncclUniqueId); }

std::string nccl_unique_id() {
  ncclUniqueId id;
  nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  return std::string(reinterpret_cast<const char*>(&id), sizeof id);
}

}  // namespace atelier::comm
