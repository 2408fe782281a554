// TurboJPEG decoding for training (see jpeg.h).
#include "data/jpeg.h"

#include "data/pixels.h"

#include <opencv2/core.hpp>
#include <spdlog/spdlog.h>
#include <turbojpeg.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>

namespace atelier::data::detail {
namespace {

// Decoded images above this many pixels are refused, as OpenCV refuses them
// (CV_IO_MAX_IMAGE_PIXELS): a forged header must not make us allocate gigabytes.
constexpr int64_t kMaxPixels = int64_t{1} << 30;

// One TurboJPEG decompressor per thread: a handle is not thread-safe, and
// creating one per image would cost an allocation of libjpeg's state each time.
tjhandle decompressor(std::string& why) {
  struct Destroy {
    void operator()(void* handle) const { tjDestroy(handle); }
  };
  thread_local std::unique_ptr<void, Destroy> handle(tjInitDecompress());
  if (!handle) why = std::string("TurboJPEG cannot start: ") + tjGetErrorStr2(nullptr);
  return handle.get();
}

// Images that fell back to OpenCV: counted every time, warned about once each.
class Fallbacks {
 public:
  void add(const std::string& name, const std::string& reason) {
    ++count_;
    std::lock_guard<std::mutex> lock(mutex_);
    if (warned_.insert(name).second) {
      spdlog::warn("{}: TurboJPEG cannot decode it ({}); decoding with OpenCV at full size", name, reason);
    }
  }
  int64_t count() const { return count_; }

