// Small synthetic training images for tests: smooth colour patterns that
// give the networks something to fit, written as 48x40 PNGs.
#pragma once

#include "tests/support/image_files.h"

#include <filesystem>
#include <random>
#include <string>

namespace atelier::testing_support {

// One 48x40 pattern whose frequencies are drawn from `rng`.
inline void write_pattern_image(const std::filesystem::path& path, std::mt19937& rng) {
  cv::Mat img(40, 48, CV_8UC3);
  const int a = static_cast<int>(rng() % 7 + 1), b = static_cast<int>(rng() % 5 + 1);
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x)
      img.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uchar>((x * a) % 256), static_cast<uchar>((y * b * 3) % 256),
                                          static_cast<uchar>(((x + y) * (a + b)) % 256));
  write_bgr(path, img);
}

inline void write_pattern_image(const std::filesystem::path& path, int seed) {
  std::mt19937 rng(seed);
  write_pattern_image(path, rng);
}

// `count` patterns img0.png .. in `dir`, drawn from one generator seeded with `seed`.
inline void write_pattern_images(const std::filesystem::path& dir, int count, int seed) {
  std::filesystem::create_directories(dir);
  std::mt19937 rng(seed);
  for (int i = 0; i < count; ++i) write_pattern_image(dir / ("img" + std::to_string(i) + ".png"), rng);
}

}  // namespace atelier::testing_support
