// Two hosts on one machine (cluster/local/netns.sh): network namespaces
// joined by a veth pair, so MPI and the loader service cross a real network
// interface. A 2-rank job gets one rank on each host; the tiny model trained
// that way, with its data streamed by `atelier serve-data` on the second host,
// ends bit-identical to the same job on one host under plain mpirun. Each
// test brings the hosts up and takes them down, pass or fail; where this
// machine cannot make namespaces (not root, no iproute2, no permission) the
// tests are skipped with netns.sh's reason.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "checkpoint/checkpoint.h"
#include "tests/comm/run_command.h"
#include "tests/support/child_process.h"
#include "tests/support/pattern_images.h"
#include "tests/support/tiny_run.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;
using comm::testing::CommandResult;
using comm::testing::run_command;
using testing_support::ChildProcess;

// One name for every run: an interrupted test leaves hosts that the next
// `up` removes (CTest's RESOURCE_LOCK keeps these tests one at a time).
const std::string kName = "atelier-nt";
const std::string kHostB = kName + "-b";
constexpr int kExitCannot = 77;  // netns.sh: no namespaces on this machine
constexpr int kSteps = 20;
constexpr int kBatch = 2;

const std::string kNetns = std::string(ATELIER_SOURCE_DIR) + "/cluster/local/netns.sh";

std::string netns(const std::string& args) { return kNetns + " " + args; }

class TwoHosts : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { up_ = run_command(netns("up " + kName)); }
  static void TearDownTestSuite() {
    const auto down = run_command(netns("down " + kName));
    if (up_.status == 0) {
      EXPECT_EQ(down.status, 0) << down.output;
    }
  }

  void SetUp() override {
    if (up_.status == kExitCannot) GTEST_SKIP() << up_.output;
    ASSERT_EQ(up_.status, 0) << up_.output;
    root_ = fs::temp_directory_path() / ("atelier-netns-" + std::to_string(::getpid()));
    fs::remove_all(root_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  // Bytes host b has sent over its end of the veth so far.
  static long long sent_by_host_b() {
    const auto r = run_command(netns("exec " + kName + " b cat /sys/class/net/" + kName + "-vb/statistics/tx_bytes"));
    EXPECT_EQ(r.status, 0) << r.output;
    return r.status == 0 ? std::stoll(r.output) : -1;
  }

  // Shards of root/content and root/style, and the job's token.
  void write_data() const {
    testing_support::write_pattern_images(root_ / "content", 7, 1);
    testing_support::write_pattern_images(root_ / "style", 4, 2);
    for (const std::string what : {"content", "style"}) {
      const auto r = run_command(std::string(ATELIER_BINARY) + " shard --input " + (root_ / what).string() +
                                 " --output " + (root_ / "shards" / what).string() + " --shard-mb 1");
      ASSERT_EQ(r.status, 0) << r.output;
    }
    std::ofstream(root_ / "job.token") << "token-of-the-two-host-job\n";
  }

  std::map<std::string, torch::Tensor> final_parameters(const std::string& run) const {
    return testing_support::checkpoint_parameters(root_ / "runs" / run / "checkpoints" /
                                                  ("step-" + std::to_string(kSteps)));
  }

  static inline CommandResult up_;
  fs::path root_;
};

TEST_F(TwoHosts, RanksAlternateBetweenTheHosts) {
  const auto r = run_command(netns("mpirun " + kName +
                                   " -np 4 sh -c 'echo \"rank $OMPI_COMM_WORLD_RANK on $(ip netns identify $$)\"'"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (const auto& line : {"rank 0 on atelier-nt-a", "rank 1 on atelier-nt-b", "rank 2 on atelier-nt-a",
                           "rank 3 on atelier-nt-b"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
}

TEST_F(TwoHosts, NetnsRefusesHostsThatAreNotUp) {
  const auto r = run_command(netns("exec atelier-nx a true"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("atelier-nx-a and atelier-nx-b are not up"), std::string::npos) << r.output;
}

// Rank 0 on host a reaches the server on host b only over the veth (host a
// has nothing else but loopback), and the ranks all-reduce over it.
TEST_F(TwoHosts, TrainingAcrossTheHostsIsBitIdenticalToOneHost) {
  write_data();
  ChildProcess server({kNetns, "exec", kName, "b", ATELIER_BINARY, "serve-data", "--content",
                       (root_ / "shards/content").string(), "--style", (root_ / "shards/style").string(), "--port",
                       "0", "--token-file", (root_ / "job.token").string(), "--workers", "1"});
  const int port = testing_support::serve_data_port(server);
  ASSERT_GT(port, 0) << server.output();

  const auto sent_before = sent_by_host_b();
  const auto two_hosts = run_command(
      netns("mpirun " + kName + " -np 2 " + ATELIER_BINARY + " train") +
      testing_support::tiny_train_args(root_, "two-hosts", kSteps, kBatch) +
      " --set data.source=service --set 'data.servers=[" + kHostB + ":" + std::to_string(port) +
      "]' --set data.token_file=" + (root_ / "job.token").string() + " --set 'data.content=[]' --set 'data.style=[]'");
  ASSERT_EQ(two_hosts.status, 0) << two_hosts.output << "\nserver:\n" << server.output();
  const auto sent = sent_by_host_b() - sent_before;
  EXPECT_EQ(server.terminate(), 0) << server.output();

  // At least rank 0's share of every batch: content and style, uint8 RGB.
  EXPECT_GE(sent, static_cast<long long>(kSteps) * kBatch * 2 * 32 * 32 * 3) << "bytes host b sent over the veth";
  const auto ckpt = root_ / "runs/two-hosts/checkpoints" / ("step-" + std::to_string(kSteps));
  ASSERT_TRUE(fs::exists(ckpt)) << two_hosts.output;
  EXPECT_EQ(checkpoint::read_manifest(ckpt).world_size, 2);

  const auto one_host = run_command(comm::testing::mpirun(2) + ATELIER_BINARY + " train" +
                                    testing_support::tiny_train_args(root_, "one-host", kSteps, kBatch));
  ASSERT_EQ(one_host.status, 0) << one_host.output;
  const auto expected = final_parameters("one-host");
  const auto actual = final_parameters("two-hosts");
  ASSERT_EQ(actual.size(), expected.size());
  for (const auto& [key, value] : expected) EXPECT_TRUE(torch::equal(value, actual.at(key))) << key;
}

}  // namespace
}  // namespace atelier::launcher
