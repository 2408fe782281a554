// PrefetchLoader (see data.h): worker threads build whole batches ahead of
// the consumer, inside a window of `prefetch` batches, and next() hands them
// out strictly in order.
//
// Goal: the batches are a pure function of (options, start cursor), whatever
// the number of workers and whenever the run was interrupted, so that a
// resumed run sees exactly the batches the uninterrupted one would have.
// Hence every choice is hashed from the global sample number (seeding.h)
// instead of drawn from a generator that workers would share.
#include "data/data.h"
#include "data/pixels.h"
#include "data/seeding.h"

#include <opencv2/core.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace atelier::data {
namespace {

using detail::Stream;
using Order = std::shared_ptr<const std::vector<int64_t>>;

// Permutations kept per image list; workers only touch passes close to the
// consumer's, so a few are enough and older ones can be rebuilt if needed.
constexpr size_t kCachedPasses = 8;

// One image list (content or style) and how samples are drawn from it:
// global sample n lies in pass n / N at position n % N of that pass's
// permutation. For content a pass is an epoch; style cycles independently.
struct ImageStream {
  std::string name;                 // "content" or "style", for messages
  std::vector<std::string> files;   // the images, in list_images order
  Stream order_stream;              // seeds each pass's permutation
  Stream augment_stream;            // seeds each sample's crop and flip
  std::mutex orders_mutex;          // guards `orders`
  std::map<int64_t, Order> orders;  // recent passes' permutations, by pass
};

// A batch as a worker left it: the batch, or the error that prevented it.
struct BuiltBatch {
  ContentStyleBatch batch;
  std::exception_ptr error;
};

void require(bool ok, const std::string& message) {
  if (!ok) throw DataError("loader option " + message);
}

void check_options(const LoaderOptions& options, const Cursor& start) {
  require(options.batch_size >= 1,
          "batch_size must be >= 1 (got " + std::to_string(options.batch_size) + ")");
  require(options.workers >= 1, "workers must be >= 1 (got " + std::to_string(options.workers) + ")");
  require(options.prefetch >= 1, "prefetch must be >= 1 (got " + std::to_string(options.prefetch) + ")");
  require(options.world_size >= 1,
          "world_size must be >= 1 (got " + std::to_string(options.world_size) + ")");
  require(options.rank >= 0 && options.rank < options.world_size,
          "rank must be in [0, world_size) (got rank " + std::to_string(options.rank) + ", world_size " +
              std::to_string(options.world_size) + ")");
  require(!options.content.empty(), "content lists no images");
  require(!options.style.empty(), "style lists no images");
  detail::check_augment_options(options.augment);
  const auto count = static_cast<int64_t>(options.content.size());
  // A cursor past the end of the list means the content changed since the
  // checkpoint; the permutations would differ too, so resume cannot be exact.
  require(start.epoch >= 0 && start.index >= 0 && start.index < count,
          "start cursor (epoch " + std::to_string(start.epoch) + ", index " + std::to_string(start.index) +
              ") is outside the " + std::to_string(count) + " content images; did the content change?");
}

// The workers already decode in parallel; OpenCV's own thread pool inside
// every resize would oversubscribe the cores. The setting is process-wide,
// and changing it rebuilds OpenCV's TBB arena under any thread using it, so
// it is changed once, before the first loader's workers start.
void keep_opencv_single_threaded() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (cv::getNumThreads() != 1) cv::setNumThreads(1);
  });
}

}  // namespace

struct PrefetchLoader::State {
  LoaderOptions options;
  int64_t start_sample = 0;  // global number of the first sample of batch 0
  ImageStream content;
  ImageStream style;

  mutable std::mutex skipped_mutex;  // guards `skipped`
  std::set<std::string> skipped;     // files that failed to decode

  mutable std::mutex mutex;             // guards everything below
  std::condition_variable work_cv;      // workers wait for room in the window
  std::condition_variable ready_cv;     // next() waits for its batch
  std::atomic<bool> stopping{false};    // set once by ~State; atomic as build() polls it unlocked
  int64_t handed_out = 0;               // batch numbers given to workers so far
  int64_t consumed = 0;                 // batches next() has returned
  std::map<int64_t, BuiltBatch> ready;  // finished batches not yet consumed, by number
  double wait_seconds = 0;              // time next() spent blocked
  std::vector<std::thread> workers;     // joined by ~State

  ~State();
  void work();
  ContentStyleBatch build(int64_t number);
  void fill(ImageStream& images, int64_t sample, float* out);
  Order permutation(ImageStream& images, int64_t pass) const;
  bool known_bad(const std::string& path) const;
  void mark_bad(const std::string& path, const std::string& why);
  Cursor cursor_of(int64_t sample) const;
};

