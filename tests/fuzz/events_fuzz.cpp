// Fuzz target: a TensorBoard event file (the reader behind the tests and
// tools that read a run's events back; its files may come from anywhere).
// Only std::runtime_error naming the file may come out.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "trainer/event_file.h"

namespace {

const std::string& file() {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("atelier-fuzz-events-" + std::to_string(getpid()) + ".tfevents"))
          .string();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::ofstream(file(), std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    for (const auto& event : atelier::trainer::read_events(file()))
      for (const auto& value : event.values)
        if (value.image && value.image->encoded.size() > size) __builtin_trap();
  } catch (const std::runtime_error&) {
  }
  return 0;
}
