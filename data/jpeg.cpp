// TurboJPEG decoding for training (see jpeg.h).
#include "data/jpeg.h"

#include "data/codec.h"
#include "data/pixels.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <turbojpeg.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace atelier::data::detail {
namespace {

struct DestroyHandle {
  void operator()(void* handle) const { tjDestroy(handle); }
};
using Handle = std::unique_ptr<void, DestroyHandle>;

// One TurboJPEG decompressor per thread: a handle is not thread-safe, and
// creating one per image would cost an allocation of libjpeg's state each time.
Handle& thread_decompressor() {
  thread_local Handle handle;
  return handle;
}

tjhandle decompressor(std::string& why) {
  Handle& handle = thread_decompressor();
  if (!handle) handle.reset(tjInitDecompress());
  if (!handle) why = std::string("TurboJPEG cannot start: ") + tjGetErrorStr2(nullptr);
  return handle.get();
}

// Sets `why` to the handle's error and drops the handle. libjpeg-turbo 2.1.5
// leaves a decompressor whose header read failed in a state where the next
// header read fails too ("SOS before SOF" for a good JPEG after a corrupt
// one; tests/data/jpeg_test.cpp has the case), so a failed handle is never
// reused.
void fail_decompressor(tjhandle handle, std::string& why) {
  why = tjGetErrorStr2(handle);
  thread_decompressor().reset();
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

// Adobe's inverted CMYK to RGB exactly as OpenCV's icvCvt_CMYK2BGR_8u_C4C3R
// does it, so a CMYK JPEG keeps the pixels it had under imdecode.
cv::Mat cmyk_to_rgb(const cv::Mat& cmyk) {
  cv::Mat rgb(cmyk.rows, cmyk.cols, CV_8UC3);
  for (int y = 0; y < cmyk.rows; ++y) {
    const uchar* in = cmyk.ptr<uchar>(y);
    uchar* out = rgb.ptr<uchar>(y);
    for (int x = 0; x < cmyk.cols; ++x, in += 4, out += 3) {
      const int k = in[3];
      for (int c = 0; c < 3; ++c) out[c] = static_cast<uchar>(k - ((255 - in[c]) * k >> 8));
    }
  }
  return rgb;
}

// Decodes a JPEG with TurboJPEG at the scale training needs: RGB, or grey for
// a greyscale JPEG. An empty Mat and `why` when it cannot.
cv::Mat turbo_decode(const std::vector<uchar>& bytes, int64_t min_shorter, std::string& why) {
  tjhandle handle = decompressor(why);
  if (!handle) return {};
  const auto size = static_cast<unsigned long>(bytes.size());
  JpegHeader header;
  int subsampling = 0;
  if (tjDecompressHeader3(handle, bytes.data(), size, &header.width, &header.height, &subsampling,
                          &header.colourspace) != 0) {
    fail_decompressor(handle, why);
    return {};
  }
  const JpegScale scale = jpeg_scale_for(header.width, header.height, min_shorter);
  const int width = scale.scaled(header.width), height = scale.scaled(header.height);
  if (static_cast<int64_t>(width) * height > kMaxPixels) {
    why = "too large (" + std::to_string(header.width) + " x " + std::to_string(header.height) + ")";
    return {};
  }
  const bool grey = header.colourspace == TJCS_GRAY;
  // libjpeg turns CMYK and YCCK only into CMYK; we convert that ourselves.
  const bool cmyk = header.colourspace == TJCS_CMYK || header.colourspace == TJCS_YCCK;
  cv::Mat image(height, width, grey ? CV_8UC1 : cmyk ? CV_8UC4 : CV_8UC3);
  // Asking for exactly the scaled size makes TurboJPEG pick `scale`. A
  // warning (say, extraneous bytes before a marker) still yields the whole
  // image, which OpenCV accepted too, so only an error fails.
  if (tjDecompress2(handle, bytes.data(), size, image.data, width, static_cast<int>(image.step[0]), height,
                    grey ? TJPF_GRAY : cmyk ? TJPF_CMYK : TJPF_RGB, 0) != 0 &&
      tjGetErrorCode(handle) != TJERR_WARNING) {
    fail_decompressor(handle, why);
    return {};
  }
  if (cmyk) image = cmyk_to_rgb(image);
  apply_orientation(exif_orientation(bytes), image);
  return image;
}

// A fresh TurboJPEG compressor for each image: libjpeg-turbo 2.1.5 carries
// settings over between compressions on one handle (a progressive image
// makes the next ones progressive too; tests/data/codec_test.cpp has the
// case), and encoding is rare enough (sample grids, reports) not to matter.
// Below quality 96 TurboJPEG would pick libjpeg's fast DCT;
// TJFLAG_ACCURATEDCT keeps the accurate one that OpenCV's encoder used.
Handle compressor() {
  Handle handle(tjInitCompress());
  if (!handle) throw std::runtime_error(std::string("TurboJPEG cannot start: ") + tjGetErrorStr2(nullptr));
  return handle;
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

cv::Mat decode_for_training(const std::vector<uchar>& bytes, int64_t min_shorter, std::string& why) {
  if (!looks_like_jpeg(bytes)) return decode_rgb(bytes, why);
  // TurboJPEG only warns about a file cut short and pads it with grey;
  // decode_rgb refuses such a file, and so must we.
  if (!jpeg_is_complete(bytes)) return decode_rgb(bytes, why);
  return turbo_decode(bytes, min_shorter, why);
}

cv::Mat decode_jpeg(const std::vector<uchar>& bytes, std::string& why) {
  cv::Mat image = turbo_decode(bytes, 0, why);
  if (!image.empty() && image.channels() == 1) cv::cvtColor(image, image, cv::COLOR_GRAY2RGB);
  return image;
}

std::vector<uchar> encode_jpeg(const cv::Mat& image, int quality, bool progressive) {
  if (image.empty() || (image.type() != CV_8UC3 && image.type() != CV_8UC1)) {
    throw std::runtime_error("JPEG encoding needs a non-empty 8-bit RGB or grey image");
  }
  if (quality < 1 || quality > 100) throw std::runtime_error("JPEG quality must be 1..100");
  const Handle owner = compressor();
  tjhandle handle = owner.get();
  const bool grey = image.channels() == 1;
  unsigned char* jpeg = nullptr;  // allocated by TurboJPEG
  unsigned long size = 0;
  const int failed = tjCompress2(handle, image.data, image.cols, static_cast<int>(image.step[0]), image.rows,
                                 grey ? TJPF_GRAY : TJPF_RGB, &jpeg, &size, grey ? TJSAMP_GRAY : TJSAMP_420,
                                 quality, TJFLAG_ACCURATEDCT | (progressive ? TJFLAG_PROGRESSIVE : 0));
  std::vector<uchar> bytes;
  if (!failed) bytes.assign(jpeg, jpeg + size);
  tjFree(jpeg);
  if (failed) throw std::runtime_error(std::string("JPEG encoding failed: ") + tjGetErrorStr2(handle));
  return bytes;
}

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
