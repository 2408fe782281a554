// The GPU path's streams on a real GPU (label gpu): work held back on
// purpose shows what waits for what. A StreamGate holds cuda:0's default
// stream (LibTorch's, where atelier computes) with a host function until the
// test opens it. Skips where there is no GPU or no CUDA runtime in the build.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "comm/comm.h"
#include "data/data.h"
#include "tests/data/counting_source.h"
#include "tests/gpu/gpu_support.h"

#ifdef ATELIER_TEST_CUDA_RUNTIME
#include <cuda_runtime.h>
#define REQUIRE_CUDA_RUNTIME() \
  do {                         \
  } while (0)
#else
#define REQUIRE_CUDA_RUNTIME() GTEST_SKIP() << "this build has no CUDA runtime (the CUDA toolkit was not found)"
#endif

namespace atelier {
namespace {

#ifdef ATELIER_TEST_CUDA_RUNTIME
// Holds the default stream of the current device until open() or the
// destructor: whatever is queued behind it, or waits on it, waits. It
// gives up after 30 s so that a failing test still ends (and an
// ncclCommAbort that waits for the held stream returns).
class StreamGate {
 public:
  StreamGate() {
    if (cudaLaunchHostFunc(nullptr, &StreamGate::hold, this) != cudaSuccess) ADD_FAILURE() << "cudaLaunchHostFunc";
  }
  ~StreamGate() {
    open();
    cudaDeviceSynchronize();
  }
  StreamGate(const StreamGate&) = delete;
  StreamGate& operator=(const StreamGate&) = delete;
  void open() { open_ = true; }

 private:
  static void CUDART_CB hold(void* self) {
    auto& gate = *static_cast<StreamGate*>(self);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!gate.open_ && std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::atomic<bool> open_{false};
};
#endif

// A collective that never completes (its stream is held) is aborted by the
// watchdog after dist.timeout_s; waiting for it throws an error naming the
// rank and the operation, and the aborted communicator refuses further
// work instead of hanging.
TEST(GpuStreams, TheWatchdogAbortsACollectiveThatNeverCompletes) {
  REQUIRE_GPU();
  REQUIRE_NCCL();
  REQUIRE_CUDA_RUNTIME();
#ifdef ATELIER_TEST_CUDA_RUNTIME
  auto communicator = testing_support::nccl_at_world_size_one(/*timeout_s=*/1);
  auto values = torch::arange(1000, torch::dtype(torch::kFloat).device(torch::Device("cuda:0")));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::string error;
  {
    StreamGate gate;
    try {
      communicator->all_reduce(values, comm::ReduceOp::Sum);  // queued behind the gate
      communicator->synchronize();
    } catch (const comm::CommError& e) {
      error = e.what();
    }
    gate.open();
  }
  EXPECT_NE(error.find("rank 0"), std::string::npos) << error;
  EXPECT_NE(error.find("all_reduce"), std::string::npos) << error;
  EXPECT_NE(error.find("dist.timeout_s"), std::string::npos) << error;
  EXPECT_NE(error.find("aborted"), std::string::npos) << error;
  try {
    communicator->all_reduce(values, comm::ReduceOp::Sum);
    ADD_FAILURE() << "an aborted communicator ran a collective";
  } catch (const comm::CommError& e) {
    EXPECT_NE(std::string(e.what()).find("aborted"), std::string::npos) << e.what();
  }
#endif
}

// NCCL collectives on CUDA tensors are stream-ordered, as in PyTorch: with
// the default stream held, the all-reduce and the reducer's finalize()
// return (a host that waited would see the watchdog's error instead), and
// once the stream runs the results are those of the same work done in order.
TEST(GpuStreams, CollectivesAndFinalizeDoNotHoldTheHost) {
  REQUIRE_GPU();
  REQUIRE_NCCL();
  REQUIRE_CUDA_RUNTIME();
#ifdef ATELIER_TEST_CUDA_RUNTIME
  const torch::Device cuda("cuda:0");
  auto communicator = testing_support::nccl_at_world_size_one(/*timeout_s=*/60);
  testing_support::ReducedNet reduced_net(communicator, cuda);
  auto& net = reduced_net.net;
  auto& parameters = reduced_net.parameters;
  auto& reducer = *reduced_net.reducer;
  const auto x = torch::randn({16, 64}, cuda);
  const auto backward = [&] {
    for (auto& p : parameters) p.mutable_grad() = torch::Tensor();
    reducer.prepare();
    net->forward(x).square().mean().backward();
    reducer.finalize();
  };
  backward();  // warm-up: kernels loaded, handles made, blocks cached
  auto values = torch::arange(1000, torch::dtype(torch::kFloat).device(cuda));
  communicator->all_reduce(values, comm::ReduceOp::Sum);
  communicator->synchronize();
  std::vector<torch::Tensor> expected;
  for (const auto& p : parameters) expected.push_back(p.grad().clone());
  {
    StreamGate gate;
    values.mul_(2);
    communicator->all_reduce(values, comm::ReduceOp::Avg);
    backward();
    gate.open();
    communicator->synchronize();
  }
  EXPECT_TRUE(torch::equal(values.cpu(), torch::arange(1000, torch::kFloat) * 2));
  for (size_t i = 0; i < parameters.size(); ++i)
    EXPECT_TRUE(torch::allclose(parameters[i].grad(), expected[i])) << "parameter " << i;
#endif
}

// The loader's batches reach the GPU through DeviceBatches unchanged, each
// with the host source's cursor and skipped files as of it, and a source's
// error reaches next().
TEST(GpuStreams, DeviceBatchesHandOutTheHostBatchesOnTheGpu) {
  REQUIRE_GPU();
  REQUIRE_CUDA_RUNTIME();
  data::DeviceBatches batches(std::make_unique<testing_support::CountingSource>(/*fail_at=*/4, /*pinned=*/true),
                              torch::Device("cuda:0"));
  EXPECT_EQ(batches.cursor(), (data::Cursor{0, 0}));
  for (int64_t i = 0; i < 4; ++i) {
    const auto batch = batches.next();
    ASSERT_TRUE(batch.content.is_cuda());
    ASSERT_TRUE(batch.style.is_cuda());
    EXPECT_TRUE(torch::equal(batch.content.cpu(), torch::full({2, 3, 8, 8}, static_cast<float>(i)))) << "batch " << i;
    EXPECT_TRUE(torch::equal(batch.style.cpu(), torch::full({2, 3, 8, 8}, -static_cast<float>(i)))) << "batch " << i;
    EXPECT_EQ(batch.first_sample, 2 * i);
    EXPECT_EQ(batches.cursor(), (data::Cursor{0, i + 1}));
    EXPECT_EQ(batches.skipped_files(), (i + 1) / 2);
  }
  try {
    batches.next();
    ADD_FAILURE() << "the source's error was lost";
  } catch (const data::DataError& e) {
    EXPECT_EQ(std::string(e.what()), "counting source: batch 4 is broken");
  }
}

}  // namespace
}  // namespace atelier
