// The SLURM commands atelier runs (sbatch, scontrol, sacct) and the files a
// submitted job leaves in its run directory.
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "launcher/slurm_job.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

// Reads both pipes until the child closes them (poll, so that neither fills).
void drain(int out_fd, int err_fd, std::string& out, std::string& err) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* sinks[2] = {&out, &err};
  int open_count = 2;
  char buf[4096];
  while (open_count > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_count;
      }
    }
  }
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

// "Key=Value Key=Value ..." (scontrol show job -o) as a map.
std::map<std::string, std::string> key_values(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream words(line);
  for (std::string word; words >> word;) {
    const auto eq = word.find('=');
    if (eq != std::string::npos) out.emplace(word.substr(0, eq), word.substr(eq + 1));
  }
  return out;
}

std::optional<JobState> from_scontrol(const std::string& job_id) {
  const auto shown = run_program({"scontrol", "show", "job", "-o", job_id});
  if (shown.status != 0) return std::nullopt;
  auto kv = key_values(shown.stdout_text);
  if (!kv.count("JobState")) return std::nullopt;
  JobState s;
  s.state = kv["JobState"];
  s.reason = kv["Reason"];
  s.exit_code = kv["ExitCode"];
  s.run_time = kv["RunTime"];
  s.time_limit = kv["TimeLimit"];
  s.nodes = kv["NodeList"];
  s.restarts = kv.count("Restarts") ? std::atoi(kv["Restarts"].c_str()) : 0;
  s.source = "scontrol";
  return s;
}

std::optional<JobState> from_sacct(const std::string& job_id) {
  const auto acct = run_program({"sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode,Elapsed,Timelimit,NodeList"});
  if (acct.status != 0) return std::nullopt;
  std::istringstream lines(acct.stdout_text);
  std::string line, last;
  while (std::getline(lines, line))
    if (!trim(line).empty()) last = line;  // a requeued job has one line per start; the last is current
  if (last.empty()) return std::nullopt;
  std::vector<std::string> f;
  std::istringstream fields(last);
  for (std::string field; std::getline(fields, field, '|');) f.push_back(field);
  if (f.size() < 5) return std::nullopt;
  JobState s;
  s.state = f[0].substr(0, f[0].find(' '));  // "CANCELLED by 0"
  s.exit_code = f[1];
  s.run_time = f[2];
  s.time_limit = f[3];
  s.nodes = f[4];
  s.source = "sacct";
  return s;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

ProgramOutput run_program(const std::vector<std::string>& argv) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  }
  const pid_t child = ::fork();
  if (child < 0) throw std::runtime_error(argv[0] + ": fork failed: " + std::strerror(errno));
  if (child == 0) {
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::dup2(err_pipe[1], STDERR_FILENO);
    std::vector<char*> c_argv;
    for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
    c_argv.push_back(nullptr);
    ::execvp(c_argv[0], c_argv.data());
    const std::string msg = argv[0] + ": cannot run: " + std::strerror(errno) + "\n";
    if (::write(STDERR_FILENO, msg.data(), msg.size()) < 0) _exit(127);
    _exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ProgramOutput result;
  std::string err;
  drain(out_pipe[0], err_pipe[0], result.stdout_text, err);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0)
    if (errno != EINTR) throw std::runtime_error(argv[0] + ": waitpid failed: " + std::strerror(errno));
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.stderr_text = trim(err);
  return result;
}

std::string submit_script(const fs::path& script) {
  const auto sbatch = run_program({"sbatch", "--parsable", script.string()});
  if (sbatch.status != 0)
    throw std::runtime_error("sbatch " + script.string() + " failed (exit code " + std::to_string(sbatch.status) +
                             "): " + sbatch.stderr_text);
  // --parsable prints "<id>" or "<id>;<cluster>".
  const auto id = trim(sbatch.stdout_text.substr(0, sbatch.stdout_text.find(';')));
  if (id.empty() || id.find_first_not_of("0123456789_") != std::string::npos)
    throw std::runtime_error("sbatch printed no job id: '" + trim(sbatch.stdout_text) + "'");
  return id;
}

std::optional<JobState> query_job(const std::string& job_id) {
  if (auto s = from_scontrol(job_id)) return s;
  return from_sacct(job_id);
}

bool job_is_active(const std::string& state) {
  for (const char* done : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                           "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"})
    if (state == done) return false;
  return true;
}

fs::path slurm_dir(const fs::path& run_dir) { return run_dir / "slurm"; }
fs::path job_config_path(const fs::path& run_dir) { return slurm_dir(run_dir) / "config.yaml"; }
fs::path job_script_path(const fs::path& run_dir) { return slurm_dir(run_dir) / "job.sbatch"; }
fs::path job_ids_path(const fs::path& run_dir) { return slurm_dir(run_dir) / "jobs"; }

std::optional<std::string> recorded_job_id(const fs::path& run_dir) {
  std::ifstream in(job_ids_path(run_dir));
  std::string line, last;
  while (std::getline(in, line))
    if (!trim(line).empty()) last = line;
  if (last.empty()) return std::nullopt;
  return last.substr(0, last.find(' '));
}

void record_job_id(const fs::path& run_dir, const std::string& job_id) {
  std::ofstream out(job_ids_path(run_dir), std::ios::app);
  out << job_id << " " << utc_now() << "\n";
  if (!out) throw std::runtime_error("cannot record job " + job_id + " in " + job_ids_path(run_dir).string());
}

}  // namespace atelier::launcher
