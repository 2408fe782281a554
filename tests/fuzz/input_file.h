// For fuzz targets whose parser reads a file: the input's bytes written to a
// path of this process's own (the targets run one input at a time).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace atelier::fuzz {

// temp/atelier-fuzz-<pid>-<name>: unique per process, the same for every input.
inline std::filesystem::path scratch_path(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("atelier-fuzz-" + std::to_string(getpid()) + "-" + name);
}

inline void write_bytes(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

}  // namespace atelier::fuzz
