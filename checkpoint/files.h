// Durable file operations shared by save() and the coordinator. Private to
// checkpoint/.
#pragma once

#include <boost/crc.hpp>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "checkpoint/checkpoint.h"

namespace atelier::checkpoint::detail {

inline constexpr const char* kManifest = "manifest.json";
inline constexpr const char* kLatest = "LATEST";
inline constexpr const char* kStepPrefix = "step-";
inline constexpr const char* kStagingPrefix = ".staging-";

// fsync a file or directory: a rename is only durable once the data and the
// directory entry both reached the disk.
void sync_path(const std::filesystem::path& path, bool directory);

// Writes `bytes` to `path` and fsyncs it; CheckpointError naming the path
// and the system's reason (ENOSPC, EFBIG, ...) on failure.
void write_file_synced(const std::filesystem::path& path, const std::string& bytes);

// CRC-32C (Castagnoli) over any number of update() calls. Uses the SSE4.2
// crc32 instruction when the CPU has it (~10x Boost.CRC's table, which is
// the fallback and the reference in the tests): checkpoints of GBs are
// checksummed at disk speed.
class Crc32c {
 public:
  explicit Crc32c(bool use_hardware = hardware_available()) : hardware_(use_hardware && hardware_available()) {}
  void update(const char* data, size_t size);
  uint32_t value() const;
  static bool hardware_available();

 private:
  bool hardware_;
  uint32_t state_ = 0xFFFFFFFFu;  // the instruction's register (reflected, not inverted)
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> table_;
};

// CRC-32C of bytes in memory (file_crc32c's checksum).
uint32_t crc32c(const std::string& bytes);

// The manifest of a checkpoint of `info` holding `files`, created now.
Manifest manifest_of(const CheckpointInfo& info, std::vector<FileEntry> files);

// manifest.json of `manifest`, written and fsynced into `dir`.
void write_manifest(const std::filesystem::path& dir, const Manifest& manifest);

// LATEST -> target's name, replaced atomically.
void point_latest_to(const std::filesystem::path& checkpoints_dir, const std::filesystem::path& target);

std::string utc_now();

}  // namespace atelier::checkpoint::detail
