// The checkpoint coordinator: every rank writes its part, rank 0 commits.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <spdlog/spdlog.h>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "checkpoint/files.h"

extern char** environ;

namespace atelier::checkpoint {
namespace fs = std::filesystem;
using namespace detail;

namespace {

std::string rank_dir(int rank) { return "rank-" + std::to_string(rank); }
fs::path vote_path(const fs::path& staging, int rank) { return staging / (".vote-" + rank_dir(rank) + ".json"); }

// A rank's vote: its files (sizes and checksums) or why it failed. Written
// to a temporary name and renamed, so rank 0 never reads half a vote.
void write_vote(const fs::path& staging, int rank, const std::vector<FileEntry>& files, const std::string& error) {
  nlohmann::json j = {{"rank", rank}, {"ok", error.empty()}, {"error", error}, {"files", nlohmann::json::array()}};
  for (const auto& f : files) j["files"].push_back({{"name", f.name}, {"size", f.size}, {"crc32c", f.crc32c}});
  const auto tmp = vote_path(staging, rank).string() + ".tmp";
  write_file_synced(tmp, j.dump());
  fs::rename(tmp, vote_path(staging, rank));
}

// Phase 1 on one rank: its own files (and, on rank 0, the shared ones),
// written and fsynced; returns what the manifest will list for them.
std::vector<FileEntry> write_part(const fs::path& staging, int rank, const SaveRequest& request) {
  std::vector<FileEntry> files;
  auto put = [&](const std::string& name, const std::string& bytes) {
    const auto path = staging / name;
    fs::create_directories(path.parent_path());
    // The checksum of a large part is computed beside its write (~30 ms per
    // 256 MiB that would otherwise follow the write; bench_checkpoint).
    auto crc = std::async(bytes.size() >= (size_t{16} << 20) ? std::launch::async : std::launch::deferred,
                          [&bytes] { return crc32c(bytes); });
    write_file_synced(path, bytes);
    files.push_back({fs::path(name).generic_string(), bytes.size(), crc.get()});
  };
  // A file's bytes as given, or made now (no copy of the given ones).
  auto put_file = [&](const std::string& name, const StateFile& f) {
    if (f.produce) put(name, f.produce());
    else put(name, f.bytes);
  };
  for (const auto& f : request.own) put_file(rank_dir(rank) + "/" + f.name, f);
  if (rank == 0)
    for (const auto& f : request.shared) put_file(f.name, f);
  if (!request.own.empty()) sync_path(staging / rank_dir(rank), true);
  fs::create_directories(staging);  // a rank with nothing of its own still votes
  sync_path(staging, true);
  return files;
}

}  // namespace

struct CheckpointCoordinator::State {
  fs::path dir;                                // checkpoints/
  std::shared_ptr<comm::Communicator> comm;
  CoordinatorOptions options;
  std::string job_tag;                         // agreed by all ranks: this job's staging names

  bool in_flight = false;  // a save was started and not finish()ed (the same on every rank)
  int64_t step = 0;        // the step of the save in flight
  std::chrono::steady_clock::time_point started;  // when it was requested
  std::thread writer;
  std::mutex mutex;
  std::condition_variable part_written;
  bool part_done = false;          // this rank's part is on disk (or failed)
  std::string part_error;          // why this rank's part failed
  std::atomic<bool> writer_finished{false};
  std::atomic<bool> abort{false};  // another rank failed: rank 0 stops waiting for votes
  SaveOutcome outcome;             // rank 0: the commit's result
  std::optional<SaveOutcome> last;  // the most recent finished save
  int64_t last_committed = -1;
  std::vector<pid_t> hooks;        // hook commands still running

  fs::path staging(int64_t s) const { return dir / (kStagingPrefix + (kStepPrefix + std::to_string(s)) + "-" + job_tag); }

