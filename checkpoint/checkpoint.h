// checkpoint/ — checkpoint directories that appear only when complete.
//
// A checkpoint is `checkpoints/step-<N>/`: the caller's files plus
// `manifest.json` (step, epoch, world size, config hash, atelier version, and
// every file's size and CRC-32C). It is written under a temporary name,
// fsynced, then renamed; `checkpoints/LATEST` (replaced atomically) names the
// newest complete one. A crash at any point leaves either the old or the new
// checkpoint, never a half-written one under a real name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/comm.h"

namespace atelier::checkpoint {

// A checkpoint that cannot be written, read or trusted; names the path.
struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct FileEntry {
  std::string name;   // relative to the checkpoint directory
  uint64_t size = 0;  // bytes
  uint32_t crc32c = 0;
};

// Steps after `from_step` (up to the next span's) were trained by
// `world_size` ranks at `global_batch` images per optimiser step (0 where a
// checkpoint written before the history existed does not say).
struct WorldSpan {
  int64_t from_step = 0;
  int64_t world_size = 1;
  int64_t global_batch = 0;
  bool operator==(const WorldSpan& o) const {
    return from_step == o.from_step && world_size == o.world_size && global_batch == o.global_batch;
  }
};

struct Manifest {
  int format_version = 1;
  std::string atelier_version;
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t world_size = 1;
  std::string config_hash;
  std::string created;  // UTC, ISO 8601
  std::vector<FileEntry> files;
  // Every world size the run was trained with, oldest first; the last span's
  // world_size is `world_size`. Manifests without the key read as one span.
  std::vector<WorldSpan> world_history;
  // The loss network the model was trained with, in words ("SqueezeNet 1.1
  // (ImageNet)", "random VGG (width 32, seed 19)"); empty in older manifests.
  std::string loss_network;
};

// What the caller knows about the state it saves.
struct CheckpointInfo {
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t world_size = 1;
  std::string config_hash;
  std::vector<WorldSpan> world_history = {};  // empty: one span of world_size from step 0
  std::string loss_network = "";             // recorded in the manifest when not empty
};

// "2 ranks (steps 1-40), 1 rank (41-60)": a history in words, up to `step`.
std::string describe_world_history(const std::vector<WorldSpan>& history, int64_t step);

// Writes checkpoints_dir/step-<step>/: `write_files(staging)` writes the
// state into an empty staging directory; every file is then fsynced and
// checksummed, manifest.json written, the directory renamed into place, the
// parent fsynced and LATEST updated. On any error the staging directory is
// removed and the previous checkpoints are untouched. Returns the new path.
std::filesystem::path save(const std::filesystem::path& checkpoints_dir, const CheckpointInfo& info,
                           const std::function<void(const std::filesystem::path&)>& write_files);

// Reads manifest.json of a checkpoint directory.
Manifest read_manifest(const std::filesystem::path& checkpoint_dir);

// How deeply verify() looks: sizes only (a directory listing, instant), or
// sizes and CRC-32C of every byte.
enum class Check { Sizes, Checksums };

// Compares every file of the manifest with the disk; throws CheckpointError
// naming the first file that differs or is missing.
void verify(const std::filesystem::path& checkpoint_dir, Check check = Check::Checksums);

// What a user may name as "the checkpoint": a step-<N> directory itself, a
// LATEST file (the directory it names), or a run or checkpoints/ directory
// (its newest verified checkpoint). Throws CheckpointError naming the path.
std::filesystem::path resolve(const std::filesystem::path& path);

// verify() as a yes/no answer.
bool verifies(const std::filesystem::path& checkpoint_dir, Check check = Check::Checksums);

// The step-<N> directories under checkpoints_dir, newest first.
std::vector<std::filesystem::path> list(const std::filesystem::path& checkpoints_dir);

// The directory LATEST names, if LATEST exists and names a step-<N> directory.
std::optional<std::filesystem::path> named_latest(const std::filesystem::path& checkpoints_dir);

// The newest checkpoint that verifies: LATEST first, then the other step-*
// directories newest first (a corrupt one is skipped with a warning).
// std::nullopt when there is none.
std::optional<std::filesystem::path> latest(const std::filesystem::path& checkpoints_dir);

// Deletes checkpoints the policy does not keep, and leftover staging
// directories. Kept: the one LATEST names, the newest `keep`, every step that
// is a multiple of `keep_every` (when > 0), and — should all of those be
// damaged — the newest one that still verifies.
void retain(const std::filesystem::path& checkpoints_dir, int64_t keep, int64_t keep_every = 0);

// CRC-32C (Castagnoli) of a file's bytes.
uint32_t file_crc32c(const std::filesystem::path& path);

// Checkpoint format and version of this build, recorded in every manifest.
std::string atelier_version();

// ---------------------------------------------------------------------------
// The coordinator: one checkpoint written by every rank of a job.
//
// Two-phase commit over a shared run directory. Phase 1: every rank writes
// its own state under `rank-<r>/` of a staging directory whose name the
// ranks agreed on, fsyncs it and reports each file's size and CRC-32C in a
// small vote file; rank 0 also writes the replicated state once. Phase 2:
// rank 0, once every rank voted yes, checks the parts are all there, writes
// manifest.json listing every file of every rank, renames the directory to
// step-<N>, fsyncs the parent, moves LATEST and applies retention. A failed
// part (any rank) aborts the checkpoint: the staging directory goes, the
// previous checkpoints stay as they were.

// One file of a checkpoint: its bytes in host memory, or a way to make them.
struct StateFile {
  std::string name;   // relative path inside the checkpoint (or rank-<r>/)
  std::string bytes;  // the file's content, unless `produce` is set
  // Makes the content on the writer thread (an asynchronous save then costs
  // the caller only what it captured, e.g. copies of tensors).
  std::function<std::string()> produce;
};

struct SaveRequest {
  CheckpointInfo info;
  std::vector<StateFile> shared;  // replicated state (weights, optimisers): written by rank 0 only
  std::vector<StateFile> own;     // this rank's state (RNG, data cursor): written under rank-<r>/
};

// A save requested while the previous one is still being written.
enum class WhenBusy { Wait, Skip };

struct CoordinatorOptions {
  bool async = true;                   // write on a background thread; the step pays only for the snapshot
  WhenBusy when_busy = WhenBusy::Wait;  // at most one save in flight: wait for it, or skip the new one
  int64_t keep = 3;                    // retention (see retain())
  int64_t keep_every = 0;
  std::string hook;                    // shell command run by rank 0 after each commit ("" = none)
  double timeout_s = 300;              // how long rank 0 waits for the other ranks' parts
  int64_t hook_every_steps = 0;        // run the hook only for steps that are multiples of this; 0 = every one
};

// What became of one save.
struct SaveOutcome {
  int64_t step = 0;
  bool committed = false;
  std::filesystem::path path;  // step-<N> when committed
  std::string error;           // why not, when not
  // Rank 0, when committed: the bytes of every part and the seconds from
  // save() until LATEST pointed at it durably (retention and the hook come
  // after). 0 on other ranks.
  uint64_t bytes = 0;
  double seconds = 0;
};

class CheckpointCoordinator {
 public:
  // Collective: the ranks agree on a name for this job's staging directories.
  CheckpointCoordinator(std::filesystem::path checkpoints_dir, std::shared_ptr<comm::Communicator> comm,
                        CoordinatorOptions options);
  // Waits for a save still in flight and for hook commands; never throws.
  ~CheckpointCoordinator();
  CheckpointCoordinator(const CheckpointCoordinator&) = delete;
  CheckpointCoordinator& operator=(const CheckpointCoordinator&) = delete;

