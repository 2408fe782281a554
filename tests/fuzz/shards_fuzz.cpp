// Fuzz target: a shard folder from outside (`atelier serve-data` opens
// whatever folder it is given). The input is split into index.json and one
// shard file: a u32 little-endian length of the index, the index, then the
// bytes of shard-00000.bin. ShardReader opens the folder and every record is
// read; only DataError may come out.
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/data.h"

namespace {

const std::filesystem::path& folder() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("atelier-fuzz-shards-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

void write(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t index_size = 0;
  std::memcpy(&index_size, data, 4);
  index_size = static_cast<uint32_t>(std::min<size_t>(index_size, size - 4));
  write(folder() / "index.json", data + 4, index_size);
  write(folder() / "shard-00000.bin", data + 4 + index_size, size - 4 - index_size);
  try {
    const atelier::data::ShardReader reader(folder().string());
    std::vector<unsigned char> bytes;
    std::string why;
    for (int64_t i = 0; i < reader.size(); ++i) reader.read(i, bytes, why);
  } catch (const atelier::data::DataError&) {
  }
  return 0;
}
