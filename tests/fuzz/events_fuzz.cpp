// Fuzz target: a TensorBoard event file (the reader behind the tests and
// tools that read a run's events back; its files may come from anywhere).
// Only std::runtime_error naming the file may come out.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "tests/fuzz/input_file.h"
#include "trainer/event_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string file = atelier::fuzz::scratch_path("events.tfevents").string();
  atelier::fuzz::write_bytes(file, data, size);
  try {
    for (const auto& event : atelier::trainer::read_events(file))
      for (const auto& value : event.values)
        if (value.image && value.image->encoded.size() > size) __builtin_trap();
  } catch (const std::runtime_error&) {
  }
  return 0;
}
