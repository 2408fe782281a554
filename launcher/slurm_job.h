// SLURM jobs for `atelier submit` and `atelier status`: site profiles, the
// sbatch script rendered from cluster/slurm/job.sbatch.in, and the few SLURM
// commands we run (sbatch, scontrol, sacct). Private to launcher/.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace atelier::launcher {

// How ranks are started inside the allocation.
enum class MpiLauncher {
  Srun,    // srun --mpi=<srun_mpi>: SLURM starts one task per rank (PMIx)
  Mpirun,  // mpirun inside the allocation: OpenMPI reads it from SLURM
};

// An Apptainer (or Singularity) image every rank runs in.
struct Container {
  std::string image;               // .sif path or URI; empty: no container
  std::vector<std::string> binds;  // host paths (or host:container) to bind
  std::vector<std::string> options;  // e.g. --nv for NVIDIA GPUs
  std::string exec = "apptainer";  // or singularity
};

// What a site needs that the job does not: cluster/profiles/<name>.yaml.
struct SiteProfile {
  std::string name;                // file name without .yaml, or the path given
  std::string partition;           // default --partition ("" = the cluster's default)
  std::string account;             // --account ("" = none)
  std::string time;                // default --time ("" = must be given)
  int cpus_per_task = 0;           // --cpus-per-task (0 = not set)
  int grace_s = 120;               // default --grace: seconds between USR1 and the time limit
  int max_requeues = 3;            // default --max-requeues
  std::vector<std::string> modules;  // `module load` before the job starts
  std::map<std::string, std::string> env;  // exported before the job starts
  std::vector<std::string> setup;  // further shell lines before the ranks start
  MpiLauncher launcher = MpiLauncher::Srun;
  std::string srun_mpi = "pmix";   // srun --mpi=...
  std::vector<std::string> srun_args;    // extra srun arguments
  std::vector<std::string> mpirun_args;  // extra mpirun arguments
  Container container;
  std::string atelier;             // atelier binary in the job ("" = the submitting binary)
  std::vector<std::string> sbatch;  // extra #SBATCH options, e.g. --qos=high
  std::string template_path;       // another script template ("" = the built-in one)
};

// Reads a profile: NAME is looked up as NAME.yaml in $ATELIER_PROFILES
// (colon-separated folders) and then in the source tree's cluster/profiles/;
// anything containing '/' or ending in .yaml is a path. Unknown keys and bad
// values throw ConfigError naming the file and key.
SiteProfile load_profile(const std::string& name_or_path);
SiteProfile parse_profile(const std::string& yaml_text, const std::string& origin);

// What one `atelier submit` asks for.
struct JobRequest {
  int nodes = 1;
  int gpus_per_node = 0;           // 0: a CPU job
  int ntasks_per_node = 0;         // 0: one per GPU (1 for a CPU job)
  int ntasks = 0;                  // > 0: this many ranks in all, placed by SLURM (instead of per node)
  std::string partition;           // "" = the profile's
  std::string time;                // "" = the profile's
  int grace_s = -1;                // -1 = the profile's
  int max_requeues = -1;           // -1 = the profile's
  std::string run_name;            // run.name, for the job name
  std::filesystem::path run_dir;   // absolute <run.dir>/<run.name>
  std::filesystem::path workdir;   // absolute; relative paths of the config are relative to it
  std::string atelier;             // the binary the ranks run
};

// The job after the profile's defaults are applied and everything checked.
struct ResolvedJob {
  JobRequest request;              // every field filled in
  long time_limit_s = 0;           // request.time in seconds
};

// Fills the request's defaults from the profile and checks them together:
// the time limit's format, grace below the time limit, one task per GPU.
// Throws ConfigError naming the option.
ResolvedJob resolve_job(const JobRequest& request, const SiteProfile& profile);

// Seconds in a SLURM time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or
// D-HH:MM:SS. Throws ConfigError on anything else.
long slurm_time_seconds(const std::string& time);

// Replaces every {{key}} in `text` with values.at(key). A placeholder
// without a value, or a value no placeholder uses, throws std::runtime_error
// (a template and its caller that disagree are a bug, not a user error).
std::string render_template(const std::string& text, const std::map<std::string, std::string>& values);

// The batch script for `job` on `profile`.
std::string render_sbatch_script(const ResolvedJob& job, const SiteProfile& profile);

// Where a submitted job's files live in its run directory.
std::filesystem::path slurm_dir(const std::filesystem::path& run_dir);         // <run>/slurm
std::filesystem::path job_config_path(const std::filesystem::path& run_dir);   // the config the job trains with
std::filesystem::path job_script_path(const std::filesystem::path& run_dir);   // the rendered script
std::filesystem::path job_ids_path(const std::filesystem::path& run_dir);      // one line per submission

// The job id recorded by the latest submit into run_dir, if any.
std::optional<std::string> recorded_job_id(const std::filesystem::path& run_dir);

// Appends "<job id> <UTC time>" to job_ids_path(run_dir).
void record_job_id(const std::filesystem::path& run_dir, const std::string& job_id);

// What a program printed and how it exited.
struct ProgramOutput {
  int status = -1;           // exit code; 127 when it cannot be started
  std::string stdout_text;
  std::string stderr_text;   // trailing newlines removed
};

// Runs argv[0] (searched in PATH) with argv, without a shell.
ProgramOutput run_program(const std::vector<std::string>& argv);

// `sbatch --parsable script`: the new job's id. Throws naming sbatch's exit
// code when it fails.
std::string submit_script(const std::filesystem::path& script);

// What SLURM says about a job.
struct JobState {
  std::string state;       // PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...
  std::string reason;      // why pending, or "None"
  std::string exit_code;   // "75:0" (exit code:signal)
  std::string run_time;    // "00:01:23"
  std::string time_limit;  // "01:00:00"
  int restarts = 0;        // how often it was requeued
  std::string nodes;       // node list
  std::string source;      // "scontrol" or "sacct"
};

// scontrol show job (jobs SLURM still holds: pending, running, finished
// within MinJobAge), then sacct (needs accounting); nullopt when neither
// knows the job.
std::optional<JobState> query_job(const std::string& job_id);

// Whether a job in `state` may still run (pending, running, requeued, ...).
bool job_is_active(const std::string& state);

}  // namespace atelier::launcher
