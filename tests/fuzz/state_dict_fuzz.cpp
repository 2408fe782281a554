// Fuzz target: a torch.save state dict (`model.vgg_weights`,
// `model.decoder_weights`, `atelier export`'s round trip): the zip format
// (PyTorch's archive reader, then our unpickler) and the legacy one (our
// unpickler and record walker), chosen by the first byte as the loader
// chooses. Only ModelError may come out; every tensor returned lies within
// the bytes of the file.
#include <cstddef>
#include <cstdint>
#include <string>

#include "models/models.h"
#include "tests/fuzz/input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string file = atelier::fuzz::scratch_path("state-dict.pth").string();
  atelier::fuzz::write_bytes(file, data, size);
  try {
    for (const auto& [key, tensor] : atelier::models::load_state_dict(file)) {
      if (static_cast<size_t>(tensor.numel()) * tensor.element_size() > size) __builtin_trap();
      if (!tensor.is_contiguous()) __builtin_trap();
    }
  } catch (const atelier::models::ModelError&) {
  }
  return 0;
}
