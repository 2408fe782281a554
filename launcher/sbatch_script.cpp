// The sbatch script of a job: the request checked against the profile, then
// cluster/slurm/job.sbatch.in (compiled in) rendered with {{key}} values.
#include <fstream>
#include <regex>
#include <sstream>

#include "launcher/generated_sbatch_template.h"
#include "launcher/launcher.h"
#include "launcher/slurm_job.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

// One word for the shell: quoted unless it is plainly safe.
std::string shell_word(const std::string& s) {
  static const std::regex safe("[A-Za-z0-9_@%+=:,./-]+");
  if (std::regex_match(s, safe)) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string shell_words(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + shell_word(w);
  return out;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

// #SBATCH lines and sbatch's own parsing do not survive whitespace in paths.
void check_plain_path(const std::string& what, const fs::path& path) {
  if (path.string().find_first_of(" \t\n'\"") != std::string::npos)
    throw ConfigError(what + " '" + path.string() + "' contains whitespace or quotes, which #SBATCH lines cannot hold");
}

std::vector<std::string> sbatch_lines(const ResolvedJob& job, const SiteProfile& profile) {
  const auto& r = job.request;
  std::vector<std::string> lines;
  if (!r.partition.empty()) lines.push_back("--partition=" + r.partition);
  if (!profile.account.empty()) lines.push_back("--account=" + profile.account);
  if (r.gpus_per_node > 0) lines.push_back("--gpus-per-node=" + std::to_string(r.gpus_per_node));
  if (profile.cpus_per_task > 0) lines.push_back("--cpus-per-task=" + std::to_string(profile.cpus_per_task));
  for (const auto& extra : profile.sbatch) lines.push_back(extra.rfind("--", 0) == 0 ? extra : "--" + extra);
  for (auto& line : lines) line = "#SBATCH " + line;
  return lines;
}

std::vector<std::string> setup_lines(const SiteProfile& profile) {
  std::vector<std::string> lines;
  if (!profile.modules.empty()) lines.push_back("module load " + shell_words(profile.modules));
  for (const auto& [name, value] : profile.env) lines.push_back("export " + name + "=" + shell_word(value));
  lines.insert(lines.end(), profile.setup.begin(), profile.setup.end());
  return lines;
}

// The command every rank runs, started by srun or mpirun.
std::vector<std::string> launch_words(const ResolvedJob& job, const SiteProfile& profile) {
  std::vector<std::string> argv;
  if (profile.launcher == MpiLauncher::Srun) {
    argv = {"srun", "--mpi=" + profile.srun_mpi};
    argv.insert(argv.end(), profile.srun_args.begin(), profile.srun_args.end());
  } else {
    argv = {"mpirun"};
    argv.insert(argv.end(), profile.mpirun_args.begin(), profile.mpirun_args.end());
    argv.insert(argv.end(), {"-np", "${SLURM_NTASKS}"});  // expanded by the job's shell, hence not quoted below
  }
  const auto& c = profile.container;
  if (!c.image.empty()) {
    argv.insert(argv.end(), {c.exec, "exec"});
    argv.insert(argv.end(), c.options.begin(), c.options.end());
    if (!c.binds.empty()) argv.insert(argv.end(), {"--bind", join(c.binds, ",")});
    argv.push_back(c.image);
  }
  argv.insert(argv.end(), {job.request.atelier, "train", "--config", job_config_path(job.request.run_dir).string(),
                           "--auto-resume"});
  return argv;
}

std::string launch_line(const ResolvedJob& job, const SiteProfile& profile) {
  std::string out;
  for (const auto& w : launch_words(job, profile)) out += (out.empty() ? "" : " ") + (w == "${SLURM_NTASKS}" ? w : shell_word(w));
  return out;
}

std::string template_text(const SiteProfile& profile) {
  if (profile.template_path.empty()) return kSbatchTemplate;
  std::ifstream in(profile.template_path);
  if (!in) throw ConfigError("profile '" + profile.name + "': cannot read template '" + profile.template_path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

long slurm_time_seconds(const std::string& time) {
  static const std::regex minutes("(\\d+)"), mm_ss("(\\d+):(\\d{1,2})"), hh_mm_ss("(\\d+):(\\d{1,2}):(\\d{1,2})"),
      days("(\\d+)-(\\d{1,2})(?::(\\d{1,2}))?(?::(\\d{1,2}))?");
  std::smatch m;
  const auto n = [&m](size_t i) { return m[i].matched ? std::stol(m[i].str()) : 0L; };
  long seconds = -1;
  if (std::regex_match(time, m, minutes)) seconds = n(1) * 60;
  else if (std::regex_match(time, m, mm_ss)) seconds = n(1) * 60 + n(2);
  else if (std::regex_match(time, m, hh_mm_ss)) seconds = n(1) * 3600 + n(2) * 60 + n(3);
  else if (std::regex_match(time, m, days)) seconds = n(1) * 86400 + n(2) * 3600 + n(3) * 60 + n(4);
  if (seconds <= 0)
    throw ConfigError("--time: '" + time +
                      "' is not a positive SLURM time limit (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)");
  return seconds;
}

ResolvedJob resolve_job(const JobRequest& request, const SiteProfile& profile) {
  ResolvedJob job{request, 0};
  auto& r = job.request;
  if (r.partition.empty()) r.partition = profile.partition;
  if (r.time.empty()) r.time = profile.time;
  if (r.time.empty()) throw ConfigError("--time: required (profile '" + profile.name + "' sets no default time)");
  if (r.grace_s < 0) r.grace_s = profile.grace_s;
  if (r.max_requeues < 0) r.max_requeues = profile.max_requeues;
  if (r.atelier.empty()) r.atelier = profile.atelier;
  if (r.ntasks > 0 && r.ntasks_per_node > 0)
    throw ConfigError("--ntasks " + std::to_string(r.ntasks) + " with --ntasks-per-node " +
                      std::to_string(r.ntasks_per_node) + ": give the ranks in all or per node, not both");
  if (r.ntasks > 0 && r.gpus_per_node > 0)
    throw ConfigError("--ntasks with --gpus-per-node " + std::to_string(r.gpus_per_node) +
                      ": atelier runs one task (rank) per GPU, so GPU jobs give --ntasks-per-node (or nothing)");
  if (r.ntasks > 0 && r.ntasks < r.nodes)
    throw ConfigError("--ntasks " + std::to_string(r.ntasks) + " is fewer than --nodes " + std::to_string(r.nodes));
  if (r.ntasks == 0 && r.ntasks_per_node == 0) r.ntasks_per_node = r.gpus_per_node > 0 ? r.gpus_per_node : 1;
  if (r.gpus_per_node > 0 && r.ntasks_per_node != r.gpus_per_node)
    throw ConfigError("--ntasks-per-node " + std::to_string(r.ntasks_per_node) + " with --gpus-per-node " +
                      std::to_string(r.gpus_per_node) + ": atelier runs one task (rank) per GPU");
  job.time_limit_s = slurm_time_seconds(r.time);
  if (r.grace_s >= job.time_limit_s)
    throw ConfigError("--grace " + std::to_string(r.grace_s) + " s must be shorter than --time " + r.time +
                      ": the checkpoint signal would come before the job starts");
  check_plain_path("run directory", r.run_dir);
  check_plain_path("working directory", r.workdir);
  return job;
}

std::string render_template(const std::string& text, const std::map<std::string, std::string>& values) {
  std::string out;
  std::map<std::string, bool> used;
  size_t pos = 0;
  while (true) {
    const auto open = text.find("{{", pos);
    if (open == std::string::npos) break;
    const auto close = text.find("}}", open);
    if (close == std::string::npos) throw std::runtime_error("template: '{{' without '}}' at offset " + std::to_string(open));
    const auto key = text.substr(open + 2, close - open - 2);
    const auto value = values.find(key);
    if (value == values.end()) throw std::runtime_error("template: no value for {{" + key + "}}");
    used[key] = true;
    out += text.substr(pos, open - pos) + value->second;
    pos = close + 2;
  }
  out += text.substr(pos);
  for (const auto& [key, value] : values)
    if (!used.count(key)) throw std::runtime_error("template: it has no {{" + key + "}}");
  return out;
}

std::string render_sbatch_script(const ResolvedJob& job, const SiteProfile& profile) {
  const auto& r = job.request;
  const auto text = template_text(profile);
  try {
    return render_template(text,
                           {{"profile", profile.name},
                            {"job_name", "atelier-" + r.run_name},
                            {"nodes", std::to_string(r.nodes)},
                            {"tasks", r.ntasks > 0 ? "--ntasks=" + std::to_string(r.ntasks)
                                                   : "--ntasks-per-node=" + std::to_string(r.ntasks_per_node)},
                            {"time", r.time},
                            {"grace", std::to_string(r.grace_s)},
                            {"run_dir", r.run_dir.string()},
                            {"workdir", r.workdir.string()},
                            {"sbatch_lines", join(sbatch_lines(job, profile), "\n")},
                            {"setup", join(setup_lines(profile), "\n")},
                            {"max_requeues", std::to_string(r.max_requeues)},
                            {"launch", launch_line(job, profile)}});
  } catch (const std::runtime_error& e) {
    if (profile.template_path.empty()) throw;
    throw ConfigError("profile '" + profile.name + "': " + profile.template_path + ": " + e.what());
  }
}

}  // namespace atelier::launcher
