// DeviceBatches where there is no GPU: what it refuses, and that a copy
// that cannot run fails next() naming the CUDA error rather than hanging.
// Its copies themselves are tested on a GPU (tests/gpu/stream_test.cpp).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>

#include "data/data.h"
#include "tests/data/counting_source.h"

namespace atelier {
namespace {

TEST(DeviceBatches, RefusesACpuDevice) {
  try {
    data::DeviceBatches batches(std::make_unique<testing_support::CountingSource>(), torch::Device("cpu"));
    FAIL() << "a CPU device was taken";
  } catch (const data::DataError& e) {
    EXPECT_EQ(std::string(e.what()), "batches copied ahead to a device need a CUDA device, not cpu");
  }
}

TEST(DeviceBatches, WithoutAGpuNextFailsNamingTheCudaError) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is visible: tests/gpu covers this machine";
  try {
    data::DeviceBatches batches(std::make_unique<testing_support::CountingSource>(), torch::Device("cuda:0"));
    ASSERT_TRUE(data::device_copies_built()) << "constructed without a CUDA runtime";
    batches.next();
    FAIL() << "a batch was copied to a GPU that is not there";
  } catch (const data::DataError& e) {
    const std::string what = e.what();
    if (data::device_copies_built()) EXPECT_EQ(what.rfind("copying a batch to the GPU: ", 0), 0u) << what;
    else EXPECT_NE(what.find("this build has none"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace atelier
