// PNG through libpng (see codec.h).
//
// libpng reports errors by longjmp to the setjmp of the caller. Nothing with
// a destructor may live in a frame that longjmp crosses, so the two functions
// that call setjmp (read_header, read_rows) hold only plain pointers and
// numbers; the cv::Mat and the row table are made by their caller, between
// the two calls.
#include "data/codec.h"

#include <png.h>

#include <cstring>
#include <stdexcept>

namespace atelier::data::detail {
namespace {

constexpr size_t kSignatureSize = 8;

// The bytes libpng reads from, and where its error message goes.
struct PngRead {
  const uchar* data = nullptr;
  size_t size = 0;
  size_t at = 0;
  char message[256] = "";
  png_structp png = nullptr;
  png_infop info = nullptr;
};

void read_bytes_fn(png_structp png, png_bytep out, png_size_t length) {
  auto* read = static_cast<PngRead*>(png_get_io_ptr(png));
  if (length > read->size - read->at) png_error(png, "truncated PNG (the file ends inside a chunk)");
  std::memcpy(out, read->data + read->at, length);
  read->at += length;
}

void error_fn(png_structp png, png_const_charp message) {
  auto* read = static_cast<PngRead*>(png_get_error_ptr(png));
  std::strncpy(read->message, message, sizeof read->message - 1);
  png_longjmp(png, 1);
}

void warning_fn(png_structp, png_const_charp) {}  // a warning still yields the image

// Reads the header and sets the transforms that make every PNG 8-bit RGB as
// imdecode(IMREAD_COLOR) does. False with read.message set on error.
bool read_header(PngRead& read, png_uint_32& width, png_uint_32& height) {
  if (setjmp(png_jmpbuf(read.png))) return false;
  png_set_read_fn(read.png, &read, read_bytes_fn);
  png_read_info(read.png, read.info);
  width = png_get_image_width(read.png, read.info);
  height = png_get_image_height(read.png, read.info);
  const int depth = png_get_bit_depth(read.png, read.info);
  const int colour = png_get_color_type(read.png, read.info);
  if (depth == 16) png_set_strip_16(read.png);
  png_set_strip_alpha(read.png);
  if (colour == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(read.png);
  if ((colour & PNG_COLOR_MASK_COLOR) == 0) {
    if (depth < 8) png_set_expand_gray_1_2_4_to_8(read.png);
    png_set_gray_to_rgb(read.png);
  }
  png_set_interlace_handling(read.png);
  png_read_update_info(read.png, read.info);
  return true;
}

bool read_rows(PngRead& read, png_bytepp rows) {
  if (setjmp(png_jmpbuf(read.png))) return false;
  png_read_image(read.png, rows);
  png_read_end(read.png, nullptr);
  return true;
}

}  // namespace

bool looks_like_png(const std::vector<uchar>& bytes) {
  return bytes.size() >= kSignatureSize && png_sig_cmp(bytes.data(), 0, kSignatureSize) == 0;
}

cv::Mat decode_png(const std::vector<uchar>& bytes, std::string& why) {
  PngRead read;
  read.data = bytes.data();
  read.size = bytes.size();
  read.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &read, error_fn, warning_fn);
  if (read.png != nullptr) read.info = png_create_info_struct(read.png);
  if (read.info == nullptr) {
    png_destroy_read_struct(&read.png, nullptr, nullptr);
    why = "libpng cannot start";
    return {};
  }
  struct Destroy {
    PngRead& read;
    ~Destroy() { png_destroy_read_struct(&read.png, &read.info, nullptr); }
  } destroy{read};

  // The size, from the IHDR chunk that must come first, before libpng reads
  // further: a forged header is refused without reading or allocating more.
  if (bytes.size() >= 24 && std::memcmp(&bytes[12], "IHDR", 4) == 0) {
    const auto u32 = [&](size_t at) {
      return uint32_t{bytes[at]} << 24 | uint32_t{bytes[at + 1]} << 16 | uint32_t{bytes[at + 2]} << 8 | bytes[at + 3];
    };
    if (uint64_t{u32(16)} * u32(20) > static_cast<uint64_t>(kMaxPixels)) {  // both up to 2^32 - 1
      why = "too large (" + std::to_string(u32(16)) + " x " + std::to_string(u32(20)) + ")";
      return {};
    }
  }
  png_uint_32 width = 0, height = 0;
  if (!read_header(read, width, height)) {
    why = read.message;
    return {};
  }
  if (uint64_t{width} * height > static_cast<uint64_t>(kMaxPixels)) {
    why = "too large (" + std::to_string(width) + " x " + std::to_string(height) + ")";
    return {};
  }
  if (png_get_rowbytes(read.png, read.info) != size_t{width} * 3) {
    why = "unexpected PNG row layout after conversion to 8-bit RGB";
    return {};
  }
  cv::Mat image(static_cast<int>(height), static_cast<int>(width), CV_8UC3);
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = image.ptr<uchar>(static_cast<int>(y));
  if (!read_rows(read, rows.data())) {
    why = read.message;
    return {};
  }
  return image;
}

std::vector<uchar> encode_png(const cv::Mat& image) {
  if (image.empty() || (image.type() != CV_8UC3 && image.type() != CV_8UC1)) {
    throw std::runtime_error("PNG encoding needs a non-empty 8-bit RGB or grey image");
  }
  png_image header;
  std::memset(&header, 0, sizeof header);
  header.version = PNG_IMAGE_VERSION;
  header.width = static_cast<png_uint_32>(image.cols);
  header.height = static_cast<png_uint_32>(image.rows);
  header.format = image.channels() == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  const auto stride = static_cast<png_int_32>(image.step[0]);
  png_alloc_size_t size = 0;
  // The first call only measures; the second writes.
  if (!png_image_write_to_memory(&header, nullptr, &size, 0, image.data, stride, nullptr)) {
    throw std::runtime_error(std::string("PNG encoding failed: ") + header.message);
  }
  std::vector<uchar> bytes(size);
  if (!png_image_write_to_memory(&header, bytes.data(), &size, 0, image.data, stride, nullptr)) {
    throw std::runtime_error(std::string("PNG encoding failed: ") + header.message);
  }
  bytes.resize(size);
  return bytes;
}

}  // namespace atelier::data::detail
