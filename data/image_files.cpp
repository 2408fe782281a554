// Image file bytes in and out of tensors (see data.h); the codecs are in
// codec.h.
#include "data/codec.h"
#include "data/data.h"
#include "data/pixels.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <system_error>

namespace atelier::data {
namespace {

std::string lower_extension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

// A Mat over the pixels of a CPU uint8 [H, W, 3|1] tensor (made contiguous
// into `keep`, which must outlive the Mat).
cv::Mat pixels_of(const torch::Tensor& hwc, torch::Tensor& keep) {
  if (!hwc.defined() || hwc.scalar_type() != torch::kUInt8 || hwc.dim() != 3 ||
      (hwc.size(2) != 3 && hwc.size(2) != 1) || hwc.size(0) < 1 || hwc.size(1) < 1 ||
      hwc.size(0) > detail::kMaxPixels || hwc.size(1) > detail::kMaxPixels ||
      hwc.size(0) * hwc.size(1) > detail::kMaxPixels) {
    throw DataError("image encoding expects uint8 [H, W, 3] (RGB) or [H, W, 1] (grey) pixels");
  }
  keep = hwc.to(torch::kCPU).contiguous();
  return cv::Mat(static_cast<int>(keep.size(0)), static_cast<int>(keep.size(1)),
                 keep.size(2) == 3 ? CV_8UC3 : CV_8UC1, keep.data_ptr());
}

template <typename Encode>
std::vector<uint8_t> encode_with(const torch::Tensor& hwc, Encode encode) {
  torch::Tensor keep;
  const cv::Mat image = pixels_of(hwc, keep);
  try {
    return encode(image);
  } catch (const std::runtime_error& e) {
    throw DataError(e.what());
  }
}

}  // namespace

torch::Tensor decode_image_bytes(const std::vector<uint8_t>& bytes, const std::string& name) {
  std::string why;
  const cv::Mat rgb = detail::decode_rgb(bytes, why);
  if (rgb.empty()) throw DataError("cannot decode image '" + name + "': " + why);
  torch::Tensor out = torch::empty({rgb.rows, rgb.cols, 3}, torch::kUInt8);
  // copyTo into a header of the same size and type writes in place, so the
  // tensor owns the pixels once the Mat is gone.
  cv::Mat view(rgb.rows, rgb.cols, CV_8UC3, out.data_ptr());
  rgb.copyTo(view);
  return out;
}

std::vector<uint8_t> encode_png(const torch::Tensor& hwc) {
  return encode_with(hwc, [](const cv::Mat& image) { return detail::encode_png(image); });
}

std::vector<uint8_t> encode_jpeg(const torch::Tensor& hwc, int quality, bool progressive) {
  return encode_with(hwc, [&](const cv::Mat& image) { return detail::encode_jpeg(image, quality, progressive); });
}

void write_image_file(const std::string& path, const torch::Tensor& hwc) {
  const std::string ext = lower_extension(path);
  std::vector<uint8_t> bytes;
  try {
    if (ext == ".jpg" || ext == ".jpeg") {
      bytes = encode_jpeg(hwc, 95);
    } else if (ext == ".png") {
      bytes = encode_png(hwc);
    } else {
      throw DataError("unknown extension '" + ext + "' (use .png, .jpg or .jpeg)");
    }
  } catch (const DataError& e) {
    throw DataError("cannot write image '" + path + "': " + e.what());
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);  // no truncated image under the real name
    throw DataError("cannot write image '" + path + "'");
  }
}

}  // namespace atelier::data
