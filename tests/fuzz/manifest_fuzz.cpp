// Fuzz target: a checkpoint's manifest.json (checkpoints are copied between
// machines and clusters; `atelier checkpoints verify` and every resume read
// them). The input is the manifest of a checkpoint directory holding one
// 3-byte file, weights.bin. read_manifest and verify may only throw
// CheckpointError, and no file a manifest lets through may lie outside its
// checkpoint directory.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "checkpoint/checkpoint.h"
#include "tests/fuzz/input_file.h"

namespace fs = std::filesystem;
namespace checkpoint = atelier::checkpoint;

namespace {

const fs::path& folder() {
  static const fs::path dir = [] {
    auto d = atelier::fuzz::scratch_path("manifest") / "step-1";
    fs::create_directories(d);
    std::ofstream(d / "weights.bin", std::ios::binary) << "abc";
    return d;
  }();
  return dir;
}

bool inside(const std::string& name) {
  const fs::path p = fs::path(name).lexically_normal();
  return !name.empty() && p.is_relative() && !p.empty() && *p.begin() != ".." && p != ".";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  atelier::fuzz::write_bytes(folder() / "manifest.json", data, size);
  try {
    const auto manifest = checkpoint::read_manifest(folder());
    for (const auto& f : manifest.files)
      if (!inside(f.name)) __builtin_trap();  // verify and resume would open a file outside the checkpoint
    if (manifest.world_size < 1 || manifest.step < 0 || manifest.world_history.empty()) __builtin_trap();
    for (const auto& span : manifest.world_history)
      if (span.world_size < 1 || span.from_step < 0 || span.global_batch < 0) __builtin_trap();
    checkpoint::describe_world_history(manifest.world_history, manifest.step);
    checkpoint::verify(folder(), checkpoint::Check::Checksums);
  } catch (const checkpoint::CheckpointError&) {
  }
  return 0;
}
