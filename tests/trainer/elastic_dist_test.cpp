// Elastic resume through the real binary under mpirun: a run stopped on N
// ranks and resumed on M continues the global sample stream with no sample
// lost or repeated (audited per sample, folder loader and loader service),
// trains what one uninterrupted rank trains when train.global_batch holds
// the batch, deals CycleGAN's history pools out, and refuses global batches
// the ranks cannot split.
#include <gtest/gtest.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <torch/torch.h>

#include "checkpoint/checkpoint.h"
#include "tests/comm/run_command.h"
#include "tests/support/background_job.h"
#include "tests/support/child_process.h"
#include "tests/support/pattern_images.h"
#include "tests/support/tiny_run.h"

namespace atelier::trainer {
namespace {
namespace fs = std::filesystem;
using comm::testing::run_command;

// Global sample number -> every (content CRC, style CRC) a rank trained on.
using Audit = std::map<int64_t, std::vector<std::pair<uint32_t, uint32_t>>>;

// The reference stream: one rank, batch 2, kReferenceSteps steps.
constexpr int kReferenceSteps = 130;

class Elastic : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root = fs::temp_directory_path() / ("atelier-elastic-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 9, 1);  // an epoch is 9 samples
    testing_support::write_pattern_images(root / "style", 5, 2);
    for (const std::string what : {"content", "style"}) {
      const auto r = run_command(std::string(ATELIER_BINARY) + " shard --input " + (root / what).string() +
                                 " --output " + (root / "shards" / what).string() + " --shard-mb 1");
      ASSERT_EQ(r.status, 0) << r.output;
    }
    std::ofstream(root / "job.token") << "token-of-the-elastic-tests\n";
    const auto r = run_command(train(1, "reference", kReferenceSteps, 2, ""));
    ASSERT_EQ(r.status, 0) << r.output;
    reference = audit_of("reference");
    ASSERT_EQ(reference.size(), static_cast<size_t>(2 * kReferenceSteps));
  }
  static void TearDownTestSuite() { fs::remove_all(root); }

  // `atelier train` of the tiny model on `ranks` ranks (mpirun from 2),
  // batch `batch` per rank, sample audit on.
  static std::string train(int ranks, const std::string& name, int steps, int batch, const std::string& extra,
                           int checkpoint_every = 1000) {
    const std::string launch = ranks == 1 ? "" : "timeout 240 " + comm::testing::mpirun(ranks);
    return launch + ATELIER_BINARY + " train" +
           testing_support::tiny_train_args(root, name, steps, batch, checkpoint_every) +
           " --set data.audit=true --set run.log_level=info" + extra;
  }
  static fs::path run_dir(const std::string& name) { return root / "runs" / name; }

  static Audit audit_of(const std::string& name) {
    Audit out;
    for (const auto& entry : fs::directory_iterator(run_dir(name) / "audit")) {
      std::ifstream in(entry.path());
      for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line);
        const auto& content = j.at("content_crc32c");
        for (size_t i = 0; i < content.size(); ++i)
          out[j.at("first_sample").get<int64_t>() + static_cast<int64_t>(i)].emplace_back(
              content[i].get<uint32_t>(), j.at("style_crc32c")[i].get<uint32_t>());
      }
    }
    return out;
  }

  // Every sample 0 .. samples-1 trained exactly once, on the reference's
  // pixels, and nothing else.
  static void expect_each_sample_once(const std::string& name, int64_t samples) {
    const auto audit = audit_of(name);
    ASSERT_LE(samples, static_cast<int64_t>(reference.size()));
    EXPECT_EQ(static_cast<int64_t>(audit.size()), samples) << name;
    for (int64_t n = 0; n < samples; ++n) {
      const auto found = audit.find(n);
      if (found == audit.end()) {
        ADD_FAILURE() << name << ": sample " << n << " was never trained on";
        continue;
      }
      EXPECT_EQ(found->second.size(), 1u) << name << ": sample " << n << " trained on " << found->second.size()
                                          << " times";
      EXPECT_EQ(found->second.front(), reference.at(n).front()) << name << ": sample " << n << " is another image";
    }
  }

  static std::string service_args(int port) {
    return " --set data.source=service --set 'data.servers=[127.0.0.1:" + std::to_string(port) +
           "]' --set data.token_file=" + (root / "job.token").string() + " --set 'data.content=[]' --set 'data.style=[]'";
  }

  static inline fs::path root;
  static inline Audit reference;
};

struct Change {
  int from, to;          // ranks before and after
  std::string source;    // folder | service
};

void PrintTo(const Change& change, std::ostream* os) {
  *os << change.from << " -> " << change.to << " ranks, " << change.source;
}

