// Listing, decoding and augmenting single images (see data.h).
#include "data/data.h"
#include "data/codec.h"
#include "data/pixels.h"
#include "data/seeding.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <system_error>

namespace atelier::data {
namespace fs = std::filesystem;

namespace {

constexpr const char* kImageExtensions = ".jpg .jpeg .png";

// Largest side an output may have: keeps sizes within OpenCV's int and away
// from absurd allocations.
constexpr int64_t kMaxSide = 1 << 16;

bool has_image_extension(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// Appends every image below `folder`. Directory symlinks are not followed:
// libstdc++ does not detect symlink cycles, and one would never terminate.
void add_folder(const fs::path& folder, std::vector<std::string>& images) {
  std::error_code error;
  fs::recursive_directory_iterator it(folder, fs::directory_options::skip_permission_denied, error);
  for (; !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
    std::error_code ignored;  // a dangling symlink is simply not an image
    if (it->is_regular_file(ignored) && has_image_extension(it->path())) {
      images.push_back(it->path().lexically_normal().string());
    }
  }
  if (error) {
    throw DataError("cannot list image folder '" + folder.string() + "': " + error.message());
  }
}

// RGB CV_8UC3, or greyscale CV_8UC1 (decode_for_training's greyscale JPEGs).
void check_rgb_image(const cv::Mat& rgb) {
  if (rgb.empty() || (rgb.type() != CV_8UC3 && rgb.type() != CV_8UC1)) {
    throw DataError("expected a non-empty 8-bit RGB or greyscale image");
  }
}

// Where the green and blue bytes of a pixel lie relative to its red one:
// 1 and 2 in RGB, 0 and 0 in greyscale (R = G = B).
struct ChannelOffsets {
  explicit ChannelOffsets(const cv::Mat& image)
      : step(image.channels()), green(step == 3 ? 1 : 0), blue(step == 3 ? 2 : 0) {}
  int step;   // bytes per pixel
  int green;
  int blue;
};

detail::Crop random_crop(cv::Size image, const AugmentOptions& options, uint64_t seed) {
  std::mt19937_64 generator(detail::splitmix64(seed));
  detail::Crop crop;
  crop.size = static_cast<int>(options.crop_size);
  crop.y = static_cast<int>(detail::uniform_below(generator, image.height - crop.size + 1));
  crop.x = static_cast<int>(detail::uniform_below(generator, image.width - crop.size + 1));
  // Drawn even when flipping is off, so turning it off keeps the crops.
  const bool heads = (generator() >> 63) != 0;
  crop.flip = options.flip && heads;
  return crop;
}

// x / 127.5 - 1 for every byte: exact at 0 and 255, and one table shared by
// every path that turns pixels into floats.
const std::array<float, 256>& unit_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[static_cast<size_t>(v)] = static_cast<float>(v) / 127.5f - 1.0f;
    return t;
  }();
  return table;
}

// Writes the crop as interleaved uint8 RGB, mirroring on the way when asked.
void write_bytes_hwc(const cv::Mat& rgb, const detail::Crop& crop, uint8_t* out) {
  const ChannelOffsets c(rgb);
  const int s = crop.size;
  for (int y = 0; y < s; ++y) {
    const uchar* row = rgb.ptr<uchar>(crop.y + y);
    uint8_t* o = out + static_cast<size_t>(y) * static_cast<size_t>(s) * 3;
    for (int x = 0; x < s; ++x) {
      const uchar* pixel = row + c.step * (crop.x + (crop.flip ? s - 1 - x : x));
      o[3 * x] = pixel[0];
      o[3 * x + 1] = pixel[c.green];
      o[3 * x + 2] = pixel[c.blue];
    }
  }
}

// Writes the crop as planar float RGB in [-1, 1] (x / 127.5 - 1, exact at
// 0 and 255), mirroring on the way when asked.
void write_normalized_chw(const cv::Mat& rgb, const detail::Crop& crop, float* out) {
  const std::array<float, 256>& kUnit = unit_table();
  const ChannelOffsets c(rgb);
  const int s = crop.size;
  const size_t plane = static_cast<size_t>(s) * static_cast<size_t>(s);
  for (int y = 0; y < s; ++y) {
    const uchar* row = rgb.ptr<uchar>(crop.y + y);
    float* r = out + static_cast<size_t>(y) * static_cast<size_t>(s);
    for (int x = 0; x < s; ++x) {
      const uchar* pixel = row + c.step * (crop.x + (crop.flip ? s - 1 - x : x));
      r[x] = kUnit[pixel[0]];
      r[plane + static_cast<size_t>(x)] = kUnit[pixel[c.green]];
      r[2 * plane + static_cast<size_t>(x)] = kUnit[pixel[c.blue]];
    }
  }
}

}  // namespace

