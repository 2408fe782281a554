// `atelier status` on run directories built by hand, with SLURM's answers
// faked; and `atelier train --auto-resume` on a tiny real run.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "checkpoint/checkpoint.h"
#include "tests/launcher/fake_slurm.h"
#include "tests/launcher/run_atelier.h"
#include "tests/support/pattern_images.h"

namespace atelier::launcher {
namespace {

// A run directory with metrics up to step 7 and a checkpoint of step 6.
fs::path make_run(const fs::path& root, const std::string& job_id) {
  const auto run = root / "runs" / "st";
  fs::create_directories(run / "slurm");
  std::ofstream(run / "config.yaml") << "run: {name: st}\n";
  std::ofstream metrics(run / "metrics.jsonl");
  for (int step = 1; step <= 7; ++step)
    metrics << "{\"step\":" << step << ",\"images_per_s\":" << 10.0 + step * 0.5 << "}\n";
  metrics << "{\"step\":8,\"imag";  // a line still being written
  metrics.close();
  // Trained on 2 ranks, resumed on 1 after step 4 (elastic resume).
  checkpoint::save(run / "checkpoints", {6, 0, 1, "h", {{0, 2, 8}, {4, 1, 8}}},
                   [](const fs::path& dir) { std::ofstream(dir / "g.pt") << "w"; });
  if (!job_id.empty()) std::ofstream(run / "slurm" / "jobs") << "3 2026-01-01T00:00:00Z\n" << job_id << " 2026-01-02T00:00:00Z\n";
  return run;
}

TEST(Status, ShowsTheRecordedJobTheLastStepAndTheLastCheckpoint) {
  FakeSlurm fake;
  fake.command("scontrol",
               "JobId=12 JobName=atelier-st UserId=root(0) JobState=RUNNING Reason=None Dependency=(null) "
               "Requeue=1 Restarts=2 BatchFlag=1 ExitCode=0:0 RunTime=00:03:10 TimeLimit=00:30:00 NodeList=node7\n");
  const auto run = make_run(fake.dir, "12");
  const auto r = run_atelier("status " + run.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(fake.calls().find("scontrol show job -o 12"), std::string::npos) << fake.calls();
  EXPECT_NE(r.output.find("job:         12 RUNNING, run time 00:03:10 of 00:30:00, nodes node7, requeued 2 time(s)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("last step:   7, 13.5 images/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("checkpoint:  " + (run / "checkpoints" / "step-6").string() + " (step 6,"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(", trained on 2 ranks (steps 1-4), 1 rank (steps 5-6))"), std::string::npos) << r.output;
}

TEST(Status, FallsBackToSacctThenSaysTheJobIsGone) {
  FakeSlurm fake;
  fake.command("scontrol", "", 1);
  fake.command("sacct", "PENDING|0:0|00:00:00|00:30:00|None assigned\nCOMPLETED|0:0|00:10:00|00:30:00|n1\n");
  const auto run = make_run(fake.dir, "12");
  const auto r = run_atelier("status " + run.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("job:         12 COMPLETED, run time 00:10:00 of 00:30:00, nodes n1, exit code 0:0"),
            std::string::npos)
      << r.output;

  fake.command("sacct", "", 1);
  const auto gone = run_atelier("status " + run.string());
  ASSERT_EQ(gone.status, 0) << gone.output;
  EXPECT_NE(gone.output.find("job:         12, no longer known to SLURM"), std::string::npos) << gone.output;
}

TEST(Status, RunWithoutJobOrCheckpointAndNotARunDirectory) {
  FakeSlurm fake;
  const auto run = fake.dir / "plain";
  fs::create_directories(run);
  std::ofstream(run / "config.yaml") << "run: {}\n";
  const auto r = run_atelier("status " + run.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("job:         none recorded"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("last step:   none yet"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("checkpoint:  none"), std::string::npos) << r.output;
  EXPECT_EQ(fake.calls(), "") << "no job recorded: SLURM is not asked";

  const auto bad = run_atelier("status " + fake.dir.string());
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_NE(bad.output.find("is not a run directory"), std::string::npos) << bad.output;
}

// What every SLURM job runs: fresh the first time, resumed after that.
TEST(AutoResume, StartsFreshWithoutACheckpointAndResumesWithOne) {
  const auto root = fs::temp_directory_path() / ("atelier-auto-" + std::to_string(std::random_device{}()));
  testing_support::write_pattern_images(root / "content", 3, 1);
  testing_support::write_pattern_images(root / "style", 2, 2);
  const std::string args = " --set run.dir=" + (root / "runs").string() + " --set run.name=a" +
                           " --set data.content=" + (root / "content").string() + " --set data.style=" +
                           (root / "style").string() +
                           " --set data.load_size=40 --set data.crop_size=32 --set model.encoder=vgg19 --set model.encoder_width=4"
                           " --set model.decoder_width=4 --set model.disc_width=4 --set train.batch_size=1"
                           " --set train.sample_every=1000 --set checkpoint.every_steps=2";
  const auto first = run_atelier("train --auto-resume" + args + " --set train.steps=2");
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_NE(first.output.find("--auto-resume: no checkpoint under"), std::string::npos) << first.output;
  const auto second = run_atelier("train --auto-resume" + args + " --set train.steps=4");
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_NE(second.output.find("--auto-resume: resuming from " + (root / "runs" / "a" / "checkpoints" / "step-2").string()),
            std::string::npos)
      << second.output;
  EXPECT_TRUE(fs::exists(root / "runs" / "a" / "checkpoints" / "step-4"));
  const auto both = run_atelier("train --auto-resume --resume" + args);
  EXPECT_EQ(both.status, 2) << both.output;
  fs::remove_all(root);
}

}  // namespace
}  // namespace atelier::launcher
