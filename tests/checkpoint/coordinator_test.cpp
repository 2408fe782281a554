// The checkpoint coordinator in one process and across 2 MPI ranks (the
// Ranks.* cases run only under mpirun, see CMakeLists.txt): parts of every
// rank in one manifest, a failed part aborting the whole checkpoint, a
// write that hits a file-size limit, crash debris, hooks, signals.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <fstream>
#include <random>
#include <thread>

#include "checkpoint/checkpoint.h"

namespace atelier::checkpoint {
namespace {
namespace fs = std::filesystem;

std::shared_ptr<comm::Communicator> world() {
  static auto comm = comm::make_communicator(comm::detect_environment(), {"auto", 60});
  return comm;
}

// A directory every rank agrees on: rank 0 names it, the others learn it.
fs::path shared_temp_dir() {
  auto id = torch::tensor({static_cast<int64_t>(std::random_device{}() & 0x7fffffff)});
  world()->broadcast(id, 0);
  const auto dir = fs::temp_directory_path() / ("atelier-coord-" + std::to_string(id.item<int64_t>()));
  fs::create_directories(dir);
  world()->barrier();
  return dir;
}

SaveRequest request(int64_t step, const std::string& payload) {
  SaveRequest r;
  r.info = {step, 0, world()->world_size(), "hash"};
  r.shared = {{"weights.bin", payload, {}}, {"config.yaml", "a: 1\n", {}}};
  r.own = {{"rng.bin", "rank " + std::to_string(world()->rank()) + " at " + std::to_string(step), {}}};
  return r;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class Coordinator : public ::testing::Test {
 protected:
  void SetUp() override { dir = shared_temp_dir() / "checkpoints"; }
  void TearDown() override {
    world()->barrier();
    if (world()->rank() == 0) fs::remove_all(dir.parent_path());
  }
  fs::path dir;
};

TEST_F(Coordinator, EveryRanksPartAndTheSharedStateAreInOneVerifiedManifest) {
  CheckpointCoordinator coordinator(dir, world(), {});
  ASSERT_TRUE(coordinator.save(request(4, "weights")));
  const auto outcome = coordinator.finish();
  ASSERT_TRUE(outcome && outcome->committed) << (outcome ? outcome->error : "no outcome");
  EXPECT_EQ(outcome->path, dir / "step-4");
  EXPECT_EQ(coordinator.last_committed_step(), 4);
  const auto manifest = read_manifest(dir / "step-4");
  EXPECT_EQ(manifest.world_size, world()->world_size());
  std::vector<std::string> names;
  for (const auto& f : manifest.files) names.push_back(f.name);
  for (int r = 0; r < world()->world_size(); ++r) {
    const auto own = "rank-" + std::to_string(r) + "/rng.bin";
    EXPECT_NE(std::find(names.begin(), names.end(), own), names.end()) << own;
    EXPECT_EQ(read_file(dir / "step-4" / own), "rank " + std::to_string(r) + " at 4");
  }
  EXPECT_EQ(names.size(), 2u + static_cast<size_t>(world()->world_size()));  // no vote files left in it
  EXPECT_NO_THROW(verify(dir / "step-4"));
  EXPECT_EQ(named_latest(dir), dir / "step-4");
  // Rank 0 reports what it committed and how long it took.
  uint64_t bytes = 0;
  for (const auto& f : manifest.files) bytes += f.size;
  EXPECT_EQ(outcome->bytes, world()->rank() == 0 ? bytes : 0u);
  if (world()->rank() == 0) {
    EXPECT_GT(outcome->seconds, 0.0);
  }
}

// Parts of 16 MiB and more are checksummed on a second thread while they are
// written: the manifest's checksum is still the file's.
TEST_F(Coordinator, ALargePartIsChecksummedBesideItsWrite) {
  std::string big(size_t{17} << 20, '\0');
  std::mt19937_64 rng(7);
  for (auto& c : big) c = static_cast<char>(rng());
  CheckpointCoordinator coordinator(dir, world(), {});
  ASSERT_TRUE(coordinator.save(request(2, big)));
  ASSERT_TRUE(coordinator.finish()->committed);
  const auto manifest = read_manifest(dir / "step-2");
  const auto weights = std::find_if(manifest.files.begin(), manifest.files.end(),
                                    [](const FileEntry& f) { return f.name == "weights.bin"; });
  ASSERT_NE(weights, manifest.files.end());
  EXPECT_EQ(weights->size, big.size());
  EXPECT_EQ(weights->crc32c, file_crc32c(dir / "step-2" / "weights.bin"));
  EXPECT_NO_THROW(verify(dir / "step-2"));
}

// The failing part is a rank's own file whose name cannot be created (a
// path through a regular file); every rank learns the checkpoint failed.
TEST_F(Coordinator, AFailedPartOnOneRankAbortsTheCheckpointOnEveryRank) {
  CheckpointCoordinator coordinator(dir, world(), {});
  coordinator.save(request(2, "good"));
  ASSERT_TRUE(coordinator.finish()->committed);
  auto bad = request(3, "bad");
  if (world()->rank() == world()->world_size() - 1) bad.own.push_back({"rng.bin/impossible", "x", {}});
  coordinator.save(std::move(bad));
  const auto outcome = coordinator.finish();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_FALSE(outcome->committed);
  EXPECT_FALSE(outcome->error.empty());
  world()->barrier();
  EXPECT_FALSE(fs::exists(dir / "step-3"));
  EXPECT_EQ(named_latest(dir), dir / "step-2");
  EXPECT_NO_THROW(verify(dir / "step-2"));
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_NE(entry.path().filename().string().rfind(".staging-", 0), 0u) << entry.path();
}

TEST_F(Coordinator, WaitPolicySavesEveryRequestAndRetentionKeepsTheNewest) {
  CheckpointCoordinator coordinator(dir, world(), {true, WhenBusy::Wait, 2, 0, "", 60});
  for (int64_t step = 1; step <= 4; ++step) ASSERT_TRUE(coordinator.save(request(step, std::string(1000, 'w'))));
  ASSERT_TRUE(coordinator.finish()->committed);
  world()->barrier();
  EXPECT_EQ(list(dir), (std::vector<fs::path>{dir / "step-4", dir / "step-3"}));
}

// Single process only from here on.

// What a crash between the parts and the manifest leaves: a staging
// directory. It is never taken for a checkpoint and the next job clears it.
TEST_F(Coordinator, CrashDebrisIsIgnoredByResumeAndRemovedByTheNextJob) {
  if (world()->world_size() > 1) GTEST_SKIP() << "single process";
  {
    CheckpointCoordinator coordinator(dir, world(), {});
    coordinator.save(request(1, "one"));
    ASSERT_TRUE(coordinator.finish()->committed);
  }
  const auto debris = dir / ".staging-step-2-12345";
  fs::create_directories(debris / "rank-0");
  std::ofstream(debris / "weights.bin") << "half";
  std::ofstream(debris / "rank-0" / "rng.bin") << "part";
  EXPECT_EQ(latest(dir), dir / "step-1");
  EXPECT_EQ(list(dir), std::vector<fs::path>{dir / "step-1"});
  CheckpointCoordinator next_job(dir, world(), {});
  EXPECT_FALSE(fs::exists(debris));
  EXPECT_TRUE(fs::exists(dir / "step-1"));
}

// A full disk, simulated by a file-size limit: the write fails with EFBIG,
// the error says so, and the previous checkpoint stays in charge.
TEST_F(Coordinator, AWriteThatHitsTheFileSizeLimitFailsCleanlyAndKeepsThePrevious) {
  if (world()->world_size() > 1) GTEST_SKIP() << "single process";
  CheckpointCoordinator coordinator(dir, world(), {});
  coordinator.save(request(1, "small"));
  ASSERT_TRUE(coordinator.finish()->committed);

  const auto previous_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit old_limit{};
  getrlimit(RLIMIT_FSIZE, &old_limit);
  rlimit limit = old_limit;
  limit.rlim_cur = 64 * 1024;
  setrlimit(RLIMIT_FSIZE, &limit);
  coordinator.save(request(2, std::string(256 * 1024, 'x')));
  const auto outcome = coordinator.finish();
  setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, previous_handler);

  ASSERT_TRUE(outcome.has_value());
  EXPECT_FALSE(outcome->committed);
  EXPECT_NE(outcome->error.find("File too large"), std::string::npos) << outcome->error;
  EXPECT_NE(outcome->error.find("weights.bin"), std::string::npos) << outcome->error;
  EXPECT_FALSE(fs::exists(dir / "step-2"));
  EXPECT_EQ(latest(dir), dir / "step-1");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 2);  // step-1, LATEST
}

// Skip: a save due while a large one is still being written is dropped
// (and the in-flight one still completes).
TEST_F(Coordinator, SkipPolicyDropsASaveRequestedWhileOneIsInFlight) {
  if (world()->world_size() > 1) GTEST_SKIP() << "single process";
  CheckpointCoordinator coordinator(dir, world(), {true, WhenBusy::Skip, 3, 0, "", 60});
  ASSERT_TRUE(coordinator.save(request(1, std::string(128u << 20, 'b'))));
  EXPECT_FALSE(coordinator.save(request(2, "small")));
  ASSERT_TRUE(coordinator.finish()->committed);
  EXPECT_TRUE(coordinator.save(request(3, "small")));
  ASSERT_TRUE(coordinator.finish()->committed);
  EXPECT_EQ(list(dir), (std::vector<fs::path>{dir / "step-3", dir / "step-1"}));
}

// The save that ends a run is required: it waits for the one in flight
// instead of being skipped, so the run never ends on an older checkpoint.
TEST_F(Coordinator, RequiredSaveWaitsEvenUnderTheSkipPolicy) {
  if (world()->world_size() > 1) GTEST_SKIP() << "single process";
  CheckpointCoordinator coordinator(dir, world(), {true, WhenBusy::Skip, 3, 0, "", 60});
  ASSERT_TRUE(coordinator.save(request(1, std::string(128u << 20, 'b'))));
  EXPECT_TRUE(coordinator.save(request(2, "small"), /*required=*/true));
  const auto outcome = coordinator.finish();
  ASSERT_TRUE(outcome && outcome->committed);
  EXPECT_EQ(outcome->step, 2);
  EXPECT_EQ(list(dir), (std::vector<fs::path>{dir / "step-2", dir / "step-1"}));
}

TEST_F(Coordinator, HookRunsAfterEachCommitWithTheCheckpointsPath) {
  if (world()->world_size() > 1) GTEST_SKIP() << "single process";
  const auto log = dir.parent_path() / "hook.log";
  {
    CheckpointCoordinator coordinator(dir, world(),
                                      {true, WhenBusy::Wait, 3, 0, "echo \"$ATELIER_STEP $ATELIER_CHECKPOINT\" >> " +
                                                                       log.string(), 60});
    coordinator.save(request(5, "a"));
    coordinator.save(request(6, "b"));
    coordinator.finish();
  }  // the destructor waits for the hooks
  std::ifstream in(log);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());  // the two hooks run concurrently
  EXPECT_EQ(lines, (std::vector<std::string>{"5 " + fs::absolute(dir / "step-5").string(),
                                             "6 " + fs::absolute(dir / "step-6").string()}));
}

