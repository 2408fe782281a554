// The device through the binary: `atelier --version` says what the build
// has, train.device and --device are checked before any work, and a run's
// log.txt starts with the build and the device it chose. (The choice itself
// is tested case by case in tests/comm/device_test.cpp.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <torch/version.h>

#include "comm/comm.h"
#include "tests/launcher/run_atelier.h"
#include "tests/launcher/tiny_checkpoint.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(Version, SaysTheLibTorchItsCudaAndTheBackends) {
  const auto ran = run_atelier("--version");
  ASSERT_EQ(ran.status, 0) << ran.output;
  EXPECT_EQ(ran.output.rfind("atelier " + checkpoint::atelier_version() + "\n", 0), 0u) << ran.output;
  EXPECT_NE(ran.output.find(std::string("LibTorch ") + TORCH_VERSION + ", "), std::string::npos) << ran.output;
  const auto facts = comm::device_facts();
  EXPECT_NE(ran.output.find(facts.cuda_built ? "with CUDA, " + std::to_string(facts.cuda_devices) + " GPU(s) visible"
                                             : std::string("CPU only (this build has no CUDA)")),
            std::string::npos)
      << ran.output;
  EXPECT_NE(ran.output.find("communication backends: mpi"), std::string::npos) << ran.output;
}

// CI fails the day the NCCL backend stops compiling: where the CUDA
// toolkit with NCCL is installed, the binary must have it.
TEST(Version, NamesNcclWhereverTheCudaToolkitHasIt) {
#ifdef ATELIER_NCCL_OFF
  GTEST_SKIP() << "configured with -DATELIER_NCCL=OFF";
#endif
  const fs::path cuda = std::getenv("CUDA_HOME") ? std::getenv("CUDA_HOME") : "/usr/local/cuda";
  if (!fs::exists(cuda / "include" / "nccl.h") || !fs::exists(cuda / "include" / "cuda_runtime.h"))
    GTEST_SKIP() << "no CUDA toolkit with NCCL under " << cuda;
  const auto ran = run_atelier("--version");
  EXPECT_NE(ran.output.find("communication backends: mpi, nccl"), std::string::npos)
      << "the CUDA toolkit and NCCL are installed under " << cuda << " but the NCCL backend was not built:\n"
      << ran.output;
}

class Device : public ::testing::Test {
 protected:
  // A one-step run of the tiny checkpoint's data and widths, on `device`.
  Ran train(const std::string& name, const std::string& device) const {
    std::string sets;
    for (const std::string& set :
         {"run.dir=" + (tiny.root / "runs").string(), "run.name=" + name, "data.content=" + (tiny.root / "content").string(),
          "data.style=" + (tiny.root / "style").string(), std::string("data.load_size=40"),
          std::string("data.crop_size=32"), std::string("data.workers=1"), std::string("model.encoder=vgg19"), std::string("model.encoder_width=4"),
          std::string("model.decoder_width=4"), std::string("model.disc_width=4"), std::string("train.steps=1"),
          std::string("train.batch_size=1"), std::string("train.sample_count=1"), std::string("train.threads=1"),
          "train.device=" + device})
      sets += " --set '" + set + "'";
    return run_atelier("train" + sets);
  }

  TinyCheckpoint tiny;
};

TEST_F(Device, UnknownNamesAreRefusedEverywhereListingTheForms) {
  const auto ran = train("bad", "gpu");
  EXPECT_EQ(ran.status, 2) << ran.output;
  EXPECT_NE(ran.output.find("train.device: 'gpu' is not one of auto, cpu, cuda, cuda:N"), std::string::npos)
      << ran.output;
  EXPECT_FALSE(fs::exists(tiny.root / "runs" / "bad"));
  const auto stylized = run_atelier("stylize --checkpoint " + tiny.run_dir.string() + " --content " +
                                    (tiny.root / "content" / "c0.png").string() + " --style " +
                                    (tiny.root / "style" / "s0.png").string() + " --device tpu --out " +
                                    (tiny.root / "out.png").string());
  EXPECT_EQ(stylized.status, 2) << stylized.output;
  EXPECT_NE(stylized.output.find("--device: device 'tpu' is not one of"), std::string::npos) << stylized.output;
}