class SampleAudit : public Elastic, public ::testing::WithParamInterface<Change> {};

// Two steps on N ranks of batch 2 (stopped by the end of train.steps, the
// end of an allocation), then three more on M ranks: the global batch
// changes from 2N to 2M and the stream goes on from sample 4N.
TEST_P(SampleAudit, NoSampleIsLostOrRepeatedAcrossTheChange) {
  const auto [from, to, source] = GetParam();
  const std::string name = "audit-" + std::to_string(from) + "-" + std::to_string(to) + "-" + source;
  std::unique_ptr<testing_support::ChildProcess> server;
  std::string extra;
  if (source == "service") {
    server = std::make_unique<testing_support::ChildProcess>(std::vector<std::string>{
        ATELIER_BINARY, "serve-data", "--content", (root / "shards/content").string(), "--style",
        (root / "shards/style").string(), "--host", "127.0.0.1", "--port", "0", "--token-file",
        (root / "job.token").string(), "--workers", "1"});
    const int port = testing_support::serve_data_port(*server);
    ASSERT_GT(port, 0) << server->output();
    extra = service_args(port);
  }
  const auto first = run_command(train(from, name, 2, 2, extra));
  ASSERT_EQ(first.status, 0) << first.output;
  const auto resumed = run_command(train(to, name, 5, 2, extra + " --resume"));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("world size changed from " + std::to_string(from) + " to " + std::to_string(to) +
                                " rank(s) at step 2: the global batch changes from " + std::to_string(2 * from) +
                                " to " + std::to_string(2 * to)),
            std::string::npos)
      << resumed.output;
  expect_each_sample_once(name, 2 * 2 * from + 3 * 2 * to);

  const auto manifest = checkpoint::read_manifest(run_dir(name) / "checkpoints" / "step-5");
  EXPECT_EQ(manifest.world_size, to);
  EXPECT_EQ(manifest.world_history,
            (std::vector<checkpoint::WorldSpan>{{0, from, 2 * from}, {2, to, 2 * to}}));
  const auto listed = run_command(std::string(ATELIER_BINARY) + " checkpoints --run " + run_dir(name).string());
  EXPECT_NE(listed.output.find(checkpoint::describe_world_history(manifest.world_history, 5)), std::string::npos)
      << listed.output;
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, SampleAudit,
                         ::testing::Values(Change{2, 1, "folder"}, Change{1, 2, "folder"}, Change{2, 3, "folder"},
                                           Change{2, 1, "service"}, Change{1, 2, "service"},
                                           Change{2, 3, "service"}),
                         [](const auto& info) {
                           return std::to_string(info.param.from) + "to" + std::to_string(info.param.to) + "_" +
                                  info.param.source;
                         });

// kill -9 of one rank between checkpoints: the steps after the last
// checkpoint are trained again on the new world, and the audit forgets the
// lost job's lines of them.
TEST_F(Elastic, AKilledJobResumedOnOneRankTrainsEverySampleOnce) {
  constexpr int kSteps = 60;
  const std::string name = "killed";
  bool killed = false;
  for (int attempt = 0; attempt < 3 && !killed; ++attempt) {
    fs::remove_all(run_dir(name));
    testing_support::Job job(train(2, name, kSteps, 2, "", /*checkpoint_every=*/3));
    if (!testing_support::reach_steps(job, run_dir(name) / "metrics.jsonl", 8, 2)) continue;
    killed = ::kill(job.rank_pid(1), SIGKILL) == 0;
    EXPECT_NE(job.wait(), 0);
  }
  ASSERT_TRUE(killed) << "the job finished before it could be killed, three times";
  const auto stopped = checkpoint::latest(run_dir(name) / "checkpoints");
  ASSERT_TRUE(stopped.has_value());
  const int64_t step = checkpoint::read_manifest(*stopped).step;
  ASSERT_LT(step, kSteps);
  const auto resumed = run_command(train(1, name, kSteps, 2, " --resume"));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  expect_each_sample_once(name, 4 * step + 2 * (kSteps - step));
}

