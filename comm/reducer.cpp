// GradientReducer: DDP's bucketed all-reduce, overlapped with backward by a
// communication thread. The decisions (which gradients fill which bucket,
// when a bucket may go) live here; the bytes move through the Communicator.
#include <condition_variable>
#include <exception>
#include <mutex>
#include <sstream>
#include <thread>

#include "comm/comm.h"

namespace atelier::comm {
namespace {

using Clock = std::chrono::steady_clock;

struct Bucket {
  std::vector<int64_t> params;   // indices into State::params
  std::vector<int64_t> offsets;  // first element of each parameter in `buffer`
  torch::Tensor buffer;          // flat, in the wire dtype; reused every step
  std::vector<bool> arrived;     // per slot: gradient copied in this backward
  int64_t pending = 0;           // slots still waiting this backward
  BucketEvent event;
};

at::ScalarType wire_type(at::ScalarType type, Compression compression) {
  if (type != at::kFloat && type != at::kDouble) return type;
  if (compression == Compression::BF16) return at::kBFloat16;
  if (compression == Compression::FP16) return at::kHalf;
  return type;
}

}  // namespace

struct GradientReducer::State {
  std::shared_ptr<Communicator> comm;
  std::vector<torch::Tensor> params;
  std::vector<std::pair<int64_t, int64_t>> where;  // per parameter: (bucket, slot)
  std::vector<unsigned> hooks;                     // per parameter: hook handle
  std::vector<Bucket> buckets;
  Clock::time_point epoch = Clock::now();

  std::mutex mutex;
  std::condition_variable changed;
  bool armed = false;       // between prepare() and finalize()
  bool accumulated = false;  // this backward's gradients add to what .grad holds
  bool stop = false;        // the destructor asks the thread to end
  int64_t queued = 0;       // buckets handed to the thread this backward (in index order)
  int64_t taken = 0;        // buckets the thread has started
  int64_t done = 0;         // buckets finished (or abandoned after an error)
  int64_t last_hook_us = 0;
  std::exception_ptr error;
  std::thread thread;

  int64_t now_us() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - epoch).count();
  }

  // Hands every complete bucket, in index order, to the thread. Every rank
  // therefore issues the same sequence of all-reduces whatever the order in
  // which its hooks fired. Caller holds the mutex.
  void queue_ready() {
    const auto before = queued;
    while (queued < static_cast<int64_t>(buckets.size()) && buckets[queued].pending == 0) ++queued;
    if (queued != before) changed.notify_all();
  }

  void on_gradient(int64_t index, const torch::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed) return;  // another network's backward flows through these parameters
    const auto [b, slot] = where[index];
    auto& bucket = buckets[b];
    if (bucket.arrived[slot]) {
      if (!error) error = std::make_exception_ptr(CommError("gradient of parameter " + std::to_string(index) +
                                                            " arrived twice in one backward"));
      return;
    }
    {
      torch::NoGradGuard no_grad;
      // A hook sees this backward's gradient before autograd adds it to
      // .grad; with accumulation the earlier micro-batches' sum is added
      // here, in the gradient's dtype, before any compression.
      const auto& held = params[index].grad();
      const auto slot_view = bucket.buffer.narrow(0, bucket.offsets[slot], grad.numel());
      if (accumulated && held.defined()) slot_view.copy_((grad + held).reshape(-1));
      else slot_view.copy_(grad.reshape(-1));
    }
    bucket.arrived[slot] = true;
    last_hook_us = now_us();
    if (--bucket.pending == 0) {
      bucket.event.ready_us = last_hook_us;
      queue_ready();
    }
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      changed.wait(lock, [&] { return stop || taken < queued; });
      if (stop) return;
      auto& bucket = buckets[taken++];
      const bool failed = static_cast<bool>(error);
      lock.unlock();
      bucket.event.started_us = now_us();
      std::exception_ptr caught;
      try {
        // After an error the remaining buckets are abandoned: finalize()
        // rethrows it and the job ends (the watchdog aborts any peer still
        // waiting in the collective).
        if (!failed) comm->all_reduce(bucket.buffer, ReduceOp::Sum);
      } catch (...) {
        caught = std::current_exception();
      }
      bucket.event.finished_us = now_us();
      lock.lock();
      if (caught && !error) error = caught;
      ++done;
      changed.notify_all();
    }
  }

  void build_buckets(const ReducerOptions& options);
  void agree_on_layout();
};

// Reverse registration order: backward produces the last layers' gradients
// first, so the first bucket fills (and starts) earliest.
void GradientReducer::State::build_buckets(const ReducerOptions& options) {
  if (!(options.bucket_mb > 0)) throw CommError("dist.bucket_mb must be positive");
  const double capacity = options.bucket_mb * 1024 * 1024;
  where.assign(params.size(), {-1, -1});
  double bytes = 0;
  for (int64_t i = static_cast<int64_t>(params.size()) - 1; i >= 0; --i) {
    const auto& p = params[i];
    const auto wire = wire_type(p.scalar_type(), options.compression);
    const double size = static_cast<double>(p.numel()) * c10::elementSize(wire);
    // Buckets live where their gradients do (a GPU's buckets never visit the host).
    const bool fits = !buckets.empty() && buckets.back().buffer.scalar_type() == wire &&
                      buckets.back().buffer.device() == p.device() && bytes + size <= capacity;
    if (!fits) {
      buckets.emplace_back();
      buckets.back().buffer = torch::empty({0}, torch::TensorOptions().dtype(wire).device(p.device()));
      bytes = 0;
    }
    auto& bucket = buckets.back();
    where[i] = {static_cast<int64_t>(buckets.size()) - 1, static_cast<int64_t>(bucket.params.size())};
    bucket.offsets.push_back(bucket.params.empty() ? 0 : bucket.offsets.back() + params[bucket.params.back()].numel());
    bucket.params.push_back(i);
    bytes += size;
  }
  for (auto& bucket : buckets) {
    const int64_t total = bucket.offsets.back() + params[bucket.params.back()].numel();
    bucket.buffer = torch::zeros({total}, bucket.buffer.options());
    bucket.arrived.assign(bucket.params.size(), false);
  }
}

