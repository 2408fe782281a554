// data/ — images in, training batches out.
//
// Folders (or explicit files) of JPEG/PNG images are listed once, decoded with
// OpenCV, augmented (resize shorter side, random crop, horizontal flip, scale
// to [-1, 1]) and packed into content/style batches by a pool of worker
// threads that runs ahead of training. Everything is a pure function of
// (seed, cursor): the same seed and cursor give the same batches whatever the
// number of workers, which is what exact resume needs.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace atelier::data {

// A source that cannot be used: missing, empty, unreadable. The message names it.
struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Image files under each source, which is a directory (searched recursively)
// or a single image file. Extensions .jpg .jpeg .png .bmp (any case). Sorted
// by path so the list is the same on every rank and every run. Throws
// DataError naming a source that does not exist or holds no image.
std::vector<std::string> list_images(const std::vector<std::string>& sources);

struct AugmentOptions {
  int64_t load_size = 144;  // shorter side after resizing (>= crop_size)
  int64_t crop_size = 128;  // square crop taken at a random position
  bool flip = true;         // random horizontal flip with probability 1/2
};

// Decodes an image file to RGB uint8 [H, W, 3]. Throws DataError naming the
// file when it cannot be read or decoded.
torch::Tensor decode_image(const std::string& path);

// Resizes the shorter side of an RGB uint8 [H, W, 3] image to load_size,
// crops crop_size x crop_size at a position drawn from `seed`, flips it when
// `seed` says so, and returns float [3, crop, crop] in [-1, 1].
torch::Tensor augment(const torch::Tensor& rgb, const AugmentOptions& options, uint64_t seed);

// Resizes without randomness (shorter side to `size`, centre crop to a
// size x size square); float [3, size, size] in [-1, 1]. For samples and tools.
torch::Tensor load_centered(const std::string& path, int64_t size);

// ---------------------------------------------------------------------------
// Whole images and colour (for inference: `atelier stylize`). Images are float
// [3, H, W] RGB in [-1, 1], as everywhere in atelier.

// Decodes `path` at its own aspect ratio, no crop: shorter side scaled to
// `shorter_side`, or the original size when it is 0. Throws DataError naming
// the file.
torch::Tensor load_image(const std::string& path, int64_t shorter_side = 0);

// Writes an image as 8-bit PNG or JPEG, chosen by the extension of `path`
// (.png .jpg .jpeg, any case); values are clamped to [-1, 1] first. Throws
// DataError naming the path when the extension, the tensor or the write is bad.
void save_image(const std::string& path, const torch::Tensor& image);

// Colour preservation by luminance-only transfer (Gatys et al. 2016): the Y
// channel of `stylised` with the Cr and Cb channels of `content` (YCrCb,
// BT.601), back to RGB and clamped to [-1, 1]. Both images have the same size.
torch::Tensor transfer_luminance(const torch::Tensor& stylised, const torch::Tensor& content);

// Histogram matching: each channel of `image` quantised to 256 levels and
// mapped through its CDF onto the inverse CDF of the same channel of
// `reference` (sizes may differ). The result takes only the 256 levels
// k / 127.5 - 1, like an 8-bit image.
torch::Tensor match_histogram(const torch::Tensor& image, const torch::Tensor& reference);

// Position in the sample stream: the next global sample to consume is
// number `index` of epoch `epoch`. An epoch is one pass over the content images.
struct Cursor {
  int64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const Cursor& other) const {
    return epoch == other.epoch && index == other.index;
  }
};

// One training batch: `content` and `style` are float [B, 3, S, S] in [-1, 1].
struct ContentStyleBatch {
  torch::Tensor content;
  torch::Tensor style;
  Cursor start;  // cursor of the batch's first global sample
};

struct LoaderOptions {
  std::vector<std::string> content;  // image files (see list_images)
  std::vector<std::string> style;    // image files (see list_images)
  AugmentOptions augment;
  int64_t batch_size = 4;  // per rank
  int64_t workers = 2;     // decode threads
  int64_t prefetch = 4;    // batches decoded ahead of the consumer
  uint64_t seed = 0;
  int64_t rank = 0;        // this rank takes samples [rank*B, (rank+1)*B) of every global batch
  int64_t world_size = 1;  // global batch = batch_size * world_size
};

// Streams ContentStyleBatch from a pool of worker threads, `prefetch` batches
// ahead. Sample order: content follows a permutation of the content images
// drawn from (seed, epoch); style follows its own permutations, independent
// of content; augmentation randomness is drawn per sample from (seed, sample).
// A file that fails to decode is replaced by the next sample of the same
// order, warned about once and counted. Deterministic for (options, start).
class PrefetchLoader {
 public:
  PrefetchLoader(LoaderOptions options, Cursor start = {});
  ~PrefetchLoader();
  PrefetchLoader(const PrefetchLoader&) = delete;
  PrefetchLoader& operator=(const PrefetchLoader&) = delete;

  // The next batch; blocks until it is decoded. Rethrows a worker's error.
  ContentStyleBatch next();
  // The cursor after the last batch next() returned (where a resume starts).
  Cursor cursor() const;
  // Distinct files that failed to decode so far.
  int64_t skipped_files() const;
  // Seconds next() spent waiting for workers since construction.
  double wait_seconds() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace atelier::data
