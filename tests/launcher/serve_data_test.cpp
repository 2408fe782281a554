// The loader service end to end through the real binary: `atelier shard`,
// `atelier serve-data` in its own process, and `atelier train` with
// data.source: service, which must train on exactly the batches a
// data.source: folder run trains on (same losses at every step).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "../support/child_process.h"
#include "../support/pattern_images.h"
#include "run_atelier.h"

namespace {

namespace fs = std::filesystem;
using atelier::launcher::run_atelier;
using atelier::testing_support::ChildProcess;

std::vector<nlohmann::json> metrics(const fs::path& run) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST(ServeDataCommand, TrainingFromTheServiceMatchesTrainingFromTheFolder) {
  const fs::path root = fs::temp_directory_path() / ("atelier-serve-" + std::to_string(::getpid()));
  fs::remove_all(root);
  atelier::testing_support::write_pattern_images(root / "content", 5, 3);
  atelier::testing_support::write_pattern_images(root / "style", 3, 4);
  std::ofstream(root / "job.token") << "a-test-token-of-this-job\n";

  for (const std::string what : {"content", "style"}) {
    const auto shard = run_atelier("shard --input " + (root / what).string() + " --output " +
                                   (root / "shards" / what).string() + " --shard-mb 1");
    ASSERT_EQ(shard.status, 0) << shard.output;
    EXPECT_NE(shard.output.find("wrote "), std::string::npos) << shard.output;
  }
  const auto again = run_atelier("shard --input " + (root / "content").string() + " --output " +
                                 (root / "shards/content").string());
  EXPECT_NE(again.output.find("unchanged: 5 images"), std::string::npos) << again.output;

  ChildProcess server({ATELIER_BINARY, "serve-data", "--content", (root / "shards/content").string(), "--style",
                    (root / "shards/style").string(), "--host", "127.0.0.1", "--port", "0", "--token-file",
                    (root / "job.token").string(), "--workers", "2"});
  const int port = atelier::testing_support::serve_data_port(server);
  ASSERT_GT(port, 0) << server.output();

  const std::string common = " --set run.dir=" + (root / "runs").string() +
                             " --set run.log_level=warn --set model.encoder=vgg19 --set model.encoder_width=4 --set model.decoder_width=4"
                             " --set model.disc_width=4 --set data.load_size=40 --set data.crop_size=32"
                             " --set train.batch_size=2 --set train.steps=4 --set train.threads=1"
                             " --set train.sample_every=4 --set train.sample_count=1 --set checkpoint.every_steps=4";
  const auto folder = run_atelier("train" + common + " --set run.name=folder --set data.content=" +
                                  (root / "content").string() + " --set data.style=" + (root / "style").string());
  ASSERT_EQ(folder.status, 0) << folder.output;
  const std::string service_args = common + " --set data.source=service --set 'data.servers=[127.0.0.1:" +
                                   std::to_string(port) + "]' --set 'data.content=[]' --set 'data.style=[]'";
  const auto service =
      run_atelier("train" + service_args + " --set run.name=service --set data.token_file=" + (root / "job.token").string());
  ASSERT_EQ(service.status, 0) << service.output << server.output();

  const auto a = metrics(root / "runs/folder"), b = metrics(root / "runs/service");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i)
    for (const char* key : {"loss_d", "loss_g", "loss_content", "loss_style"})
      EXPECT_EQ(a[i].at(key).get<double>(), b[i].at(key).get<double>()) << key << " at step " << i + 1;
  EXPECT_TRUE(fs::exists(root / "runs/service/checkpoints/LATEST"));

  std::ofstream(root / "wrong.token") << "another-token\n";
  const auto refused =
      run_atelier("train" + service_args + " --set run.name=refused --set data.token_file=" + (root / "wrong.token").string());
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("authentication failed"), std::string::npos) << refused.output;

  EXPECT_EQ(server.terminate(), 0) << server.output();
  EXPECT_NE(server.output().find("stopping the loader server"), std::string::npos) << server.output();
  fs::remove_all(root);
}

}  // namespace