// Ranks compare a digest of (bucket, dtype, shape) of every parameter before
// the first collective: different models or bucket sizes would otherwise
// reduce mismatched buffers or hang.
void GradientReducer::State::agree_on_layout() {
  std::ostringstream layout;
  for (size_t b = 0; b < buckets.size(); ++b)
    for (const auto i : buckets[b].params)
      layout << b << ":" << c10::toString(buckets[b].buffer.scalar_type()) << params[i].sizes() << ";";
  const auto digest = torch::tensor({static_cast<int64_t>(buckets.size()), static_cast<int64_t>(params.size()),
                                     static_cast<int64_t>(std::hash<std::string>{}(layout.str()))});
  const auto all = comm->all_gather(digest);
  for (int r = 0; r < comm->world_size(); ++r) {
    if (torch::equal(all[r], digest)) continue;
    std::ostringstream msg;
    msg << "gradient buckets differ: rank " << comm->rank() << " has " << params.size() << " parameters in "
        << buckets.size() << " buckets, rank " << r << " has " << all[r][1].item<int64_t>() << " parameters in "
        << all[r][0].item<int64_t>() << " buckets"
        << " (or different shapes/dtypes): every rank must build the same model with the same dist.bucket_mb";
    throw CommError(msg.str());
  }
}

GradientReducer::GradientReducer(std::shared_ptr<Communicator> comm, std::vector<torch::Tensor> parameters,
                                 ReducerOptions options)
    : state_(std::make_unique<State>()) {
  auto& s = *state_;
  s.comm = std::move(comm);
  for (auto& p : parameters)
    if (p.requires_grad()) s.params.push_back(p);
  if (s.params.empty()) throw CommError("GradientReducer: no parameter requires a gradient");
  s.build_buckets(options);
  s.agree_on_layout();
  State* raw = &s;
  for (int64_t i = 0; i < static_cast<int64_t>(s.params.size()); ++i)
    s.hooks.push_back(s.params[i].register_hook([raw, i](const torch::Tensor& grad) { raw->on_gradient(i, grad); }));
  s.thread = std::thread([raw] { raw->run(); });
}

GradientReducer::~GradientReducer() {
  auto& s = *state_;
  for (size_t i = 0; i < s.hooks.size(); ++i) s.params[i].remove_hook(s.hooks[i]);
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.stop = true;
  }
  s.changed.notify_all();
  if (s.thread.joinable()) s.thread.join();
}

void GradientReducer::prepare(bool accumulated) {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.armed) throw CommError("GradientReducer::prepare called twice without finalize");
  for (auto& bucket : s.buckets) {
    bucket.pending = static_cast<int64_t>(bucket.params.size());
    bucket.arrived.assign(bucket.params.size(), false);
    bucket.event = {};
    bucket.event.bucket = &bucket - s.buckets.data();
  }
  s.queued = s.taken = s.done = 0;
  s.error = nullptr;
  s.accumulated = accumulated;
  s.armed = true;
}

void GradientReducer::finalize() {
  auto& s = *state_;
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    if (!s.armed) throw CommError("GradientReducer::finalize called without prepare");
    // Parameters that took no part in this backward contribute zeros, or
    // what earlier micro-batches accumulated for them.
    for (auto& bucket : s.buckets) {
      if (bucket.pending == 0) continue;
      for (size_t slot = 0; slot < bucket.params.size(); ++slot) {
        if (bucket.arrived[slot]) continue;
        const auto& p = s.params[bucket.params[slot]];
        auto slot_view = bucket.buffer.narrow(0, bucket.offsets[slot], p.numel());
        if (s.accumulated && p.grad().defined()) slot_view.copy_(p.grad().reshape(-1));
        else slot_view.zero_();
      }
      bucket.pending = 0;
      bucket.event.ready_us = s.now_us();
    }
    s.queue_ready();
    s.changed.wait(lock, [&] { return s.done == static_cast<int64_t>(s.buckets.size()); });
    s.armed = false;
    if (s.error) std::rethrow_exception(s.error);
  }
  torch::NoGradGuard no_grad;
  const double world = s.comm->world_size();
  for (const auto& bucket : s.buckets) {
    for (size_t slot = 0; slot < bucket.params.size(); ++slot) {
      auto& p = s.params[bucket.params[slot]];
      const auto sum = bucket.buffer.narrow(0, bucket.offsets[slot], p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(sum);
        p.mutable_grad().div_(world);
      } else {
        p.mutable_grad() = sum.to(p.scalar_type()).div_(world);
      }
    }
  }
}

int64_t GradientReducer::bucket_count() const { return static_cast<int64_t>(state_->buckets.size()); }

std::vector<std::vector<int64_t>> GradientReducer::bucket_layout() const {
  std::vector<std::vector<int64_t>> out;
  for (const auto& bucket : state_->buckets) out.push_back(bucket.params);
  return out;
}

std::vector<BucketEvent> GradientReducer::last_events() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  std::vector<BucketEvent> out;
  for (const auto& bucket : state_->buckets) out.push_back(bucket.event);
  return out;
}

int64_t GradientReducer::last_hook_us() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->last_hook_us;
}

}  // namespace atelier::comm