PrefetchLoader::State::~State() {
  {
    // Set under the lock so a worker cannot miss it between testing the
    // window and going to sleep.
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  work_cv.notify_all();
  for (std::thread& worker : workers) {
    try {
      if (worker.joinable()) worker.join();
    } catch (...) {
      // join() only fails on programming errors; a destructor must not throw.
    }
  }
}

void PrefetchLoader::State::work() {
  for (;;) {
    int64_t number = 0;
    {
      std::unique_lock<std::mutex> lock(mutex);
      // Bounded memory: at most `prefetch` batches are built or waiting.
      work_cv.wait(lock, [&] { return stopping || handed_out < consumed + options.prefetch; });
      if (stopping) return;
      number = handed_out++;
    }
    BuiltBatch built;
    try {
      built.batch = build(number);
    } catch (...) {
      built.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      ready.emplace(number, std::move(built));
    }
    ready_cv.notify_all();
  }
}

// Global batch g covers global samples start + g*B*W ... + (g+1)*B*W - 1;
// this rank takes the B of them starting at offset rank*B.
ContentStyleBatch PrefetchLoader::State::build(int64_t number) {
  const int64_t batch_size = options.batch_size;
  const int64_t side = options.augment.crop_size;
  const int64_t global_first = start_sample + number * batch_size * options.world_size;
  const int64_t first = global_first + options.rank * batch_size;
  ContentStyleBatch batch;
  batch.content = torch::empty({batch_size, 3, side, side}, torch::kFloat);
  batch.style = torch::empty({batch_size, 3, side, side}, torch::kFloat);
  batch.start = cursor_of(global_first);
  const int64_t sample_floats = 3 * side * side;
  // Stopping is checked per sample so the destructor waits for one image, not one batch.
  for (int64_t i = 0; i < batch_size && !stopping; ++i) {
    fill(content, first + i, batch.content.data_ptr<float>() + i * sample_floats);
    fill(style, first + i, batch.style.data_ptr<float>() + i * sample_floats);
  }
  return batch;
}

// Decodes and augments global sample `sample` of `images` into `out`. A file
// that cannot be decoded is replaced by the next one of the same pass's
// permutation (wrapping around), so the replacement is deterministic.
void PrefetchLoader::State::fill(ImageStream& images, int64_t sample, float* out) {
  const auto count = static_cast<int64_t>(images.files.size());
  const Order order = permutation(images, sample / count);
  const int64_t position = sample % count;
  for (int64_t attempt = 0; attempt < count; ++attempt) {
    const auto index = static_cast<size_t>((position + attempt) % count);
    const std::string& path = images.files[static_cast<size_t>((*order)[index])];
    if (known_bad(path)) continue;
    std::string why;
    const cv::Mat rgb = detail::read_rgb(path, why);
    if (rgb.empty()) {
      mark_bad(path, why);
      continue;
    }
    const uint64_t seed =
        detail::derive_seed(options.seed, images.augment_stream, static_cast<uint64_t>(sample));
    detail::augment_into(rgb, options.augment, seed, out);
    return;
  }
  throw DataError("no readable images in the " + images.name + " list (" + std::to_string(count) +
                  " files, all failed to decode)");
}

Order PrefetchLoader::State::permutation(ImageStream& images, int64_t pass) const {
  std::lock_guard<std::mutex> lock(images.orders_mutex);
  const auto found = images.orders.find(pass);
  if (found != images.orders.end()) return found->second;
  const uint64_t seed = detail::derive_seed(options.seed, images.order_stream, static_cast<uint64_t>(pass));
  auto order = std::make_shared<const std::vector<int64_t>>(
      detail::shuffled_indices(static_cast<int64_t>(images.files.size()), seed));
  images.orders.emplace(pass, order);
  if (images.orders.size() > kCachedPasses) images.orders.erase(images.orders.begin());
  return order;
}

bool PrefetchLoader::State::known_bad(const std::string& path) const {
  std::lock_guard<std::mutex> lock(skipped_mutex);
  return skipped.count(path) > 0;
}

void PrefetchLoader::State::mark_bad(const std::string& path, const std::string& why) {
  std::lock_guard<std::mutex> lock(skipped_mutex);
  if (skipped.insert(path).second) spdlog::warn("skipping unreadable image {}: {}", path, why);
}

Cursor PrefetchLoader::State::cursor_of(int64_t sample) const {
  const auto count = static_cast<int64_t>(content.files.size());
  return Cursor{sample / count, sample % count};
}

PrefetchLoader::PrefetchLoader(LoaderOptions options, Cursor start) : state_(std::make_unique<State>()) {
  check_options(options, start);
  State& s = *state_;
  s.content.name = "content";
  s.content.files = options.content;
  s.content.order_stream = Stream::kContentOrder;
  s.content.augment_stream = Stream::kContentAugment;
  s.style.name = "style";
  s.style.files = options.style;
  s.style.order_stream = Stream::kStyleOrder;
  s.style.augment_stream = Stream::kStyleAugment;
  s.start_sample = start.epoch * static_cast<int64_t>(options.content.size()) + start.index;
  s.options = std::move(options);
  keep_opencv_single_threaded();
  s.workers.reserve(static_cast<size_t>(s.options.workers));
  for (int64_t i = 0; i < s.options.workers; ++i) s.workers.emplace_back([&s] { s.work(); });
}

// ~State stops and joins the workers; it also runs when the constructor
// throws after starting some of them.
PrefetchLoader::~PrefetchLoader() = default;

ContentStyleBatch PrefetchLoader::next() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mutex);
  const auto begin = std::chrono::steady_clock::now();
  // Wait for this exact batch, not any batch: workers finish out of order,
  // and handing out batches in number order is what makes the stream
  // independent of the number of workers.
  s.ready_cv.wait(lock, [&] { return s.ready.count(s.consumed) > 0; });
  s.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  const auto found = s.ready.find(s.consumed);
  // A failed batch stays in place: every later call rethrows the same error
  // rather than silently skipping samples.
  if (found->second.error) std::rethrow_exception(found->second.error);
  ContentStyleBatch batch = std::move(found->second.batch);
  s.ready.erase(found);
  ++s.consumed;
  lock.unlock();
  s.work_cv.notify_all();
  return batch;
}

Cursor PrefetchLoader::cursor() const {
  const State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.cursor_of(s.start_sample + s.consumed * s.options.batch_size * s.options.world_size);
}

int64_t PrefetchLoader::skipped_files() const {
  std::lock_guard<std::mutex> lock(state_->skipped_mutex);
  return static_cast<int64_t>(state_->skipped.size());
}

double PrefetchLoader::wait_seconds() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->wait_seconds;
}

}  // namespace atelier::data
