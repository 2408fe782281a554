// Test images written and read through atelier's own codecs (data.h: JPEG by
// TurboJPEG, PNG by libpng), in OpenCV's BGR order so tests can keep drawing
// with OpenCV. The builds without OpenCV's imgcodecs (a GPU machine) run the
// same tests.
#pragma once

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/data.h"

namespace atelier::testing_support {

// uint8 [H, W, C] RGB (or grey) pixels of a BGR (or grey) 8-bit Mat.
inline torch::Tensor rgb_pixels(const cv::Mat& bgr_or_grey) {
  cv::Mat pixels;
  if (bgr_or_grey.channels() == 3) {
    cv::cvtColor(bgr_or_grey, pixels, cv::COLOR_BGR2RGB);
  } else {
    pixels = bgr_or_grey.clone();
  }
  return torch::from_blob(pixels.data, {pixels.rows, pixels.cols, pixels.channels()}, torch::kUInt8).clone();
}

// Writes a BGR (or grey) Mat as PNG or JPEG by the extension; throws on error.
inline void write_bgr(const std::filesystem::path& path, const cv::Mat& bgr) {
  data::write_image_file(path.string(), rgb_pixels(bgr));
}

// Encoded bytes of a BGR (or grey) Mat: ".png" or ".jpg".
inline std::vector<uint8_t> encode_bgr(const std::string& ext, const cv::Mat& bgr, int quality = 95,
                                       bool progressive = false) {
  return ext == ".png" ? data::encode_png(rgb_pixels(bgr)) : data::encode_jpeg(rgb_pixels(bgr), quality, progressive);
}

// A file decoded to BGR CV_8UC3, as imread(IMREAD_COLOR) gave it.
inline cv::Mat read_bgr(const std::filesystem::path& path) {
  const torch::Tensor rgb = data::decode_image(path.string());
  cv::Mat bgr;
  cv::cvtColor(cv::Mat(static_cast<int>(rgb.size(0)), static_cast<int>(rgb.size(1)), CV_8UC3, rgb.data_ptr()), bgr,
               cv::COLOR_RGB2BGR);
  return bgr;
}

}  // namespace atelier::testing_support
