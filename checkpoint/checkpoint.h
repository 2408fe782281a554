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
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

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

struct Manifest {
  int format_version = 1;
  std::string atelier_version;
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t world_size = 1;
  std::string config_hash;
  std::string created;  // UTC, ISO 8601
  std::vector<FileEntry> files;
};

// What the caller knows about the state it saves.
struct CheckpointInfo {
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t world_size = 1;
  std::string config_hash;
};

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

}  // namespace atelier::checkpoint
