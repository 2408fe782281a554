// Durable file operations shared by save() and the coordinator. Private to
// checkpoint/.
#pragma once

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

// CRC-32C of bytes in memory (file_crc32c's checksum).
uint32_t crc32c(const std::string& bytes);

// manifest.json of `manifest`, written and fsynced into `dir`.
void write_manifest(const std::filesystem::path& dir, const Manifest& manifest);

// LATEST -> target's name, replaced atomically.
void point_latest_to(const std::filesystem::path& checkpoints_dir, const std::filesystem::path& target);

std::string utc_now();

}  // namespace atelier::checkpoint::detail
