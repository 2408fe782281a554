// Private to data/: the one sampler behind both batch sources. The folder
// loader (loader.cpp) and the loader service (server.cpp) draw global sample
// n of an image list through the same code, so `data.source: folder` and
// `data.source: service` give the same samples for the same seed.
//
// Global sample n lies in pass n / N at position n % N of that pass's
// permutation (N images); for content a pass is an epoch, style cycles
// independently. Every choice is hashed from (seed, stream, n) (seeding.h),
// never drawn from a shared generator, so any worker can build any sample.
#pragma once

#include "data/data.h"
#include "data/seeding.h"

#include <opencv2/core.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace atelier::data::detail {

// A list of images the sampler can decode by index: files of a folder, or
// records of a shard set.
class ImageList {
 public:
  virtual ~ImageList() = default;
  // Number of images.
  virtual int64_t size() const = 0;
  // The image's name for messages (a path or a shard key).
  virtual std::string name(int64_t index) const = 0;
  // Decodes image `index` to RGB CV_8UC3 for training at `load_size`; an
  // empty Mat and a reason in `why` when it cannot be read.
  virtual cv::Mat decode(int64_t index, int64_t load_size, std::string& why) const = 0;
};

// Images that failed to decode, shared by every sampler of one list: each is
// warned about once, counted, and never tried again.
class BadImages {
 public:
  bool contains(const std::string& name) const;
  void add(const std::string& name, const std::string& why);
  int64_t count() const;

 private:
  mutable std::mutex mutex_;    // guards names_
  std::set<std::string> names_;  // images that failed
};

// Draws global samples of one image list for one seed. Thread-safe.
class Sampler {
 public:
  // `what` ("content" or "style") names the list in messages and picks the
  // random streams; `images` and `bad` must outlive the sampler.
  Sampler(const ImageList& images, const std::string& what, uint64_t seed, BadImages& bad);

  // Decodes and augments global sample `sample` into `out` as uint8
  // [crop, crop, 3]. An image that cannot be decoded is replaced by the next
  // one of the same pass's permutation (wrapping around), so the
  // replacement is deterministic. Throws DataError when nothing decodes.
  void draw(int64_t sample, const AugmentOptions& augment, uint8_t* out);

  // The same sample as float [3, crop, crop] in [-1, 1]: bit for bit what
  // bytes_to_unit_chw makes of draw()'s bytes, in one pass over the crop
  // instead of two (the folder loader's path).
  void draw(int64_t sample, const AugmentOptions& augment, float* out);

  // Index (into the list) of the image global sample `sample` starts from,
  // before any replacement.
  int64_t image_of(int64_t sample);

 private:
  using Order = std::shared_ptr<const std::vector<int64_t>>;
  Order permutation(int64_t pass);
  // The decoded image of global sample `sample` (after any replacement) and,
  // in `seed`, the seed of its crop and flip.
  cv::Mat decode_sample(int64_t sample, int64_t load_size, uint64_t& seed);

  const ImageList& images_;
  std::string what_;
  uint64_t seed_ = 0;
  Stream order_stream_;             // seeds each pass's permutation
  Stream augment_stream_;           // seeds each sample's crop and flip
  BadImages& bad_;
  std::mutex orders_mutex_;         // guards orders_
  std::map<int64_t, Order> orders_;  // recent passes' permutations, by pass
};

// The global sample numbers this rank takes in batch `number` counted from
// global sample `start`: global batch g covers start + g*B*W ... + (g+1)*B*W
// - 1, and rank r takes the B of them beginning at offset r*B.
inline int64_t rank_first_sample(int64_t start, int64_t number, int64_t batch_size, int64_t rank,
                                 int64_t world_size) {
  return start + number * batch_size * world_size + rank * batch_size;
}

}  // namespace atelier::data::detail
