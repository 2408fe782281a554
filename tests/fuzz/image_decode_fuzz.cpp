// Fuzz target: image bytes from outside (files, shard records) through both
// decode paths, TurboJPEG and libpng: full-size decoding and the scaled
// training decode. Any result is fine; a crash, a sanitizer report or a
// huge allocation is not.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/jpeg.h"
#include "data/pixels.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uchar> bytes(data, data + size);
  std::string why;
  const cv::Mat full = atelier::data::detail::decode_rgb(bytes, why);
  if (full.empty() == why.empty()) __builtin_trap();  // a result or a reason, never both or neither
  why.clear();
  atelier::data::detail::decode_for_training(bytes, 64, why);
  return 0;
}
