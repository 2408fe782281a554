// Private to data/: the pixel work behind decode_image, augment and
// load_centered, on cv::Mat so the loader's workers can write samples
// straight into a batch without intermediate tensors (and without calling
// into LibTorch's intra-op thread pool from several threads at once).
#pragma once

#include "data/data.h"

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>

namespace atelier::data::detail {

// Decodes `path` to an RGB CV_8UC3 image. On failure returns an empty Mat and
// sets `why` to the reason (the loader warns with it, decode_image throws).
cv::Mat read_rgb(const std::string& path, std::string& why);

// Scales an image so that its shorter side is `size`, keeping the aspect
// ratio; returns the input itself when it already has that size.
cv::Mat resize_shorter_side(const cv::Mat& rgb, int64_t size);

// A square window of an image, optionally mirrored left-right.
struct Crop {
  int x = 0;          // left column in the image
  int y = 0;          // top row in the image
  int size = 0;       // side of the square
  bool flip = false;  // mirror horizontally
};

// Throws DataError unless 1 <= crop_size <= load_size.
void check_augment_options(const AugmentOptions& options);

// Resize + random crop + random flip of an RGB CV_8UC3 image, written to
// `out` as float [3, crop, crop] in [-1, 1]. Everything random comes from `seed`.
void augment_into(const cv::Mat& rgb, const AugmentOptions& options, uint64_t seed, float* out);

// Throws DataError unless 1 <= size <= 65536.
void check_centre_size(int64_t size);

// Resize + centre crop of an RGB CV_8UC3 image, written to `out` as float
// [3, size, size] in [-1, 1].
void centre_into(const cv::Mat& rgb, int64_t size, float* out);

}  // namespace atelier::data::detail
