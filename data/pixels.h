// Private to data/: the pixel work behind decode_image, augment and
// load_centered, on cv::Mat so the loader's workers can write samples
// straight into a batch without intermediate tensors (and without calling
// into LibTorch's intra-op thread pool from several threads at once).
#pragma once

#include "data/data.h"

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace atelier::data::detail {

// Decodes `path` to an RGB CV_8UC3 image. On failure returns an empty Mat and
// sets `why` to the reason (the loader warns with it, decode_image throws).
cv::Mat read_rgb(const std::string& path, std::string& why);

// Decodes encoded image bytes (JPEG, PNG) at full size (codec.h) to RGB
// CV_8UC3. Same failure contract as read_rgb. (Training decodes through
// decode_for_training in jpeg.h instead, which scales JPEGs down.)
cv::Mat decode_rgb(const std::vector<uchar>& bytes, std::string& why);

// Reads a whole file into `bytes`; false and a reason in `why` when it is
// missing, unreadable or empty.
bool read_bytes(const std::string& path, std::vector<uchar>& bytes, std::string& why);

// True when `bytes` start with the JPEG signature.
bool looks_like_jpeg(const std::vector<uchar>& bytes);

// False for a JPEG cut short: no end-of-image marker after its last scan.
bool jpeg_is_complete(const std::vector<uchar>& bytes);

// How resize_shorter_side shrinks an image (it always enlarges bilinearly).
enum class Shrink {
  kArea,      // area averaging at every ratio: no aliasing (inference, evaluation)
  kTraining,  // bilinear below a 2x reduction, area averaging from 2x on: the
              // training path, where decode_for_training already took a JPEG
              // to within 2x of the load size (mostly within 1.6x)
};

// Scales an image so that its shorter side is `size`, keeping the aspect
// ratio; returns the input itself when it already has that size.
cv::Mat resize_shorter_side(const cv::Mat& rgb, int64_t size, Shrink shrink = Shrink::kArea);

// A square window of an image, optionally mirrored left-right.
struct Crop {
  int x = 0;          // left column in the image
  int y = 0;          // top row in the image
  int size = 0;       // side of the square
  bool flip = false;  // mirror horizontally
};

// Throws DataError unless 1 <= crop_size <= load_size.
void check_augment_options(const AugmentOptions& options);

// Throws DataError when pinned batches were asked for and this LibTorch
// cannot allocate page-locked memory (no CUDA, or no GPU visible).
void check_pinning(bool pin_memory);
// An uninitialised float batch [count, 3, side, side], pinned if asked.
torch::Tensor batch_tensor(int64_t count, int64_t side, bool pin_memory);

// Resize + random crop + random flip of an RGB CV_8UC3 image (or a greyscale
// CV_8UC1 one, whose crop gets R = G = B), written to `out` as float
// [3, crop, crop] in [-1, 1]. Everything random comes from `seed`.
void augment_into(const cv::Mat& rgb, const AugmentOptions& options, uint64_t seed, float* out);

// The same crop as 8-bit pixels, written to `out` as uint8 [crop, crop, 3]
// (HWC, RGB): what the loader service sends over the wire.
void augment_into_bytes(const cv::Mat& rgb, const AugmentOptions& options, uint64_t seed, uint8_t* out);

// uint8 [side, side, 3] RGB to float [3, side, side] in [-1, 1] with the same
// table augment_into uses, so bytes then floats equals floats directly, bit
// for bit.
void bytes_to_unit_chw(const uint8_t* hwc, int64_t side, float* out);

// Throws DataError unless 1 <= size <= 65536.
void check_centre_size(int64_t size);

// Resize + centre crop of an RGB CV_8UC3 image, written to `out` as float
// [3, size, size] in [-1, 1].
void centre_into(const cv::Mat& rgb, int64_t size, float* out);

// Sets OpenCV to one thread, once per process: the loaders' workers already
// decode in parallel, and OpenCV's own pool would oversubscribe the cores.
void keep_opencv_single_threaded();

}  // namespace atelier::data::detail