 private:
  std::atomic<int64_t> count_{0};
  std::mutex mutex_;              // guards warned_
  std::set<std::string> warned_;  // names already warned about
};

Fallbacks& fallbacks() {
  static Fallbacks instance;
  return instance;
}

uint32_t read_u16(const uchar* p, bool big_endian) {
  return big_endian ? (uint32_t{p[0]} << 8) | p[1] : (uint32_t{p[1]} << 8) | p[0];
}

uint32_t read_u32(const uchar* p, bool big_endian) {
  return big_endian ? (read_u16(p, true) << 16) | read_u16(p + 2, true)
                    : (read_u16(p + 2, false) << 16) | read_u16(p, false);
}

// The orientation tag of the first IFD of a TIFF block (the body of an EXIF
// APP1 segment); 1 when absent or malformed. Every read is bounds-checked:
// the block comes from an untrusted file.
int tiff_orientation(const uchar* tiff, size_t size) {
  if (size < 8) return 1;
  const bool big_endian = tiff[0] == 'M' && tiff[1] == 'M';
  if (!big_endian && !(tiff[0] == 'I' && tiff[1] == 'I')) return 1;
  if (read_u16(tiff + 2, big_endian) != 42) return 1;
  const size_t ifd = read_u32(tiff + 4, big_endian);
  if (ifd > size - 2) return 1;
  const size_t entries = read_u16(tiff + ifd, big_endian);
  for (size_t i = 0; i < entries; ++i) {
    const size_t entry = ifd + 2 + 12 * i;
    if (entry + 12 > size) return 1;
    if (read_u16(tiff + entry, big_endian) != 0x0112) continue;
    // Type SHORT (3), one value, stored in the first two bytes of the value field.
    if (read_u16(tiff + entry + 2, big_endian) != 3) return 1;
    const uint32_t value = read_u16(tiff + entry + 8, big_endian);
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

// The same flips and transposes as OpenCV's ApplyExifOrientation, so a
// rotated photograph trains upright whichever decoder read it.
void apply_orientation(int orientation, cv::Mat& image) {
  if (orientation >= 5) cv::transpose(image, image);
  switch (orientation) {
    case 2: case 6: cv::flip(image, image, 1); break;   // mirror; rotate 90 clockwise
    case 3: case 7: cv::flip(image, image, -1); break;  // rotate 180; transverse
    case 4: case 8: cv::flip(image, image, 0); break;   // flip vertically; rotate 90 counter-clockwise
    default: break;                                      // 1: upright; 5: transpose only
  }
}

// What TurboJPEG's header says about a JPEG.
struct JpegHeader {
  int width = 0;
  int height = 0;
  int colourspace = TJCS_YCbCr;
};

// Decodes a JPEG with TurboJPEG at the scale training needs. An empty Mat and
// `why` when TurboJPEG cannot (the caller falls back to OpenCV).
cv::Mat turbo_decode(const std::vector<uchar>& bytes, int64_t min_shorter, std::string& why) {
  tjhandle handle = decompressor(why);
  if (!handle) return {};
  const auto size = static_cast<unsigned long>(bytes.size());
  JpegHeader header;
  int subsampling = 0;
  if (tjDecompressHeader3(handle, bytes.data(), size, &header.width, &header.height, &subsampling,
                          &header.colourspace) != 0) {
    why = tjGetErrorStr2(handle);
    return {};
  }
  // libjpeg converts CMYK and YCCK only to CMYK; OpenCV converts those itself.
  if (header.colourspace == TJCS_CMYK || header.colourspace == TJCS_YCCK) {
    why = "a CMYK JPEG";
    return {};
  }
  const JpegScale scale = jpeg_scale_for(header.width, header.height, min_shorter);
  const int width = scale.scaled(header.width), height = scale.scaled(header.height);
  if (static_cast<int64_t>(width) * height > kMaxPixels) {
    why = "too large (" + std::to_string(header.width) + " x " + std::to_string(header.height) + ")";
    return {};
  }
  const bool grey = header.colourspace == TJCS_GRAY;
  cv::Mat image(height, width, grey ? CV_8UC1 : CV_8UC3);
  // Asking for exactly the scaled size makes TurboJPEG pick `scale`. A
  // warning (say, extraneous bytes before a marker) still yields the whole
  // image, which OpenCV would have accepted too, so only an error fails.
  if (tjDecompress2(handle, bytes.data(), size, image.data, width, static_cast<int>(image.step[0]), height,
                    grey ? TJPF_GRAY : TJPF_RGB, 0) != 0 &&
      tjGetErrorCode(handle) != TJERR_WARNING) {
    why = tjGetErrorStr2(handle);
    return {};
  }
  apply_orientation(exif_orientation(bytes), image);
  return image;
}

}  // namespace

// Only 1/2, 1/4 and 1/8 decode faster than the full size. libjpeg-turbo has
// SIMD code for the full-size IDCT, upsampling and colour conversion, and for
// the 1/2 and 1/4 IDCTs (1/8 keeps only the DC term), but its 3/8, 5/8, 3/4
// and 7/8 IDCTs are plain C. Measured here (2.1.5, one thread, best of 15), a
// 640x480 4:2:0 photograph decodes in 0.63 ms at 1/1, 0.49 at 1/2, 0.43 at
// 1/4, but 0.56 at 3/8, 0.85 at 5/8, 0.98 at 3/4 and 1.27 at 7/8; decode
// plus bilinear resize of the 59 opencv-doc photographs to a shorter side of
// 286 took 55.4 ms choosing among 1/N and 1/1, 62.9 ms choosing the smallest
// M/8. So an M/8 factor never beats 1/1 or a 1/N that also covers the target.
JpegScale jpeg_scale_for(int width, int height, int64_t min_shorter) {
  JpegScale best;  // 1/1
  int count = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&count);
  if (factors == nullptr || min_shorter <= 0) return best;
  const int shorter = std::min(width, height);
  for (int i = 0; i < count; ++i) {
    const JpegScale candidate{factors[i].num, factors[i].denom};
    const bool fast = candidate.num == 1 && candidate.denom > 1;  // 1/2, 1/4, 1/8
    if (fast && candidate.denom > best.denom && candidate.scaled(shorter) >= min_shorter) best = candidate;
  }
  return best;
}

cv::Mat decode_for_training(const std::vector<uchar>& bytes, int64_t min_shorter, const std::string& name,
                            std::string& why) {
  if (!looks_like_jpeg(bytes)) return decode_rgb(bytes, why);
  // TurboJPEG, like libjpeg behind OpenCV, only warns about a file cut short
  // and pads it with grey; decode_rgb refuses such a file, and so must we.
  if (!jpeg_is_complete(bytes)) return decode_rgb(bytes, why);
  std::string turbo_why;
  cv::Mat image = turbo_decode(bytes, min_shorter, turbo_why);
  if (!image.empty()) return image;
  fallbacks().add(name, turbo_why);
  image = decode_rgb(bytes, why);
  if (image.empty()) why = "TurboJPEG: " + turbo_why + "; OpenCV: " + why;
  return image;
}

int64_t jpeg_fallbacks() { return fallbacks().count(); }

int exif_orientation(const std::vector<uchar>& bytes) {
  // Walk the marker segments after SOI (FF D8) up to the first scan; EXIF is
  // an APP1 (FF E1) segment whose body starts with "Exif\0\0".
  size_t at = 2;
  while (at + 4 <= bytes.size() && bytes[at] == 0xFF) {
    const uchar marker = bytes[at + 1];
    if (marker == 0xFF) {  // fill byte before a marker
      ++at;
      continue;
    }
    if (marker == 0xDA || marker == 0xD9) break;  // start of scan, end of image: no more headers
    const size_t length = read_u16(&bytes[at + 2], true);
    if (length < 2 || at + 2 + length > bytes.size()) break;
    const uchar* body = &bytes[at + 4];
    if (marker == 0xE1 && length >= 8 && std::memcmp(body, "Exif\0\0", 6) == 0) {
      return tiff_orientation(body + 6, length - 8);
    }
    at += 2 + length;
  }
  return 1;
}

}  // namespace atelier::data::detail
