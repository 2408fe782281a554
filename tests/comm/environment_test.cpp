// Single-process tests of comm/: the environment, the world of one, and the
// TCP rendezvous between two real processes with torchrun variables.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <algorithm>
#include <cstdlib>
#include <torch/torch.h>

#include "comm/comm.h"

namespace atelier::comm {
namespace {

// Sets variables for one test and restores the environment afterwards.
class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name);
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      ::setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) ::setenv(name.c_str(), value->c_str(), 1);
      else ::unsetenv(name.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

const char* const kAllVariables[] = {"OMPI_COMM_WORLD_RANK",       "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                                     "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_PROCID",         "SLURM_NTASKS",
                                     "SLURM_LOCALID",              "SLURM_NTASKS_PER_NODE", "RANK",
                                     "WORLD_SIZE",                 "LOCAL_RANK",           "LOCAL_WORLD_SIZE",
                                     "MASTER_ADDR",                "MASTER_PORT"};

class Env : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kAllVariables) ::unsetenv(name);
  }
};

TEST_F(Env, NoLauncherIsRankZeroOfOne) {
  const auto env = detect_environment();
  EXPECT_EQ(env.launcher, Launcher::None);
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
}

TEST_F(Env, OpenMpiVariablesWinOverSlurmAndTorchrun) {
  ScopedEnv vars{{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                 {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"RANK", "0"}, {"WORLD_SIZE", "1"}};
  const auto env = detect_environment();
  EXPECT_EQ(env.launcher, Launcher::Mpi);
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
}

TEST_F(Env, SlurmVariables) {
  ScopedEnv vars{{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}};
  const auto env = detect_environment();
  EXPECT_EQ(env.launcher, Launcher::Slurm);
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
}

TEST_F(Env, TorchrunVariablesIncludingMaster) {
  ScopedEnv vars{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "10.0.0.7"},
                 {"MASTER_PORT", "29501"}};
  const auto env = detect_environment();
  EXPECT_EQ(env.launcher, Launcher::Torchrun);
  EXPECT_EQ(env.rank, 1);
  EXPECT_EQ(env.master_addr, "10.0.0.7");
  EXPECT_EQ(env.master_port, 29501);
}

// `atelier submit --gpus-per-node 4` runs one task per GPU under srun: each
// rank's device follows from SLURM's variables alone (the GPUs are the
// node's four, visible to every task).
TEST_F(Env, UnderSrunEachRankPicksTheGpuOfItsSlurmLocalId) {
  const DeviceFacts four_gpus{true, 4, std::string("0,1,2,3")};
  for (int local = 0; local < 4; ++local) {
    const std::string procid = std::to_string(4 + local), localid = std::to_string(local);
    ScopedEnv vars{{"SLURM_PROCID", procid.c_str()}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", localid.c_str()},
                   {"SLURM_NTASKS_PER_NODE", "4"}};
    const auto env = detect_environment();
    EXPECT_EQ(choose_device("cuda", env, four_gpus).device, torch::Device(torch::kCUDA, local)) << local;
    EXPECT_EQ(choose_device("auto", env, four_gpus).device, torch::Device(torch::kCUDA, local)) << local;
  }
  ScopedEnv vars{{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "3"}, {"SLURM_NTASKS_PER_NODE", "4"}};
  EXPECT_THROW(choose_device("cuda", detect_environment(), DeviceFacts{true, 2, std::string("0,1")}), CommError);
}

// Ranks per node, which device selection checks against the GPUs visible.
TEST_F(Env, EachLauncherSaysHowManyRanksShareTheNode) {
  {
    ScopedEnv vars{{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}};
    EXPECT_EQ(detect_environment().local_size, 2);
  }
  {
    ScopedEnv vars{{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"SLURM_NTASKS_PER_NODE", "4"}};
    EXPECT_EQ(detect_environment().local_size, 4);
  }
  {
    ScopedEnv vars{{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}};
    EXPECT_EQ(detect_environment().local_size, 0) << "unknown without --ntasks-per-node";
  }
  {
    ScopedEnv vars{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"}};
    EXPECT_EQ(detect_environment().local_size, 2);
  }
  ScopedEnv vars{{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}};
  try {
    detect_environment();
    ADD_FAILURE() << "a local rank outside the local size must be refused";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"), std::string::npos)
        << e.what();
  }
}

TEST_F(Env, BadValuesAreErrorsNamingTheVariable) {
  {
    ScopedEnv vars{{"RANK", "one"}, {"WORLD_SIZE", "2"}};
    EXPECT_THROW(detect_environment(), CommError);
  }
  {
    ScopedEnv vars{{"RANK", "2"}, {"WORLD_SIZE", "2"}};
    try {
      detect_environment();
      FAIL() << "no error";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("WORLD_SIZE"), std::string::npos) << e.what();
    }
  }
  {
    ScopedEnv vars{{"SLURM_PROCID", "0"}};
    EXPECT_THROW(detect_environment(), CommError);
  }
}

