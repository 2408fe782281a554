// Sampler and BadImages (see sampler.h).
#include "data/sampler.h"

#include "data/pixels.h"

#include <spdlog/spdlog.h>

namespace atelier::data::detail {
namespace {

// Permutations kept per image list; workers only touch passes close to the
// consumer's, so a few are enough and older ones can be rebuilt if needed.
constexpr size_t kCachedPasses = 8;

}  // namespace

bool BadImages::contains(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return names_.count(name) > 0;
}

void BadImages::add(const std::string& name, const std::string& why) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (names_.insert(name).second) spdlog::warn("skipping unreadable image {}: {}", name, why);
}

int64_t BadImages::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(names_.size());
}

Sampler::Sampler(const ImageList& images, const std::string& what, uint64_t seed, BadImages& bad)
    : images_(images),
      what_(what),
      seed_(seed),
      order_stream_(what == "content" ? Stream::kContentOrder : Stream::kStyleOrder),
      augment_stream_(what == "content" ? Stream::kContentAugment : Stream::kStyleAugment),
      bad_(bad) {
  if (images.size() < 1) throw DataError("the " + what + " list holds no images");
}

int64_t Sampler::image_of(int64_t sample) {
  const int64_t count = images_.size();
  return (*permutation(sample / count))[static_cast<size_t>(sample % count)];
}

void Sampler::draw(int64_t sample, const AugmentOptions& augment, uint8_t* out) {
  uint64_t seed = 0;
  const cv::Mat rgb = decode_sample(sample, augment.load_size, seed);
  augment_into_bytes(rgb, augment, seed, out);
}

void Sampler::draw(int64_t sample, const AugmentOptions& augment, float* out) {
  uint64_t seed = 0;
  const cv::Mat rgb = decode_sample(sample, augment.load_size, seed);
  augment_into(rgb, augment, seed, out);
}

cv::Mat Sampler::decode_sample(int64_t sample, int64_t load_size, uint64_t& seed) {
  const int64_t count = images_.size();
  const Order order = permutation(sample / count);
  const int64_t position = sample % count;
  for (int64_t attempt = 0; attempt < count; ++attempt) {
    const int64_t index = (*order)[static_cast<size_t>((position + attempt) % count)];
    const std::string name = images_.name(index);
    if (bad_.contains(name)) continue;
    std::string why;
    cv::Mat rgb = images_.decode(index, load_size, why);
    if (rgb.empty()) {
      bad_.add(name, why);
      continue;
    }
    seed = derive_seed(seed_, augment_stream_, static_cast<uint64_t>(sample));
    return rgb;
  }
  throw DataError("no readable images in the " + what_ + " list (" + std::to_string(count) +
                  " images, all failed to decode)");
}

Sampler::Order Sampler::permutation(int64_t pass) {
  std::lock_guard<std::mutex> lock(orders_mutex_);
  const auto found = orders_.find(pass);
  if (found != orders_.end()) return found->second;
  const uint64_t seed = derive_seed(seed_, order_stream_, static_cast<uint64_t>(pass));
  auto order = std::make_shared<const std::vector<int64_t>>(shuffled_indices(images_.size(), seed));
  orders_.emplace(pass, order);
  if (orders_.size() > kCachedPasses) orders_.erase(orders_.begin());
  return order;
}

}  // namespace atelier::data::detail
