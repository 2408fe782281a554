// `atelier submit` without a cluster: the rendered script for each kind of
// profile, every refusal before sbatch, and what a submit leaves in the run
// directory (sbatch replaced by a script that records how it was called).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "launcher/launcher.h"
#include "launcher/slurm_job.h"
#include "tests/launcher/fake_slurm.h"
#include "tests/launcher/run_atelier.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

std::string run_args(const fs::path& runs, const std::string& name) {
  return " --set run.dir=" + runs.string() + " --set run.name=" + name;
}

TEST(Submit, DryRunRendersTheLocalProfile) {
  const auto runs = fs::temp_directory_path() / "atelier-dry-run";
  const auto r = run_atelier("submit --dry-run --profile local --ntasks-per-node 2 --time 10:00" + run_args(runs, "d"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto run_dir = (runs / "d").string();
  for (const std::string& line : std::vector<std::string>
       {"#!/bin/bash\n", "#SBATCH --job-name=atelier-d\n", "#SBATCH --nodes=1\n", "#SBATCH --ntasks-per-node=2\n",
        "#SBATCH --time=10:00\n", "#SBATCH --requeue\n", "#SBATCH --signal=B:USR1@30\n", "#SBATCH --open-mode=append\n",
        "#SBATCH --output=" + run_dir + "/slurm/job-%j.out\n", "#SBATCH --chdir=" + fs::current_path().string() + "\n",
        "#SBATCH --partition=debug\n", "max_requeues=3\n",
        "srun --mpi=pmix " + std::string(ATELIER_BINARY) + " train --config " + run_dir +
            "/slurm/config.yaml --auto-resume &\n",
        "scontrol requeue \"$SLURM_JOB_ID\"", "trap 'stop=1; [ -n \"$ranks\" ] && kill -USR1 \"$ranks\" 2>/dev/null' USR1\n"})
    EXPECT_NE(r.output.find(line), std::string::npos) << "missing: " << line << "\n" << r.output;
  EXPECT_EQ(r.output.find("{{"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("--gpus-per-node"), std::string::npos) << "a CPU job asks for no GPUs";
  EXPECT_FALSE(fs::exists(runs / "d")) << "--dry-run writes nothing";
}

TEST(Submit, DryRunRendersTheGpuSiteExampleWithItsContainer) {
  const auto r = run_atelier("submit --dry-run --profile " + std::string(ATELIER_SOURCE_DIR) +
                             "/cluster/profiles/gpu-site-example.yaml --nodes 4 --gpus-per-node 8 --grace 600" +
                             run_args("/shared/runs", "big"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (const std::string& line : std::vector<std::string>
       {"#SBATCH --nodes=4\n", "#SBATCH --ntasks-per-node=8\n", "#SBATCH --gpus-per-node=8\n",
        "#SBATCH --time=24:00:00\n", "#SBATCH --signal=B:USR1@600\n", "#SBATCH --partition=gpu\n",
        "#SBATCH --account=my-project\n", "#SBATCH --cpus-per-task=8\n", "#SBATCH --exclusive\n",
        "#SBATCH --mail-type=FAIL\n", "module load cuda/12.4 openmpi/4.1\n", "export NCCL_DEBUG=WARN\n",
        "export OMP_NUM_THREADS=8\n", "nvidia-smi -L\n", "max_requeues=10\n",
        "srun --mpi=pmix --cpu-bind=cores apptainer exec --nv --bind /shared/data,/shared/runs,/scratch "
        "/shared/containers/atelier-cuda.sif /opt/atelier/bin/atelier train --config "
        "/shared/runs/big/slurm/config.yaml --auto-resume &\n"})
    EXPECT_NE(r.output.find(line), std::string::npos) << "missing: " << line << "\n" << r.output;
}

TEST(Submit, MpirunProfileStartsRanksWithMpirunAndFlagsOverrideTheProfile) {
  FakeSlurm fake;
  const auto profile = fake.dir / "site.yaml";
  std::ofstream(profile) << "launcher: mpirun\nmpirun_args: [--allow-run-as-root, --bind-to, none]\n"
                            "time: '2:00:00'\npartition: cpu\nmax_requeues: 1\n";
  const auto r = run_atelier("submit --dry-run --profile " + profile.string() +
                             " --partition long --max-requeues 5 --grace 90 --ntasks-per-node 3 --atelier /opt/a" +
                             run_args("/x", "m"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (const std::string& line : std::vector<std::string>{"#SBATCH --partition=long\n", "#SBATCH --ntasks-per-node=3\n", "max_requeues=5\n",
                                 "#SBATCH --signal=B:USR1@90\n",
                                 "mpirun --allow-run-as-root --bind-to none -np ${SLURM_NTASKS} /opt/a train"})
    EXPECT_NE(r.output.find(line), std::string::npos) << "missing: " << line << "\n" << r.output;
  EXPECT_EQ(r.output.find("srun --mpi"), std::string::npos) << r.output;
}

TEST(Submit, RenderedScriptIsValidBash) {
  FakeSlurm fake;
  const auto r = run_atelier("submit --dry-run --profile local --time 1:00:00" + run_args("'/tmp/r x'", "q"));
  EXPECT_EQ(r.status, 2) << "whitespace cannot go into #SBATCH lines: " << r.output;
  const auto ok = run_atelier("submit --dry-run --profile " + std::string(ATELIER_SOURCE_DIR) +
                              "/cluster/profiles/gpu-site-example.yaml --gpus-per-node 2" + run_args("/tmp", "v"));
  ASSERT_EQ(ok.status, 0) << ok.output;
  std::ofstream(fake.dir / "job.sh") << ok.output;
  EXPECT_EQ(std::system(("bash -n " + (fake.dir / "job.sh").string()).c_str()), 0) << ok.output;
}

// --ntasks asks for ranks in all; each start of the job counts the ranks of
// its own allocation (a requeued job may get another one), which srun and
// mpirun then take from SLURM_NTASKS. A fake srun shows what it was given.
TEST(Submit, EachStartCountsTheRanksOfItsAllocation) {
  FakeSlurm fake;
  const auto r = run_atelier("submit --dry-run --profile local --ntasks 3 --time 10:00" + run_args("/tmp", "n"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("#SBATCH --ntasks=3\n"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("--ntasks-per-node"), std::string::npos) << r.output;
  std::ofstream(fake.dir / "job.sh") << r.output;
  write_executable(fake.dir / "bin" / "srun", "#!/bin/sh\necho \"srun sees $SLURM_NTASKS tasks\"\n");
  for (const auto& [per_node, ranks] : std::vector<std::pair<std::string, std::string>>{
           {"3", "3"}, {"1", "1"}, {"2(x3),1", "7"}, {"4,2(x2)", "8"}}) {
    const auto ran = run_shell("env SLURM_JOB_ID=7 SLURM_NTASKS=3 'SLURM_TASKS_PER_NODE=" + per_node +
                                       "' SLURM_JOB_NODELIST=n1 bash " + (fake.dir / "job.sh").string());
    EXPECT_EQ(ran.status, 0) << ran.output;
    EXPECT_NE(ran.output.find(", " + ranks + " rank(s), at "), std::string::npos) << per_node << "\n" << ran.output;
    EXPECT_NE(ran.output.find("srun sees " + ranks + " tasks"), std::string::npos) << per_node << "\n" << ran.output;
  }
}

TEST(Submit, InconsistentRequestsAreRefusedNamingTheOption) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--time 10:00 --grace 600", "--grace 600 s must be shorter than --time 10:00"},
      {"--time 1-xx", "--time: '1-xx' is not a positive SLURM time limit"},
      {"--time 10:00 --gpus-per-node 4 --ntasks-per-node 2", "one task (rank) per GPU"},
      {"--time 10:00 --profile no-such-site", "no profile 'no-such-site'"},
      {"--time 10:00 --set train.steps=0", "train.steps"},
      {"--time 10:00 --ntasks 4 --ntasks-per-node 2", "give the ranks in all or per node, not both"},
      {"--time 10:00 --ntasks 4 --gpus-per-node 4", "GPU jobs give --ntasks-per-node"},
      {"--time 10:00 --ntasks 2 --nodes 3", "--ntasks 2 is fewer than --nodes 3"},
  };
  for (const auto& [flags, message] : cases) {
    const auto r = run_atelier("submit --dry-run " + flags + run_args("/tmp", "e"));
    EXPECT_EQ(r.status, 2) << flags << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << flags << "\n" << r.output;
  }
}

TEST(Submit, ProfileWithUnknownKeyIsRefusedNamingIt) {
  FakeSlurm fake;
  std::ofstream(fake.dir / "bad.yaml") << "partition: gpu\ncontainr:\n  image: x.sif\n";
  const auto r = run_atelier("submit --dry-run --time 10:00 --profile " + (fake.dir / "bad.yaml").string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("unknown profile key 'containr'"), std::string::npos) << r.output;
  std::ofstream(fake.dir / "bad2.yaml") << "launcher: slurm\n";
  const auto r2 = run_atelier("submit --dry-run --time 10:00 --profile " + (fake.dir / "bad2.yaml").string());
  EXPECT_EQ(r2.status, 2) << r2.output;
  EXPECT_NE(r2.output.find("launcher: unknown value 'slurm' (allowed: srun, mpirun)"), std::string::npos) << r2.output;
}

// sbatch must never see a configuration that train would refuse; a good
// one reaches it once, and the run directory keeps what the job needs.
TEST(Submit, BadConfigNeverReachesSbatchAndAGoodOneIsRecorded) {
  FakeSlurm fake;
  fake.command("sbatch", "4242\n");
  fake.command("scontrol", "", 1);
  fake.command("sacct", "", 1);
  const auto runs = fake.dir / "runs";
  const auto bad = run_atelier("submit --time 10:00 --set loss.style_weight=-1" + run_args(runs, "s"));
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("loss.style_weight"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(fake.dir / "calls")) << fake.calls();
  EXPECT_FALSE(fs::exists(runs / "s"));

  const auto good = run_atelier("submit --time 10:00 --set train.steps=7" + run_args(runs, "s"));
  ASSERT_EQ(good.status, 0) << good.output;
  const auto slurm = runs / "s" / "slurm";
  EXPECT_NE(fake.calls().find("sbatch --parsable " + (slurm / "job.sbatch").string()), std::string::npos)
      << fake.calls();
  EXPECT_EQ(good.output.substr(good.output.rfind('\n', good.output.size() - 2) + 1), "4242\n") << good.output;
  EXPECT_EQ(read_text(slurm / "jobs").substr(0, 5), "4242 ");
  EXPECT_NE(read_text(slurm / "job.sbatch").find("--config " + (slurm / "config.yaml").string()), std::string::npos);
  EXPECT_NE(read_text(slurm / "config.yaml").find("steps: 7"), std::string::npos);
}

TEST(Submit, RefusesARunDirectoryWhoseJobIsStillActive) {
  FakeSlurm fake;
  fake.command("sbatch", "17\n");
  fake.command("scontrol", "JobId=16 JobName=atelier-a JobState=RUNNING Reason=None Restarts=0\n");
  const auto runs = fake.dir / "runs";
  fs::create_directories(runs / "a" / "slurm");
  std::ofstream(runs / "a" / "slurm" / "jobs") << "16 2026-01-01T00:00:00Z\n";
  const auto r = run_atelier("submit --time 10:00" + run_args(runs, "a"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("already has job 16 (RUNNING)"), std::string::npos) << r.output;
  EXPECT_EQ(fake.calls().find("sbatch"), std::string::npos) << fake.calls();

  fake.command("scontrol", "JobId=16 JobName=atelier-a JobState=CANCELLED Reason=None Restarts=0\n");
  const auto again = run_atelier("submit --time 10:00" + run_args(runs, "a"));
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_NE(read_text(runs / "a" / "slurm" / "jobs").find("\n17 "), std::string::npos);
}

TEST(SlurmTime, AcceptsEverySlurmFormatAndNothingElse) {
  EXPECT_EQ(slurm_time_seconds("90"), 90 * 60);
  EXPECT_EQ(slurm_time_seconds("10:30"), 10 * 60 + 30);
  EXPECT_EQ(slurm_time_seconds("24:00:00"), 24 * 3600);
  EXPECT_EQ(slurm_time_seconds("2-12"), 2 * 86400 + 12 * 3600);
  EXPECT_EQ(slurm_time_seconds("1-02:03"), 86400 + 2 * 3600 + 3 * 60);
  EXPECT_EQ(slurm_time_seconds("1-02:03:04"), 86400 + 2 * 3600 + 3 * 60 + 4);
  for (const char* bad : {"", "0", "1h", "10:", "-5", "1:2:3:4", "00:00:00"})
    EXPECT_THROW(slurm_time_seconds(bad), ConfigError) << bad;
}

TEST(Template, SubstitutesEveryPlaceholderAndRejectsMismatches) {
  EXPECT_EQ(render_template("a={{x}} b={{y}} again={{x}}", {{"x", "1"}, {"y", "two words"}}),
            "a=1 b=two words again=1");
  EXPECT_THROW(render_template("{{x}} {{z}}", {{"x", "1"}}), std::runtime_error);
  EXPECT_THROW(render_template("{{x}}", {{"x", "1"}, {"unused", "2"}}), std::runtime_error);
  EXPECT_THROW(render_template("{{x", {{"x", "1"}}), std::runtime_error);
}

}  // namespace
}  // namespace atelier::launcher