  void write(const SaveRequest& request);
  void commit(const SaveRequest& request, std::vector<FileEntry> files);
  std::vector<FileEntry> collect_votes(const fs::path& staging_dir);
  void run_hook(const fs::path& committed);
  void reap_hooks(bool block);
};

// Runs on the writer thread of every rank.
void CheckpointCoordinator::State::write(const SaveRequest& request) {
  const int rank = comm->rank();
  const auto staging_dir = staging(request.info.step);
  std::vector<FileEntry> files;
  std::string error;
  try {
    files = write_part(staging_dir, rank, request);
    write_vote(staging_dir, rank, files, "");
  } catch (const std::exception& e) {
    error = std::string("rank ") + std::to_string(rank) + ": " + e.what();
    try {
      write_vote(staging_dir, rank, {}, error);
    } catch (const std::exception&) {
      // The vote could not be written either (a full disk): finish()'s
      // collective tells rank 0 instead.
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    part_done = true;
    part_error = error;
  }
  part_written.notify_all();
  if (rank == 0) {
    if (error.empty()) {
      commit(request, std::move(files));
    } else {
      std::error_code ignored;
      fs::remove_all(staging_dir, ignored);
      outcome = {request.info.step, false, {}, error};
    }
    if (!outcome.committed) spdlog::error("checkpoint of step {} failed, previous checkpoints kept: {}", request.info.step, outcome.error);
  }
  writer_finished = true;
}

// Rank 0 waits for every other rank's vote; their files join the manifest.
std::vector<FileEntry> CheckpointCoordinator::State::collect_votes(const fs::path& staging_dir) {
  std::vector<FileEntry> files;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(options.timeout_s);
  for (int r = 1; r < comm->world_size(); ++r) {
    auto wait = std::chrono::milliseconds(1);
    while (!fs::exists(vote_path(staging_dir, r))) {
      if (abort) throw CheckpointError("another rank failed to write its part (see its log)");
      if (std::chrono::steady_clock::now() > deadline)
        throw CheckpointError("rank " + std::to_string(r) + " did not report its part within " +
                              std::to_string(options.timeout_s) + " s (checkpoint.timeout_s)");
      std::this_thread::sleep_for(wait);
      wait = std::min(wait * 2, std::chrono::milliseconds(50));
    }
    std::ifstream in(vote_path(staging_dir, r));
    const auto vote = nlohmann::json::parse(in);
    if (!vote.at("ok").get<bool>()) throw CheckpointError(vote.at("error").get<std::string>());
    for (const auto& f : vote.at("files")) {
      FileEntry e{f.at("name").get<std::string>(), f.at("size").get<uint64_t>(), f.at("crc32c").get<uint32_t>()};
      // The vote is only trusted as far as the disk agrees with it.
      if (!fs::is_regular_file(staging_dir / e.name) || fs::file_size(staging_dir / e.name) != e.size)
        throw CheckpointError("rank " + std::to_string(r) + "'s file " + e.name + " is missing or has the wrong size");
      files.push_back(e);
    }
  }
  return files;
}

// Phase 2, rank 0 only.
void CheckpointCoordinator::State::commit(const SaveRequest& request, std::vector<FileEntry> files) {
  const auto& info = request.info;
  const auto staging_dir = staging(info.step);
  const auto final_dir = dir / (kStepPrefix + std::to_string(info.step));
  try {
    const auto others = collect_votes(staging_dir);
    files.insert(files.end(), others.begin(), others.end());
    std::sort(files.begin(), files.end(), [](const FileEntry& a, const FileEntry& b) { return a.name < b.name; });
    for (int r = 0; r < comm->world_size(); ++r) fs::remove(vote_path(staging_dir, r));
    write_manifest(staging_dir, manifest_of(info, files));
    sync_path(staging_dir, true);
    if (fs::exists(final_dir)) fs::remove_all(final_dir);  // the same step saved again is replaced whole
    fs::rename(staging_dir, final_dir);
    sync_path(dir, true);
    point_latest_to(dir, final_dir);
    outcome = {info.step, true, final_dir, ""};
    for (const auto& f : files) outcome.bytes += f.size;
    outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    spdlog::info("checkpoint {} ({:.1f} MiB in {:.2f} s)", final_dir.string(), static_cast<double>(outcome.bytes) / (1 << 20),
                 outcome.seconds);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(staging_dir, ignored);
    outcome = {info.step, false, {}, e.what()};
    return;
  }
  try {
    retain(dir, options.keep, options.keep_every);
  } catch (const std::exception& e) {
    spdlog::warn("checkpoint retention failed (the new checkpoint is intact): {}", e.what());
  }
  if (!options.hook.empty() && (options.hook_every_steps <= 0 || info.step % options.hook_every_steps == 0))
    run_hook(final_dir);
}

// The hook runs beside training (an explainer job may take minutes); its
// exit status is logged when it is reaped.
void CheckpointCoordinator::State::run_hook(const fs::path& committed) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.push_back("ATELIER_CHECKPOINT=" + fs::absolute(committed).string());
  env_strings.push_back("ATELIER_STEP=" + std::to_string(outcome.step));
  std::vector<char*> env;
  for (auto& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  std::string sh = "/bin/sh", dash_c = "-c", command = options.hook;
  char* argv[] = {sh.data(), dash_c.data(), command.data(), nullptr};
  pid_t pid = 0;
  if (const int rc = ::posix_spawn(&pid, "/bin/sh", nullptr, nullptr, argv, env.data()); rc != 0) {
    spdlog::error("checkpoint.hook could not start: {}", std::strerror(rc));
    return;
  }
  spdlog::info("checkpoint.hook started for {} (pid {})", committed.string(), pid);
  std::lock_guard<std::mutex> lock(mutex);
  hooks.push_back(pid);
}

void CheckpointCoordinator::State::reap_hooks(bool block) {
  std::lock_guard<std::mutex> lock(mutex);
  if (block && !hooks.empty()) spdlog::info("waiting for {} checkpoint.hook command(s)", hooks.size());
  for (auto it = hooks.begin(); it != hooks.end();) {
    int status = 0;
    const pid_t done = ::waitpid(*it, &status, block ? 0 : WNOHANG);
    if (done == 0) {
      ++it;
      continue;
    }
    if (done > 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
      spdlog::warn("checkpoint.hook (pid {}) failed with {}", *it,
                   WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status)) : std::string("a signal"));
    it = hooks.erase(it);
  }
}

CheckpointCoordinator::CheckpointCoordinator(fs::path checkpoints_dir, std::shared_ptr<comm::Communicator> comm,
                                             CoordinatorOptions options)
    : state_(std::make_unique<State>()) {
  state_->dir = std::move(checkpoints_dir);
  state_->comm = std::move(comm);
  state_->options = std::move(options);
  auto tag = torch::zeros({1}, torch::kInt64);
  if (state_->comm->rank() == 0) {
    fs::create_directories(state_->dir);
    // Staging directories of a job that died are debris; none of this job's
    // exists yet (the broadcast below orders this before any save).
    for (const auto& entry : fs::directory_iterator(state_->dir))
      if (entry.path().filename().string().rfind(kStagingPrefix, 0) == 0) fs::remove_all(entry.path());
    tag.fill_(static_cast<int64_t>(std::random_device{}() & 0x7fffffff));
  }
  state_->comm->broadcast(tag, 0);
  state_->job_tag = std::to_string(tag.item<int64_t>());
}

CheckpointCoordinator::~CheckpointCoordinator() {
  // Without the collective of finish(): a rank on its error path must not
  // wait for peers. The writer thread itself needs no peer but rank 0's
  // vote wait, which `abort` ends.
  state_->abort = true;
  if (state_->writer.joinable()) state_->writer.join();
  state_->reap_hooks(/*block=*/true);
}

bool CheckpointCoordinator::save(SaveRequest request, bool required) {
  auto& s = *state_;
  if (!required && s.in_flight && s.options.when_busy == WhenBusy::Skip) {
    auto busy = torch::tensor({s.writer_finished ? int64_t{0} : int64_t{1}});
    s.comm->all_reduce(busy, comm::ReduceOp::Sum);
    if (busy.item<int64_t>() > 0) {
      if (s.comm->rank() == 0)
        spdlog::warn("checkpoint of step {} skipped: step {} is still being written (checkpoint.when_busy=skip)",
                     request.info.step, s.step);
      return false;
    }
  }
  finish();
  s.reap_hooks(/*block=*/false);
  s.in_flight = true;
  s.step = request.info.step;
  s.part_done = false;
  s.part_error.clear();
  s.writer_finished = false;
  s.abort = false;
  s.outcome = {};
  s.started = std::chrono::steady_clock::now();
  s.writer = std::thread([&s, request = std::move(request)] { s.write(request); });
  if (!s.options.async) finish();
  return true;
}

std::optional<SaveOutcome> CheckpointCoordinator::finish() {
  auto& s = *state_;
  if (!s.in_flight) return s.last;
  std::string own_error;
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    s.part_written.wait(lock, [&s] { return s.part_done; });
    own_error = s.part_error;
  }
  // A rank that could not even write its vote is known here, not by rank 0's
  // polling: stop rank 0 from waiting for it.
  auto failed = torch::tensor({own_error.empty() ? int64_t{0} : int64_t{1}});
  s.comm->all_reduce(failed, comm::ReduceOp::Sum);
  if (failed.item<int64_t>() > 0) s.abort = true;
  s.writer.join();
  auto committed = torch::tensor({s.outcome.committed ? int64_t{1} : int64_t{0}});
  s.comm->broadcast(committed, 0);
  SaveOutcome result{s.step, committed.item<int64_t>() == 1, {}, {}};
  if (result.committed) {
    result.path = s.dir / (kStepPrefix + std::to_string(s.step));
    result.bytes = s.outcome.bytes;
    result.seconds = s.outcome.seconds;
    s.last_committed = s.step;
  } else {
    result.error = s.comm->rank() == 0 ? s.outcome.error
                   : own_error.empty() ? "rank 0 did not commit it (see rank 0's log)"
                                       : own_error;
  }
  s.in_flight = false;
  s.last = result;
  return result;
}

int64_t CheckpointCoordinator::last_committed_step() const { return state_->last_committed; }

}  // namespace atelier::checkpoint
