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
#include "data/jpeg.h"
#include "data/pixels.h"
#include "data/sampler.h"

#include <opencv2/core.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace atelier::data {
namespace {

// The image files of a folder source, decoded as the loader service decodes
// their shards (decode_for_training), so both give the same pixels.
class FolderImages : public detail::ImageList {
 public:
  explicit FolderImages(std::vector<std::string> files) : files_(std::move(files)) {}
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  std::string name(int64_t index) const override { return files_[static_cast<size_t>(index)]; }
  cv::Mat decode(int64_t index, int64_t load_size, std::string& why) const override {
    const std::string path = name(index);
    std::vector<uchar> bytes;
    if (!detail::read_bytes(path, bytes, why)) return {};
    return detail::decode_for_training(bytes, load_size, why);
  }

 private:
  std::vector<std::string> files_;  // in list_images order
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

}  // namespace

namespace detail {

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

}  // namespace detail

struct PrefetchLoader::State {
  LoaderOptions options;
  int64_t start_sample = 0;  // global number of the first sample of batch 0
  std::unique_ptr<FolderImages> content_files;  // options.content
  std::unique_ptr<FolderImages> style_files;    // options.style
  detail::BadImages bad;                        // files that failed to decode, both lists
  std::unique_ptr<detail::Sampler> content;     // draws content samples
  std::unique_ptr<detail::Sampler> style;       // draws style samples

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

// Batch `number` holds this rank's slice of global batch `number` (sampler.h).
ContentStyleBatch PrefetchLoader::State::build(int64_t number) {
  const int64_t batch_size = options.batch_size;
  const int64_t side = options.augment.crop_size;
  const int64_t first =
      detail::rank_first_sample(start_sample, number, batch_size, options.rank, options.world_size);
  ContentStyleBatch batch;
  batch.content = detail::batch_tensor(batch_size, side, options.pin_memory);
  batch.style = detail::batch_tensor(batch_size, side, options.pin_memory);
  batch.start = cursor_of(first - options.rank * batch_size);
  batch.first_sample = first;
  const int64_t sample_floats = 3 * side * side;
  // Stopping is checked per sample so the destructor waits for one image, not one batch.
  for (int64_t i = 0; i < batch_size && !stopping; ++i) {
    content->draw(first + i, options.augment, batch.content.data_ptr<float>() + i * sample_floats);
    style->draw(first + i, options.augment, batch.style.data_ptr<float>() + i * sample_floats);
  }
  return batch;
}

Cursor PrefetchLoader::State::cursor_of(int64_t sample) const {
  return cursor_at(sample, content_files->size());
}

PrefetchLoader::PrefetchLoader(LoaderOptions options, Cursor start) : state_(std::make_unique<State>()) {
  check_options(options, start);
  detail::check_pinning(options.pin_memory);
  State& s = *state_;
  s.start_sample = sample_at(start, static_cast<int64_t>(options.content.size()));
  s.content_files = std::make_unique<FolderImages>(options.content);
  s.style_files = std::make_unique<FolderImages>(options.style);
  s.content = std::make_unique<detail::Sampler>(*s.content_files, "content", options.seed, s.bad);
  s.style = std::make_unique<detail::Sampler>(*s.style_files, "style", options.seed, s.bad);
  s.options = std::move(options);
  detail::keep_opencv_single_threaded();
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

int64_t sample_at(const Cursor& cursor, int64_t content_count) {
  return cursor.epoch * content_count + cursor.index;
}

Cursor cursor_at(int64_t sample, int64_t content_count) {
  return Cursor{sample / content_count, sample % content_count};
}

int64_t PrefetchLoader::skipped_files() const { return state_->bad.count(); }

double PrefetchLoader::wait_seconds() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->wait_seconds;
}

}  // namespace atelier::data