  // Collective (every rank, same step). Starts writing `request`; with
  // async the write goes on in the background. When a save is still in
  // flight, waits for it (its outcome is logged) or, with WhenBusy::Skip,
  // returns false without saving. A `required` save (the one that ends a
  // run or answers a stop signal) always waits and is never skipped.
  bool save(SaveRequest request, bool required = false);

  // Collective. Waits until the save in flight is committed or aborted on
  // every rank; std::nullopt when none was in flight.
  std::optional<SaveOutcome> finish();

  // The newest step this coordinator committed, or -1.
  int64_t last_committed_step() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---------------------------------------------------------------------------
// Stopping on a signal (what SLURM's --signal and preemption send).

// Exit code of a job that stopped on SIGUSR1/SIGTERM after writing its
// checkpoint: "temporary failure, try again" (sysexits' EX_TEMPFAIL). The
// launcher requeues on it; `--resume` continues where it stopped.
constexpr int kExitStopped = 75;

// While alive, SIGUSR1 and SIGTERM only set a flag (a second signal during
// the final save changes nothing); the previous handlers come back after.
// Guards nest (the launcher holds one around the whole run, training its
// own): they share the flag, so an inner guard keeps a signal the outer one
// caught before it, and ending it gives the outer handler back.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first signal this process received, or 0.
  int received() const;
  // Collective, at a step boundary: the signal any rank received (the
  // lowest-numbered rank's), or 0, so that every rank stops at the same step.
  int agree(comm::Communicator& comm) const;

 private:
  struct Previous;  // the handlers this guard replaced
  std::unique_ptr<Previous> previous_;
};

}  // namespace atelier::checkpoint