TEST_F(Env, TorchrunWithoutNcclIsAClearErrorAndUnknownBackendsAreRefused) {
  Environment env;
  env.launcher = Launcher::Torchrun;
  env.world_size = 2;
  try {
    make_communicator(env, {});
    FAIL() << "no error";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("mpirun"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_communicator(Environment{}, {"gloo", 10}), CommError);
}

TEST(WorldOfOne, ReducerLeavesGradientsAsBackwardComputedThem) {
  auto comm = make_communicator(Environment{}, {});
  EXPECT_EQ(comm->backend(), "local");
  torch::manual_seed(1);
  torch::nn::Linear a(6, 3), b(6, 3);
  b->weight.data().copy_(a->weight.data());
  b->bias.data().copy_(a->bias.data());
  GradientReducer reducer(comm, a->parameters(), {5e-5, Compression::None});  // 52 bytes
  EXPECT_EQ(reducer.bucket_count(), 2);  // bias (12 bytes) fits, weight (72) starts its own
  const auto x = torch::randn({5, 6});
  reducer.prepare();
  a->forward(x).sum().backward();
  reducer.finalize();
  b->forward(x).sum().backward();
  EXPECT_TRUE(torch::equal(a->weight.grad(), b->weight.grad()));
  EXPECT_TRUE(torch::equal(a->bias.grad(), b->bias.grad()));
  // Reverse registration order: the bias (registered last) is in bucket 0.
  EXPECT_EQ(reducer.bucket_layout()[0], std::vector<int64_t>{1});
}

int free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

// Two processes: the child is rank 1, this process rank 0; both read their
// place from torchrun variables.
bool nccl_built() {
  const auto backends = compiled_backends();
  return std::find(backends.begin(), backends.end(), "nccl") != backends.end();
}

// NCCL's bootstrap under torchrun-style variables: rank 0's unique id
// reaches rank 1 over the TCP rendezvous (no GPU needed for the id).
TEST_F(Env, NcclUniqueIdOverTheRendezvousIsRankZerosOnBothRanks) {
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL backend";
  const auto port = std::to_string(free_port());
  int channel[2];
  ASSERT_EQ(pipe(channel), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(channel[0]);
    ::setenv("RANK", "1", 1), ::setenv("WORLD_SIZE", "2", 1), ::setenv("MASTER_ADDR", "127.0.0.1", 1);
    ::setenv("MASTER_PORT", port.c_str(), 1);
    try {
      const auto id = exchange_nccl_id(detect_environment(), nullptr, std::chrono::seconds(20));
      const bool sent = write(channel[1], id.data(), id.size()) == static_cast<ssize_t>(id.size());
      _exit(sent ? 0 : 3);
    } catch (const std::exception&) {
      _exit(4);
    }
  }
  close(channel[1]);
  ScopedEnv vars{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port.c_str()}};
  const auto id = exchange_nccl_id(detect_environment(), nullptr, std::chrono::seconds(20));
  std::string theirs(256, '\0');
  ssize_t got = 0, n = 0;
  while ((n = read(channel[0], theirs.data() + got, theirs.size() - static_cast<size_t>(got))) > 0) got += n;
  close(channel[0]);
  theirs.resize(static_cast<size_t>(got));
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  ASSERT_EQ(id.size(), 128u);
  EXPECT_EQ(theirs, id);
  EXPECT_NE(id, std::string(128, '\0'));
}

TEST_F(Env, NcclIsRefusedForCpuTensorsAndMpiForCudaOnesNamingTheReason) {
  const auto refusal = [](const Environment& env, const CommOptions& options) {
    try {
      make_communicator(env, options);
    } catch (const CommError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const auto nccl_on_cpu = refusal(Environment{}, {"nccl", 10});
  if (nccl_built())
    EXPECT_NE(nccl_on_cpu.find("dist.backend nccl carries CUDA tensors, but this rank's device is cpu"),
              std::string::npos)
        << nccl_on_cpu;
  else
    EXPECT_NE(nccl_on_cpu.find("this build has no NCCL backend"), std::string::npos) << nccl_on_cpu;
  Environment two;
  two.launcher = Launcher::Torchrun;
  two.world_size = 2;
  const auto mpi_on_cuda = refusal(two, {"mpi", 10, torch::Device(torch::kCUDA, 0)});
  EXPECT_NE(mpi_on_cuda.find("dist.backend mpi carries CPU tensors, but this rank's device is cuda:0"),
            std::string::npos)
      << mpi_on_cuda;
  const auto unknown = refusal(Environment{}, {"gloo", 10});
  EXPECT_NE(unknown.find("dist.backend 'gloo' is not one of auto, mpi, nccl"), std::string::npos) << unknown;
}

TEST_F(Env, RendezvousOverTcpExchangesEveryRanksBlob) {
  const auto port = std::to_string(free_port());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setenv("RANK", "1", 1), ::setenv("WORLD_SIZE", "2", 1), ::setenv("MASTER_ADDR", "127.0.0.1", 1);
    ::setenv("MASTER_PORT", port.c_str(), 1);
    try {
      const auto blobs = rendezvous_all_gather(detect_environment(), "from rank 1", std::chrono::seconds(20));
      _exit(blobs == std::vector<std::string>{"from rank 0", "from rank 1"} ? 0 : 3);
    } catch (const std::exception&) {
      _exit(4);
    }
  }
  ScopedEnv vars{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port.c_str()}};
  const auto blobs = rendezvous_all_gather(detect_environment(), "from rank 0", std::chrono::seconds(20));
  EXPECT_EQ(blobs, (std::vector<std::string>{"from rank 0", "from rank 1"}));
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
}

TEST(Rendezvous, AMissingRankZeroIsATimeoutNamingTheMaster) {
  Environment env;
  env.launcher = Launcher::Torchrun;
  env.rank = 1;
  env.world_size = 2;
  env.master_addr = "127.0.0.1";
  env.master_port = free_port();
  try {
    rendezvous_all_gather(env, "x", std::chrono::milliseconds(500));
    FAIL() << "no error";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(env.master_port)), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace atelier::comm
