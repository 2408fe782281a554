// DeviceBatches: the next batch crosses to the GPU while the current step
// computes. The copy runs on a non-blocking stream of its own, through the
// CUDA runtime alone (raw device pointers; no c10/cuda headers), so that the
// CPU LibTorch build compiles it wherever the CUDA toolkit is installed.
//
// LibTorch computes on the device's default stream, and its caching
// allocator hands a block freed there to the next allocation at once,
// because work on that stream runs in order. The copy stream is not in that
// order: it first waits on an event recorded on the default stream right
// after the destination is allocated, so it never writes a block that
// queued kernels still read. That wait covers only the work queued before
// the allocation, so the copy overlaps the step queued after it.
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "data/data.h"

#ifdef ATELIER_CUDA_RUNTIME
#include <cuda_runtime.h>
#endif

namespace atelier::data {

#ifdef ATELIER_CUDA_RUNTIME
namespace {

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw DataError(std::string("copying a batch to the GPU: ") + what + ": " +
                                             cudaGetErrorString(status));
}

// The copy stream and its event, made on the thread's device.
class CopyStream {
 public:
  explicit CopyStream(const torch::Device& device) : device_(device) {
    cuda_check(cudaSetDevice(device.index()), "cudaSetDevice");
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    cuda_check(cudaEventCreateWithFlags(&allocated_, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~CopyStream() {
    if (allocated_ != nullptr) cudaEventDestroy(allocated_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  CopyStream(const CopyStream&) = delete;
  CopyStream& operator=(const CopyStream&) = delete;

  // `host` on the device, the copy queued on the copy stream (see the top).
  torch::Tensor queue(const torch::Tensor& host) {
    const auto source = host.contiguous();
    auto target = torch::empty(source.sizes(), source.options().device(device_));
    cuda_check(cudaEventRecord(allocated_, /*default stream*/ nullptr), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(stream_, allocated_, 0), "cudaStreamWaitEvent");
    cuda_check(cudaMemcpyAsync(target.data_ptr(), source.data_ptr(), source.nbytes(), cudaMemcpyHostToDevice, stream_),
               "cudaMemcpyAsync");
    sources_.push_back(source);  // alive until the copy has finished
    return target;
  }
  // Waits for the queued copies; their host memory may then go.
  void finish() {
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    sources_.clear();
  }

 private:
  torch::Device device_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t allocated_ = nullptr;
  std::vector<torch::Tensor> sources_;
};

}  // namespace
#endif

struct DeviceBatches::State {
  std::unique_ptr<BatchSource> host;
  torch::Device device{torch::kCPU};

  mutable std::mutex mutex;
  std::condition_variable changed;
  bool stop = false;
  std::exception_ptr error;
  // The copied batch waiting for next(), with host's cursor and skipped
  // files as of it.
  std::optional<ContentStyleBatch> ready;
  Cursor ready_cursor;
  int64_t ready_skipped = 0;
  // As of the batch next() returned last.
  Cursor cursor;
  int64_t skipped = 0;
  double waited_s = 0;
  std::thread thread;

  void run();
};

void DeviceBatches::State::run() {
#ifdef ATELIER_CUDA_RUNTIME
  try {
    CopyStream copies(device);
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        changed.wait(lock, [&] { return stop || !ready; });
        if (stop) return;
      }
      auto batch = host->next();
      const auto at = host->cursor();
      const auto skipped_now = host->skipped_files();
      batch.content = copies.queue(batch.content);
      batch.style = copies.queue(batch.style);
      copies.finish();
      std::lock_guard<std::mutex> lock(mutex);
      ready = std::move(batch);
      ready_cursor = at;
      ready_skipped = skipped_now;
      changed.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex);
    error = std::current_exception();
    changed.notify_all();
  }
#endif
}

DeviceBatches::DeviceBatches(std::unique_ptr<BatchSource> host, torch::Device device)
    : state_(std::make_unique<State>()) {
  if (!device.is_cuda()) throw DataError("batches copied ahead to a device need a CUDA device, not " + device.str());
  if (!device_copies_built())
    throw DataError("batches copied ahead to " + device.str() +
                    " need the CUDA runtime, and this build has none (the CUDA toolkit was not found)");
  if (!host) throw DataError("DeviceBatches: no host batch source");
  auto& s = *state_;
  s.host = std::move(host);
  s.device = device.has_index() ? device : torch::Device(torch::kCUDA, 0);
  s.cursor = s.host->cursor();
  s.skipped = s.host->skipped_files();
  s.thread = std::thread([&s] { s.run(); });
}

DeviceBatches::~DeviceBatches() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stop = true;
  }
  state_->changed.notify_all();
  state_->thread.join();  // after the batch it may be fetching: loaders' next() is bounded
}

ContentStyleBatch DeviceBatches::next() {
  auto& s = *state_;
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(s.mutex);
  s.changed.wait(lock, [&] { return s.ready || s.error; });
  s.waited_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!s.ready) std::rethrow_exception(s.error);
  auto batch = std::move(*s.ready);
  s.ready.reset();
  s.cursor = s.ready_cursor;
  s.skipped = s.ready_skipped;
  s.changed.notify_all();
  return batch;
}

Cursor DeviceBatches::cursor() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->cursor;
}

int64_t DeviceBatches::skipped_files() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->skipped;
}

double DeviceBatches::wait_seconds() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->waited_s;
}

bool device_copies_built() {
#ifdef ATELIER_CUDA_RUNTIME
  return true;
#else
  return false;
#endif
}

}  // namespace atelier::data
