// Device selection (comm::choose_device), case by case: a pure function of
// the request, the rank's place on its node and what LibTorch sees, so each
// launcher's and each machine's case is tested here without a GPU.
#include <gtest/gtest.h>

#include <string>

#include "comm/comm.h"

namespace atelier::comm {
namespace {

Environment node(int local_rank, int local_size, Launcher launcher = Launcher::Mpi) {
  Environment env;
  env.launcher = launcher;
  env.world_size = std::max(1, local_size) * 2;
  env.rank = local_rank;
  env.local_rank = local_rank;
  env.local_size = local_size;
  return env;
}

DeviceFacts gpus(int n, std::optional<std::string> visible = std::nullopt) { return {true, n, std::move(visible)}; }
const DeviceFacts kCpuOnlyBuild{false, 0, std::nullopt};

// The refusal's message, or "" when `requested` is accepted.
std::string refusal(const std::string& requested, const Environment& env, const DeviceFacts& facts) {
  try {
    choose_device(requested, env, facts);
  } catch (const CommError& e) {
    return e.what();
  }
  return "";
}

TEST(ChooseDevice, CpuIsAlwaysCpu) {
  EXPECT_EQ(choose_device("cpu", node(0, 1), kCpuOnlyBuild).device, torch::Device(torch::kCPU));
  EXPECT_EQ(choose_device("cpu", node(3, 4), gpus(8)).device, torch::Device(torch::kCPU));
}

TEST(ChooseDevice, AutoTakesTheLocalRanksGpuWhenThereIsOneAndSaysWhyNot) {
  const auto on_gpu = choose_device("auto", node(1, 2), gpus(2));
  EXPECT_EQ(on_gpu.device, torch::Device(torch::kCUDA, 1));
  EXPECT_NE(on_gpu.reason.find("cuda:1 (local rank 1, 2 GPUs are visible)"), std::string::npos) << on_gpu.reason;
  const auto cpu_build = choose_device("auto", node(0, 1), kCpuOnlyBuild);
  EXPECT_EQ(cpu_build.device, torch::Device(torch::kCPU));
  EXPECT_NE(cpu_build.reason.find("this LibTorch build has no CUDA"), std::string::npos) << cpu_build.reason;
  const auto hidden = choose_device("auto", node(0, 1), gpus(0, ""));
  EXPECT_EQ(hidden.device, torch::Device(torch::kCPU));
  EXPECT_NE(hidden.reason.find("no GPU visible (CUDA_VISIBLE_DEVICES='')"), std::string::npos) << hidden.reason;
}

// mpirun, srun and torchrun all give each rank its local rank's GPU.
TEST(ChooseDevice, CudaIsOneGpuPerRankByLocalRankUnderEveryLauncher) {
  for (const auto launcher : {Launcher::Mpi, Launcher::Slurm, Launcher::Torchrun}) {
    for (int local = 0; local < 4; ++local)
      EXPECT_EQ(choose_device("cuda", node(local, 4, launcher), gpus(4)).device,
                torch::Device(torch::kCUDA, static_cast<torch::DeviceIndex>(local)));
  }
  // SLURM without --ntasks-per-node does not say the node's rank count:
  // the local rank alone is checked.
  EXPECT_EQ(choose_device("cuda", node(1, 0, Launcher::Slurm), gpus(2)).device, torch::Device(torch::kCUDA, 1));
  // CUDA_VISIBLE_DEVICES=2,3: LibTorch sees two, numbered 0 and 1.
  const auto restricted = choose_device("cuda", node(1, 2), gpus(2, "2,3"));
  EXPECT_EQ(restricted.device, torch::Device(torch::kCUDA, 1));
  EXPECT_NE(restricted.reason.find("CUDA_VISIBLE_DEVICES='2,3'"), std::string::npos) << restricted.reason;
}

TEST(ChooseDevice, FewerGpusThanRanksOnTheNodeIsRefusedNamingBoth) {
  const auto both = refusal("cuda", node(0, 4), gpus(2));
  EXPECT_NE(both.find("4 ranks run on this node but only 2 GPUs are visible"), std::string::npos) << both;
  // Every rank refuses, rank 0 too, so none waits for the others.
  EXPECT_EQ(refusal("cuda", node(3, 4), gpus(2)), both);
  const auto auto_too = refusal("auto", node(0, 3), gpus(2, "0,1"));
  EXPECT_NE(auto_too.find("3 ranks run on this node but only 2 GPUs are visible (CUDA_VISIBLE_DEVICES='0,1')"),
            std::string::npos)
      << auto_too;
  const auto unknown_size = refusal("cuda", node(2, 0, Launcher::Slurm), gpus(2));
  EXPECT_NE(unknown_size.find("local rank 2 needs a GPU of its own, but only 2 GPUs are visible"), std::string::npos)
      << unknown_size;
}

TEST(ChooseDevice, CudaWithoutCudaNamesTheReason) {
  const auto build = refusal("cuda", node(0, 1), kCpuOnlyBuild);
  EXPECT_NE(build.find("this LibTorch build has no CUDA"), std::string::npos) << build;
  EXPECT_EQ(refusal("cuda:0", node(0, 1), kCpuOnlyBuild), "device cuda:0" + build.substr(std::string("device cuda").size()));
  const auto none = refusal("cuda", node(0, 1), gpus(0));
  EXPECT_NE(none.find("no GPU is visible"), std::string::npos) << none;
  const auto hidden = refusal("cuda:0", node(0, 1), gpus(0, ""));
  EXPECT_NE(hidden.find("no GPU is visible (CUDA_VISIBLE_DEVICES='')"), std::string::npos) << hidden;
}

TEST(ChooseDevice, AnExplicitIndexIsOneGpuForOneRankPerNode) {
  EXPECT_EQ(choose_device("cuda:3", node(0, 1), gpus(4)).device, torch::Device(torch::kCUDA, 3));
  EXPECT_EQ(choose_device("cuda:1", node(0, 0), gpus(2)).device, torch::Device(torch::kCUDA, 1));
  const auto beyond = refusal("cuda:2", node(0, 1), gpus(2));
  EXPECT_NE(beyond.find("only 2 GPUs are visible (cuda:0 .. cuda:1)"), std::string::npos) << beyond;
  const auto shared = refusal("cuda:0", node(1, 2), gpus(2));
  EXPECT_NE(shared.find("this node runs several ranks"), std::string::npos) << shared;
}

TEST(ChooseDevice, UnknownNamesAreRefusedListingTheForms) {
  for (const char* bad : {"gpu", "CUDA", "cuda:", "cuda:-1", "cuda:01", "cuda:x", "cpu:0", "mps", ""}) {
    EXPECT_FALSE(valid_device_name(bad)) << bad;
    EXPECT_NE(refusal(bad, node(0, 1), gpus(1)).find("is not one of auto, cpu, cuda, cuda:N"), std::string::npos)
        << bad;
  }
  for (const char* good : {"auto", "cpu", "cuda", "cuda:0", "cuda:15"}) EXPECT_TRUE(valid_device_name(good)) << good;
}

TEST(ChooseDevice, ThisBuildReportsWhatItHas) {
  const auto facts = device_facts();
  if (!facts.cuda_built) {
    EXPECT_EQ(facts.cuda_devices, 0);
  }
  const auto backends = compiled_backends();
  EXPECT_NE(std::find(backends.begin(), backends.end(), "mpi"), backends.end());
}

}  // namespace
}  // namespace atelier::comm
