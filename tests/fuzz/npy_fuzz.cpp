// Fuzz target: a .npy file (models/npy.cpp reads the vendored SqueezeNet
// weights, and any folder `model.squeezenet_dir` names). Only ModelError may
// come out, and a tensor that comes back holds exactly what its header says.
#include <cstddef>
#include <cstdint>
#include <string>

#include "models/models.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto tensor = atelier::models::parse_npy(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    if (static_cast<size_t>(tensor.numel()) * tensor.element_size() > size) __builtin_trap();  // bytes from nowhere
    if (!tensor.is_contiguous()) __builtin_trap();
  } catch (const atelier::models::ModelError&) {
  }
  return 0;
}