// What this CPU-only build says to a user who asks for a GPU: the reason,
// before anything is written or loaded.
TEST_F(Device, CudaOnABuildWithoutCudaIsRefusedBeforeAnyWorkNamingTheReason) {
  if (comm::device_facts().cuda_built) GTEST_SKIP() << "this LibTorch has CUDA: the refusal cannot happen here";
  for (const char* device : {"cuda", "cuda:0"}) {
    const auto ran = train(std::string("on-") + (device[4] == ':' ? "cuda0" : "cuda"), device);
    EXPECT_EQ(ran.status, 2) << ran.output;
    EXPECT_NE(ran.output.find("train.device: device " + std::string(device) + ": this LibTorch build has no CUDA"),
              std::string::npos)
        << ran.output;
  }
  EXPECT_FALSE(fs::exists(tiny.root / "runs" / "on-cuda"));
  const std::string images = " --content " + (tiny.root / "content" / "c0.png").string() + " --style " +
                             (tiny.root / "style" / "s0.png").string();
  for (const auto& [command, out] : {std::pair<std::string, fs::path>{"stylize", tiny.root / "out.png"},
                                     {"evaluate", tiny.root / "eval.json"},
                                     {"explain", tiny.root / "explained"}}) {
    const auto ran = run_atelier(command + " --checkpoint " + tiny.run_dir.string() + images +
                                 " --device cuda --out " + out.string());
    EXPECT_EQ(ran.status, 2) << command << ": " << ran.output;
    EXPECT_NE(ran.output.find("--device: device cuda: this LibTorch build has no CUDA"), std::string::npos)
        << command << ": " << ran.output;
    EXPECT_FALSE(fs::exists(out)) << command;
  }
}

TEST_F(Device, TheRunsLogStartsWithTheBuildAndTheDeviceChosen) {
  const auto ran = train("auto", "auto");
  ASSERT_EQ(ran.status, 0) << ran.output;
  const auto log = read_file(tiny.root / "runs" / "auto" / "log.txt");
  std::istringstream lines(log);
  std::string first, second, third, data_files, fourth;
  std::getline(lines, first);
  std::getline(lines, second);
  std::getline(lines, third);
  std::getline(lines, data_files);
  std::getline(lines, fourth);
  EXPECT_NE(first.find("atelier " + checkpoint::atelier_version()), std::string::npos) << log;
  EXPECT_NE(second.find(std::string("LibTorch ") + TORCH_VERSION), std::string::npos) << log;
  EXPECT_NE(third.find("communication backends: mpi"), std::string::npos) << log;
  EXPECT_NE(data_files.find("data files: "), std::string::npos) << log;
  const auto facts = comm::device_facts();
  if (!facts.cuda_built) {
    EXPECT_NE(fourth.find("device auto: cpu (this LibTorch build has no CUDA)"), std::string::npos) << log;
  } else if (facts.cuda_devices > 0) {
    EXPECT_NE(fourth.find("device auto: cuda:0"), std::string::npos) << log;
  }
  const auto on_cpu = train("cpu", "cpu");
  ASSERT_EQ(on_cpu.status, 0) << on_cpu.output;
  EXPECT_NE(read_file(tiny.root / "runs" / "cpu" / "log.txt").find("] device cpu\n"), std::string::npos);
  // And its checkpoint stylizes and explains on the device asked for.
  const auto stylized = run_atelier("stylize --checkpoint " + (tiny.root / "runs" / "cpu").string() + " --content " +
                                    (tiny.root / "content" / "c0.png").string() + " --style " +
                                    (tiny.root / "style" / "s0.png").string() + " --device cpu --out " +
                                    (tiny.root / "out.png").string());
  EXPECT_EQ(stylized.status, 0) << stylized.output;
  EXPECT_NE(stylized.output.find("device cpu"), std::string::npos) << stylized.output;
  const auto explained = run_atelier("explain --checkpoint " + (tiny.root / "runs" / "cpu").string() + " --content " +
                                     (tiny.root / "content" / "c0.png").string() + " --style " +
                                     (tiny.root / "style" / "s0.png").string() +
                                     " --device cpu --size 32 --methods features trust --out " +
                                     (tiny.root / "explained").string());
  EXPECT_EQ(explained.status, 0) << explained.output;
  EXPECT_NE(explained.output.find("device cpu"), std::string::npos) << explained.output;
  EXPECT_TRUE(fs::exists(tiny.root / "explained" / "report.html"));
}

}  // namespace
}  // namespace atelier::launcher