namespace detail {

bool looks_like_jpeg(const std::vector<uchar>& bytes) {
  return bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
}

bool read_bytes(const std::string& path, std::vector<uchar>& bytes, std::string& why) {
  std::error_code error;
  if (!fs::is_regular_file(path, error)) {
    why = fs::exists(path, error) ? "not a regular file" : "no such file";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = "cannot open file";
    return false;
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  bytes.resize(static_cast<size_t>(std::max<std::streamoff>(size, 0)));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!in) {
    why = "read error";
    return false;
  }
  if (bytes.empty()) {
    why = "empty file";
    return false;
  }
  return true;
}

// A JPEG cut short still "decodes": libjpeg only warns on stderr and fills
// the missing rows with grey, so a decoder returns a plausible image that would
// silently poison training. A complete file has an end-of-image marker
// (FF D9) after its last start-of-scan marker (FF DA). Inside entropy-coded
// data FF is always followed by 00 or a restart marker, so neither marker
// appears there by accident; trailing bytes after the EOI stay allowed.
// memchr jumps from FF to FF (about one byte in 256 of entropy-coded data):
// a byte-by-byte loop cost ~5% of a training sample's decode.
bool jpeg_is_complete(const std::vector<uchar>& bytes) {
  bool in_scan = false;       // an FF DA was seen
  bool ended = false;         // an FF D9 was seen after the last FF DA
  const uchar* at = bytes.data();
  const uchar* const last = bytes.data() + bytes.size();  // one past the end
  while (last - at >= 2) {
    at = static_cast<const uchar*>(std::memchr(at, 0xFF, static_cast<size_t>(last - at - 1)));
    if (at == nullptr) break;
    if (at[1] == 0xDA) {
      in_scan = true;
      ended = false;
    } else if (at[1] == 0xD9 && in_scan) {
      ended = true;
    }
    ++at;
  }
  return ended;
}

cv::Mat read_rgb(const std::string& path, std::string& why) {
  std::vector<uchar> bytes;
  if (!read_bytes(path, bytes, why)) return {};
  return decode_rgb(bytes, why);
}

cv::Mat decode_rgb(const std::vector<uchar>& bytes, std::string& why) {
  if (bytes.empty()) {
    why = "empty file";
    return {};
  }
  if (looks_like_jpeg(bytes)) {
    if (!jpeg_is_complete(bytes)) {
      why = "truncated JPEG (no end-of-image marker after the last scan)";
      return {};
    }
    return decode_jpeg(bytes, why);
  }
  if (looks_like_png(bytes)) return decode_png(bytes, why);
  if (bytes.size() >= 2 && bytes[0] == 'B' && bytes[1] == 'M') {
    why = "a BMP image: atelier reads JPEG and PNG only (convert it, e.g. with `convert in.bmp out.png`)";
  } else {
    why = std::string("not a JPEG or PNG image (") + kImageExtensions + ")";
  }
  return {};
}

cv::Mat resize_shorter_side(const cv::Mat& rgb, int64_t size, Shrink shrink) {
  const int shorter = std::min(rgb.rows, rgb.cols);
  if (shorter == size) return rgb;
  const double scale = static_cast<double>(size) / shorter;
  const auto scaled = [&](int side) {
    return static_cast<int>(std::max<int64_t>(size, std::llround(side * scale)));
  };
  cv::Mat out;
  // INTER_AREA averages every source pixel a target pixel covers, so shrinking
  // does not alias; when growing it degenerates to blocky nearest-neighbour,
  // where bilinear looks better. Below a 2x reduction bilinear still reads
  // every source pixel, and OpenCV's fixed-point bilinear is ~5x faster here
  // than its area filter at a ratio that is not a whole number.
  const bool area = shrink == Shrink::kArea ? size < shorter : 2 * size <= shorter;
  cv::resize(rgb, out, cv::Size(scaled(rgb.cols), scaled(rgb.rows)), 0, 0, area ? cv::INTER_AREA : cv::INTER_LINEAR);
  return out;
}

void check_pinning(bool pin_memory) {
  if (!pin_memory) return;
  if (!torch::cuda::is_available())
    throw DataError(std::string("pinned batches (pin_memory) need a GPU: ") +
                    (torch::hasCUDA() ? "LibTorch sees no GPU" : "this LibTorch build has no CUDA"));
}

torch::Tensor batch_tensor(int64_t count, int64_t side, bool pin_memory) {
  return torch::empty({count, 3, side, side}, torch::TensorOptions().dtype(torch::kFloat).pinned_memory(pin_memory));
}

void check_augment_options(const AugmentOptions& options) {
  if (options.crop_size < 1 || options.load_size < options.crop_size || options.load_size > kMaxSide) {
    throw DataError("augment options need 1 <= crop_size <= load_size <= " + std::to_string(kMaxSide) +
                    " (got crop_size " + std::to_string(options.crop_size) + ", load_size " +
                    std::to_string(options.load_size) + ")");
  }
}

void augment_into(const cv::Mat& rgb, const AugmentOptions& options, uint64_t seed, float* out) {
  check_rgb_image(rgb);
  check_augment_options(options);
  const cv::Mat resized = resize_shorter_side(rgb, options.load_size, Shrink::kTraining);
  write_normalized_chw(resized, random_crop(resized.size(), options, seed), out);
}

void augment_into_bytes(const cv::Mat& rgb, const AugmentOptions& options, uint64_t seed, uint8_t* out) {
  check_rgb_image(rgb);
  check_augment_options(options);
  const cv::Mat resized = resize_shorter_side(rgb, options.load_size, Shrink::kTraining);
  write_bytes_hwc(resized, random_crop(resized.size(), options, seed), out);
}

void bytes_to_unit_chw(const uint8_t* hwc, int64_t side, float* out) {
  const std::array<float, 256>& kUnit = unit_table();
  const size_t plane = static_cast<size_t>(side) * static_cast<size_t>(side);
  for (size_t i = 0; i < plane; ++i) {
    out[i] = kUnit[hwc[3 * i]];
    out[plane + i] = kUnit[hwc[3 * i + 1]];
    out[2 * plane + i] = kUnit[hwc[3 * i + 2]];
  }
}

void check_centre_size(int64_t size) {
  if (size < 1 || size > kMaxSide) {
    throw DataError("load_centered size must be in [1, " + std::to_string(kMaxSide) + "] (got " +
                    std::to_string(size) + ")");
  }
}

void centre_into(const cv::Mat& rgb, int64_t size, float* out) {
  check_rgb_image(rgb);
  check_centre_size(size);
  const cv::Mat resized = resize_shorter_side(rgb, size);
  Crop crop;
  crop.size = static_cast<int>(size);
  crop.x = (resized.cols - crop.size) / 2;
  crop.y = (resized.rows - crop.size) / 2;
  write_normalized_chw(resized, crop, out);
}

}  // namespace detail

