// Fuzz target: a torch.save state dict (`model.vgg_weights`,
// `model.decoder_weights`, `atelier export`'s round trip): the zip format
// (PyTorch's archive reader, then our unpickler) and the legacy one (our
// unpickler and record walker), chosen by the first byte as the loader
// chooses. Only ModelError may come out; every tensor returned lies within
// the bytes of the file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "models/models.h"

namespace {

const std::string& file() {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("atelier-fuzz-state-dict-" + std::to_string(getpid()) + ".pth"))
          .string();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::ofstream(file(), std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    for (const auto& [key, tensor] : atelier::models::load_state_dict(file())) {
      if (static_cast<size_t>(tensor.numel()) * tensor.element_size() > size) __builtin_trap();
      if (!tensor.is_contiguous()) __builtin_trap();
    }
  } catch (const atelier::models::ModelError&) {
  }
  return 0;
}