// Accumulation keeps exact resume: a 2-rank run of 2 micro-batches per
// step, killed between checkpoints and resumed on 2 ranks, ends with the
// same files, byte for byte, as the run that was never interrupted.
TEST_F(Elastic, AnAccumulatingRunKilledAndResumedEndsByteIdentical) {
  constexpr int kSteps = 30;
  const std::string hold = " --set train.global_batch=8";
  const auto whole = run_command(train(2, "accumulating", kSteps, 2, hold, /*checkpoint_every=*/3));
  ASSERT_EQ(whole.status, 0) << whole.output;
  const std::string name = "accumulating-killed";
  bool killed = false;
  for (int attempt = 0; attempt < 3 && !killed; ++attempt) {
    fs::remove_all(run_dir(name));
    testing_support::Job job(train(2, name, kSteps, 2, hold, /*checkpoint_every=*/3));
    if (!testing_support::reach_steps(job, run_dir(name) / "metrics.jsonl", 8, 2)) continue;
    killed = ::kill(job.rank_pid(1), SIGKILL) == 0;
    EXPECT_NE(job.wait(), 0);
  }
  ASSERT_TRUE(killed) << "the job finished before it could be killed, three times";
  const auto resumed = run_command(train(2, name, kSteps, 2, hold + " --resume", 3));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  const auto last = "step-" + std::to_string(kSteps);
  const auto expected = checkpoint::read_manifest(run_dir("accumulating") / "checkpoints" / last).files;
  const auto actual = checkpoint::read_manifest(run_dir(name) / "checkpoints" / last).files;
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_EQ(actual[i].name, expected[i].name);
    if (actual[i].name == "config.yaml") continue;  // names the run
    EXPECT_EQ(actual[i].crc32c, expected[i].crc32c) << actual[i].name << " differs from the uninterrupted run's";
  }
}

// Parameters of the final checkpoint of `name` (the width-4 tiny model).
std::map<std::string, torch::Tensor> final_parameters(const fs::path& run, int steps) {
  return testing_support::checkpoint_parameters(run / "checkpoints" / ("step-" + std::to_string(steps)));
}

void expect_close(const std::map<std::string, torch::Tensor>& expected,
                  const std::map<std::string, torch::Tensor>& actual, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (const auto& [key, value] : expected)
    EXPECT_LT((value - actual.at(key)).abs().max().item<double>(), 1e-5) << what << " " << key;
}

// With train.global_batch 4 the optimiser sees the same batch on every
// world: 1 rank x 2 micro-batches, 2 ranks x 1, 2 ranks x 2 of batch 1, and
// runs that change world halfway train what 1 rank of batch 4 trains.
TEST_F(Elastic, AHeldGlobalBatchTrainsTheSameModelOnAnyWorld) {
  const std::string safe = testing_support::kRoundingSafeAdam;
  const auto one = run_command(train(1, "batch4", 5, 4, safe));
  ASSERT_EQ(one.status, 0) << one.output;
  const auto expected = final_parameters(run_dir("batch4"), 5);
  const std::string hold = safe + " --set train.global_batch=4";
  for (const auto& [ranks, batch] : std::vector<std::pair<int, int>>{{1, 2}, {2, 2}, {2, 1}}) {
    const std::string name = "hold-" + std::to_string(ranks) + "x" + std::to_string(batch);
    const auto r = run_command(train(ranks, name, 5, batch, hold + " --set dist.verify_every=1"));
    ASSERT_EQ(r.status, 0) << r.output;
    expect_close(expected, final_parameters(run_dir(name), 5), name);
  }
  for (const auto& [from, to] : std::vector<std::pair<int, int>>{{2, 1}, {1, 2}}) {
    const std::string name = "change-" + std::to_string(from) + "-" + std::to_string(to);
    const auto first = run_command(train(from, name, 3, 2, hold));
    ASSERT_EQ(first.status, 0) << first.output;
    const auto resumed = run_command(train(to, name, 5, 2, hold + " --resume"));
    ASSERT_EQ(resumed.status, 0) << resumed.output;
    const int micro = 2 / to;
    EXPECT_NE(resumed.output.find("the global batch stays 4 (" + std::to_string(to) + " rank(s) x " +
                                  std::to_string(micro) + " micro-batch(es) of 2"),
              std::string::npos)
        << resumed.output;
    expect_close(expected, final_parameters(run_dir(name), 5), name);
  }
}

TEST_F(Elastic, AGlobalBatchTheRanksCannotSplitIsRefusedWithItsNumbers) {
  const auto three = run_command(train(3, "refused", 2, 2, " --set train.global_batch=8"));
  EXPECT_EQ(three.status, 1) << three.output;
  EXPECT_NE(three.output.find("train.global_batch 8 is not a multiple of train.batch_size 2 x 3 rank(s) = 6"),
            std::string::npos)
      << three.output;
  EXPECT_FALSE(fs::exists(run_dir("refused") / "checkpoints" / "LATEST"));
  const auto config = run_command(train(1, "refused-config", 2, 4, " --set train.global_batch=6"));
  EXPECT_EQ(config.status, 2) << config.output;
  EXPECT_NE(config.output.find("train.global_batch (6) must be a multiple of train.batch_size (4)"), std::string::npos)
      << config.output;
}

}  // namespace
}  // namespace atelier::trainer