std::vector<std::string> list_images(const std::vector<std::string>& sources) {
  if (sources.empty()) throw DataError("no image folder or file given");
  std::vector<std::string> images;
  for (const std::string& source : sources) {
    std::error_code error;
    const fs::file_status status = fs::status(source, error);
    if (!fs::exists(status)) {
      throw DataError("image folder '" + source + "' does not exist");
    }
    if (fs::is_directory(status)) {
      const size_t before = images.size();
      add_folder(source, images);
      if (images.size() == before) {
        throw DataError("image folder '" + source + "' contains no images (" + kImageExtensions + ")");
      }
    } else if (has_image_extension(source)) {
      images.push_back(fs::path(source).lexically_normal().string());
    } else {
      throw DataError("image file '" + source + "' is not an image (" + kImageExtensions + ")");
    }
  }
  std::sort(images.begin(), images.end());
  images.erase(std::unique(images.begin(), images.end()), images.end());
  return images;
}

torch::Tensor decode_image(const std::string& path) {
  std::vector<uchar> bytes;
  std::string why;
  if (!detail::read_bytes(path, bytes, why)) throw DataError("cannot decode image '" + path + "': " + why);
  return decode_image_bytes(bytes, path);
}

torch::Tensor augment(const torch::Tensor& rgb, const AugmentOptions& options, uint64_t seed) {
  if (!rgb.defined() || !rgb.device().is_cpu() || rgb.scalar_type() != torch::kUInt8 || rgb.dim() != 3 ||
      rgb.size(2) != 3 || rgb.size(0) < 1 || rgb.size(1) < 1) {
    throw DataError("augment expects a CPU uint8 [H, W, 3] image tensor");
  }
  detail::check_augment_options(options);
  const torch::Tensor pixels = rgb.contiguous();  // keeps the Mat's memory alive
  const cv::Mat view(static_cast<int>(pixels.size(0)), static_cast<int>(pixels.size(1)), CV_8UC3,
                     pixels.data_ptr());
  torch::Tensor out = torch::empty({3, options.crop_size, options.crop_size}, torch::kFloat);
  detail::augment_into(view, options, seed, out.data_ptr<float>());
  return out;
}

torch::Tensor load_centered(const std::string& path, int64_t size) {
  detail::check_centre_size(size);
  std::string why;
  const cv::Mat rgb = detail::read_rgb(path, why);
  if (rgb.empty()) throw DataError("cannot decode image '" + path + "': " + why);
  torch::Tensor out = torch::empty({3, size, size}, torch::kFloat);
  detail::centre_into(rgb, size, out.data_ptr<float>());
  return out;
}

}  // namespace atelier::data
