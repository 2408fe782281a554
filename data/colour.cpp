// Whole-image I/O and colour preservation for inference (see data.h).
#include "data/data.h"
#include "data/pixels.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <sstream>

namespace atelier::data {
namespace {

constexpr int64_t kMaxSide = 1 << 16;  // as in images.cpp: OpenCV sizes are int
constexpr int kLevels = 256;           // histogram bins: the levels of an 8-bit image

std::string shape_string(const torch::Tensor& tensor) {
  std::ostringstream out;
  out << tensor.sizes();
  return out.str();
}

// Throws unless `image` is a float [3, H, W] CPU tensor; `what` names it.
void check_chw(const torch::Tensor& image, const std::string& what) {
  if (!image.defined() || image.dim() != 3 || image.size(0) != 3 || image.size(1) < 1 || image.size(2) < 1 ||
      !image.is_floating_point() || !image.device().is_cpu()) {
    throw DataError(what + ": expected a float CPU image tensor [3, H, W], got " +
                    (image.defined() ? shape_string(image) : std::string("an undefined tensor")));
  }
}

// RGB uint8 Mat -> float [3, H, W] in [-1, 1].
torch::Tensor from_rgb8(const cv::Mat& rgb) {
  const cv::Mat packed = rgb.isContinuous() ? rgb : rgb.clone();
  // from_blob borrows the Mat's pixels; the float conversion copies them out.
  return torch::from_blob(packed.data, {packed.rows, packed.cols, 3}, torch::kUInt8)
      .permute({2, 0, 1})
      .to(torch::kFloat)
      .div(127.5)
      .sub(1.0)
      .contiguous();
}

// float [3, H, W] in [-1, 1] -> RGB float Mat in [0, 1] (the range OpenCV's
// float colour conversions expect). The Mat owns its pixels.
cv::Mat to_rgb01(const torch::Tensor& image) {
  const auto hwc = ((image.to(torch::kFloat) + 1.0) * 0.5).permute({1, 2, 0}).contiguous();
  return cv::Mat(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_32FC3, hwc.data_ptr<float>())
      .clone();
}

torch::Tensor from_rgb01(const cv::Mat& rgb) {
  const auto hwc = torch::from_blob(const_cast<uchar*>(rgb.ptr()), {rgb.rows, rgb.cols, 3}, torch::kFloat);
  return (hwc.clamp(0.0, 1.0) * 2.0 - 1.0).permute({2, 0, 1}).contiguous();
}

// The 8-bit level of a value in [-1, 1]; NaN and out-of-range values clamp.
int level_of(float value) {
  if (!(value > -1.0f)) return 0;
  if (value >= 1.0f) return kLevels - 1;
  return static_cast<int>(std::lround((value + 1.0f) * 127.5f));
}

std::array<int64_t, kLevels> cumulative_histogram(const float* values, int64_t count) {
  std::array<int64_t, kLevels> cdf{};
  for (int64_t i = 0; i < count; ++i) ++cdf[static_cast<size_t>(level_of(values[i]))];
  for (size_t k = 1; k < cdf.size(); ++k) cdf[k] += cdf[k - 1];
  return cdf;
}

// For each source level, the smallest reference level whose CDF reaches the
// source level's CDF. Compared as cross products of integer counts: float
// CDFs would make an image matched to itself drift by rounding.
std::array<int, kLevels> matching_levels(const std::array<int64_t, kLevels>& source,
                                         const std::array<int64_t, kLevels>& reference) {
  using wide = unsigned __int128;  // counts reach 2^32 each; their product does not fit 64 bits
  const wide source_total = static_cast<wide>(source.back());
  const wide reference_total = static_cast<wide>(reference.back());
  std::array<int, kLevels> map{};
  int r = 0;
  for (int s = 0; s < kLevels; ++s) {
    const wide needed = static_cast<wide>(source[static_cast<size_t>(s)]) * reference_total;
    while (r < kLevels - 1 && static_cast<wide>(reference[static_cast<size_t>(r)]) * source_total < needed) ++r;
    map[static_cast<size_t>(s)] = r;
  }
  return map;
}

}  // namespace

torch::Tensor load_image(const std::string& path, int64_t shorter_side) {
  if (shorter_side < 0 || shorter_side > kMaxSide) {
    throw DataError("image size for '" + path + "' must be in [0, " + std::to_string(kMaxSide) + "] (got " +
                    std::to_string(shorter_side) + ")");
  }
  std::string why;
  cv::Mat rgb = detail::read_rgb(path, why);
  if (rgb.empty()) throw DataError("cannot decode image '" + path + "': " + why);
  if (shorter_side > 0) rgb = detail::resize_shorter_side(rgb, shorter_side);
  return from_rgb8(rgb);
}

void save_image(const std::string& path, const torch::Tensor& image) {
  check_chw(image, "save_image '" + path + "'");
  const auto hwc = ((image.detach().to(torch::kFloat).clamp(-1.0, 1.0) + 1.0) * 127.5)
                       .round()
                       .to(torch::kUInt8)
                       .permute({1, 2, 0})
                       .contiguous();
  write_image_file(path, hwc);
}

torch::Tensor transfer_luminance(const torch::Tensor& stylised, const torch::Tensor& content) {
  check_chw(stylised, "transfer_luminance (stylised image)");
  check_chw(content, "transfer_luminance (content image)");
  if (stylised.sizes() != content.sizes()) {
    throw DataError("transfer_luminance needs images of the same size, got stylised " + shape_string(stylised) +
                    " and content " + shape_string(content));
  }
  cv::Mat stylised_ycrcb, content_ycrcb;
  cv::cvtColor(to_rgb01(stylised), stylised_ycrcb, cv::COLOR_RGB2YCrCb);
  cv::cvtColor(to_rgb01(content), content_ycrcb, cv::COLOR_RGB2YCrCb);
  // Channel 0 is Y: the stylised image's brush strokes and shading; 1 and 2
  // (Cr, Cb) are the content's colours.
  cv::Mat mixed;
  const int from_to[] = {0, 0};
  content_ycrcb.copyTo(mixed);
  cv::mixChannels(&stylised_ycrcb, 1, &mixed, 1, from_to, 1);
  cv::Mat rgb;
  cv::cvtColor(mixed, rgb, cv::COLOR_YCrCb2RGB);
  return from_rgb01(rgb);
}

torch::Tensor match_histogram(const torch::Tensor& image, const torch::Tensor& reference) {
  check_chw(image, "match_histogram (image)");
  check_chw(reference, "match_histogram (reference)");
  const auto source = image.to(torch::kFloat).contiguous();
  const auto target = reference.to(torch::kFloat).contiguous();
  const int64_t source_plane = source.size(1) * source.size(2);
  const int64_t target_plane = target.size(1) * target.size(2);
  auto out = torch::empty_like(source);
  for (int64_t c = 0; c < 3; ++c) {
    const float* in = source.data_ptr<float>() + c * source_plane;
    const auto map = matching_levels(cumulative_histogram(in, source_plane),
                                     cumulative_histogram(target.data_ptr<float>() + c * target_plane, target_plane));
    float* dst = out.data_ptr<float>() + c * source_plane;
    for (int64_t i = 0; i < source_plane; ++i) {
      dst[i] = static_cast<float>(map[static_cast<size_t>(level_of(in[i]))]) / 127.5f - 1.0f;
    }
  }
  return out;
}

}  // namespace atelier::data