TEST(StopSignals, TheFirstSignalCountsAndTheOldHandlerComesBack) {
  if (world()->world_size() > 1) GTEST_SKIP() << "single process";
  static volatile std::sig_atomic_t seen = 0;
  const auto old = std::signal(SIGUSR1, [](int) { seen = 1; });
  {
    StopSignals signals;
    EXPECT_EQ(signals.received(), 0);
    std::raise(SIGUSR1);
    std::raise(SIGTERM);  // would kill the test without the handler
    EXPECT_EQ(signals.received(), SIGUSR1);
    EXPECT_EQ(signals.agree(*world()), SIGUSR1);
  }
  EXPECT_EQ(seen, 0);
  std::raise(SIGUSR1);
  EXPECT_EQ(seen, 1);
  std::signal(SIGUSR1, old);
}

// The launcher's guard around the whole run and training's own: a signal
// caught before training starts is still there for its first step boundary;
// one after training ended sets the flag instead of killing the process; the
// handler from before both comes back at the end.
TEST(StopSignals, NestedGuardsKeepAnEarlySignalAndGiveTheOuterHandlerBack) {
  if (world()->world_size() > 1) GTEST_SKIP() << "single process";
  static volatile std::sig_atomic_t seen = 0;
  const auto old = std::signal(SIGUSR1, [](int) { seen = 1; });
  {
    StopSignals run;
    std::raise(SIGUSR1);  // during start-up
    {
      StopSignals training;
      EXPECT_EQ(training.received(), SIGUSR1);
    }
    std::raise(SIGTERM);  // after the last step: would kill the test without the outer handler
    EXPECT_EQ(run.received(), SIGUSR1);
  }
  {
    StopSignals fresh;  // a new outermost guard starts clear
    EXPECT_EQ(fresh.received(), 0);
  }
  EXPECT_EQ(seen, 0);
  std::raise(SIGUSR1);
  EXPECT_EQ(seen, 1);
  std::signal(SIGUSR1, old);
}

// Under mpirun: a signal on the last rank alone stops every rank.
TEST(Ranks, ASignalOnOneRankIsSeenByAll) {
  StopSignals signals;
  EXPECT_EQ(signals.agree(*world()), 0);
  if (world()->rank() == world()->world_size() - 1) std::raise(SIGUSR1);
  EXPECT_EQ(signals.agree(*world()), SIGUSR1);
}

}  // namespace
}  // namespace atelier::checkpoint
