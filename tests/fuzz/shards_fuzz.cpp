// Fuzz target: a shard folder from outside (`atelier serve-data` opens
// whatever folder it is given). The input is split into index.json and one
// shard file: a u32 little-endian length of the index, the index, then the
// bytes of shard-00000.bin. ShardReader opens the folder and every record is
// read; only DataError may come out.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "data/data.h"
#include "tests/fuzz/input_file.h"

namespace {

const std::filesystem::path& folder() {
  static const std::filesystem::path dir = [] {
    auto d = atelier::fuzz::scratch_path("shards");
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t index_size = 0;
  std::memcpy(&index_size, data, 4);
  index_size = static_cast<uint32_t>(std::min<size_t>(index_size, size - 4));
  atelier::fuzz::write_bytes(folder() / "index.json", data + 4, index_size);
  atelier::fuzz::write_bytes(folder() / "shard-00000.bin", data + 4 + index_size, size - 4 - index_size);
  try {
    const atelier::data::ShardReader reader(folder().string());
    std::vector<unsigned char> bytes;
    std::string why;
    for (int64_t i = 0; i < reader.size(); ++i) reader.read(i, bytes, why);
  } catch (const atelier::data::DataError&) {
  }
  return 0;
}
