// ServiceLoader (see data.h, docs/loader-protocol.md): one thread per server
// link, each keeping up to min(prefetch, the server's queue) requests in
// flight. Batch numbers are handed to links from one window of `prefetch`
// batches after the consumer; next() hands batches out strictly in number
// order. When a link fails, its unanswered batch numbers go back to the pool
// and another link requests them: a batch is delivered once, by whichever
// link answers it, so no sample is lost or repeated.
#include "data/data.h"
#include "data/pixels.h"
#include "data/protocol.h"
#include "data/sampler.h"

#include <boost/asio.hpp>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace atelier::data {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
namespace proto = protocol;

// A blocking TCP connection to one server. Reads and writes go straight to
// the socket with SO_RCVTIMEO/SO_SNDTIMEO, so a silent server fails a call
// after the timeout instead of hanging the rank (Asio's blocking calls would
// poll past these timeouts).
class Wire {
 public:
  Wire(const std::string& address, double timeout_s) : address_(address) {
    const auto colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
      throw DataError("loader server '" + address + "' is not host:port");
    tcp::resolver resolver(io_);
    boost::system::error_code ec;
    const auto endpoints = resolver.resolve(address.substr(0, colon), address.substr(colon + 1), ec);
    if (!ec) asio::connect(socket_, endpoints, ec);
    if (ec) throw DataError("cannot connect to loader server " + address + ": " + ec.message());
    socket_.set_option(tcp::no_delay(true));
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_s);
    tv.tv_usec = static_cast<suseconds_t>((timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }

  void read(uint8_t* out, size_t size) {
    while (size > 0) {
      const ssize_t got = ::recv(socket_.native_handle(), out, size, 0);
      if (got == 0) throw DataError("loader server " + address_ + " closed the connection");
      if (got < 0) {
        if (errno == EINTR) continue;
        throw DataError("reading from loader server " + address_ + ": " +
                        (errno == EAGAIN ? std::string("timed out") : std::strerror(errno)));
      }
      out += got;
      size -= static_cast<size_t>(got);
    }
  }

  void write(const uint8_t* data, size_t size) {
    while (size > 0) {
      const ssize_t sent = ::send(socket_.native_handle(), data, size, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) continue;
        throw DataError("writing to loader server " + address_ + ": " +
                        (errno == EAGAIN ? std::string("timed out") : std::strerror(errno)));
      }
      data += sent;
      size -= static_cast<size_t>(sent);
    }
  }

  void send(proto::Type type, const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> message;
    const auto header = proto::encode_header(type, static_cast<uint32_t>(payload.size()));
    message.insert(message.end(), header.begin(), header.end());
    message.insert(message.end(), payload.begin(), payload.end());
    write(message.data(), message.size());
  }

  // Reads a header; an Error message from the server is thrown as its text.
  proto::Header receive_header(proto::Type expected) {
    std::array<uint8_t, proto::kHeaderBytes> bytes{};
    read(bytes.data(), bytes.size());
    const proto::Header header = proto::decode_header(bytes.data(), address_);
    if (header.type == proto::Type::Error) {
      std::string text(header.length, '\0');
      read(reinterpret_cast<uint8_t*>(text.data()), text.size());
      throw DataError("loader server " + address_ + " refused: " + text);
    }
    if (header.type != expected)
      throw DataError("loader server " + address_ + " sent message type " +
                      std::to_string(static_cast<int>(header.type)) + " where " +
                      std::to_string(static_cast<int>(expected)) + " was due");
    return header;
  }

  std::vector<uint8_t> receive(proto::Type expected) {
    const proto::Header header = receive_header(expected);
    std::vector<uint8_t> payload(header.length);  // capped by decode_header
    read(payload.data(), payload.size());
    return payload;
  }

  // Unblocks a thread inside read() or write() (used on shutdown).
  void interrupt() { ::shutdown(socket_.native_handle(), SHUT_RDWR); }
  const std::string& address() const { return address_; }

 private:
  std::string address_;
  asio::io_context io_;
  tcp::socket socket_{io_};
};

// One server: its wire, its thread, and what became of it.
struct Link {
  std::unique_ptr<Wire> wire;
  proto::Welcome welcome;
  std::thread thread;
  bool alive = false;           // guarded by State::mutex
  std::string error;            // why it died
  int64_t skipped = 0;          // the server's latest skipped-records count
};

}  // namespace

struct ServiceLoader::State {
  ServiceOptions options;
  int64_t content_count = 0;  // from the servers' welcome
  int64_t start_sample = 0;
  std::vector<Link> links;

  mutable std::mutex mutex;                 // guards everything below and Link::alive/error/skipped
  std::condition_variable work_cv;          // links wait for batch numbers
  std::condition_variable ready_cv;         // next() waits for its batch
  bool stopping = false;
  int64_t issued = 0;                       // batch numbers handed to links so far
  std::set<int64_t> orphans;                // numbers of failed links, to hand out again
  int64_t consumed = 0;                     // batches next() has returned
  std::map<int64_t, ContentStyleBatch> ready;  // received, not yet consumed
  double wait_seconds = 0;

  ~State();
  void handshake(Link& link, const std::string& address);
  void check_same_data();
  void serve(Link& link);
  bool take(Link& link, std::deque<int64_t>& outstanding, std::vector<int64_t>& taken);
  ContentStyleBatch receive(Link& link, int64_t number);
  std::string servers_summary() const;
};

ServiceLoader::State::~State() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  work_cv.notify_all();
  for (Link& link : links)
    if (link.wire) link.wire->interrupt();
  for (Link& link : links) {
    try {
      if (link.thread.joinable()) link.thread.join();
    } catch (...) {
      // join() only fails on programming errors; a destructor must not throw.
    }
  }
}

// Challenge-response: the server's nonce, our HMAC of it under the token.
void ServiceLoader::State::handshake(Link& link, const std::string& address) {
  link.wire = std::make_unique<Wire>(address, options.timeout_s);
  const auto nonce = link.wire->receive(proto::Type::ServerHello);
  if (nonce.size() != proto::kNonceBytes) throw DataError("loader server " + address + " sent a short nonce");
  const auto mac = proto::proof(options.token, nonce.data());
  link.wire->send(proto::Type::ClientHello, std::vector<uint8_t>(mac.begin(), mac.end()));
  const auto welcome = link.wire->receive(proto::Type::Welcome);
  link.welcome = proto::decode_welcome(welcome.data(), welcome.size(), address);
  link.alive = true;
}

// Servers of one job must serve the same shards, or failover would change samples.
void ServiceLoader::State::check_same_data() {
  const Link* first = nullptr;
  for (const Link& link : links) {
    if (!link.alive) continue;
    if (!first) {
      first = &link;
      continue;
    }
    const auto& a = first->welcome;
    const auto& b = link.welcome;
    if (a.content_images != b.content_images || a.style_images != b.style_images ||
        a.content_fingerprint != b.content_fingerprint || a.style_fingerprint != b.style_fingerprint)
      throw DataError("loader servers " + first->wire->address() + " and " + link.wire->address() +
                      " serve different shards (image counts or fingerprints differ)");
  }
}

std::string ServiceLoader::State::servers_summary() const {
  std::string out;
  for (size_t i = 0; i < links.size(); ++i)
    out += (out.empty() ? "" : "; ") + options.servers[i] + " (" + (links[i].alive ? "ok" : links[i].error) + ")";
  return out;
}

// Under `mutex`: fills the link's pipeline with batch numbers, orphans first.
bool ServiceLoader::State::take(Link& link, std::deque<int64_t>& outstanding, std::vector<int64_t>& taken) {
  const auto depth = std::min<int64_t>(options.prefetch, link.welcome.queue_batches);
  while (static_cast<int64_t>(outstanding.size()) < depth) {
    int64_t number = 0;
    if (!orphans.empty()) {
      number = *orphans.begin();
      orphans.erase(orphans.begin());
    } else if (issued < consumed + options.prefetch) {
      number = issued++;
    } else {
      break;
    }
    outstanding.push_back(number);
    taken.push_back(number);
  }
  return !outstanding.empty();
}

ContentStyleBatch ServiceLoader::State::receive(Link& link, int64_t number) {
  const int64_t side = options.augment.crop_size;
  const int64_t count = options.batch_size;
  const proto::Header header = link.wire->receive_header(proto::Type::Batch);
  const uint64_t pixels = proto::batch_pixel_bytes(static_cast<uint64_t>(count), static_cast<uint64_t>(side));
  if (header.length != proto::kBatchHeaderBytes + pixels)
    throw DataError("loader server " + link.wire->address() + " sent a batch of " + std::to_string(header.length) +
                    " bytes, expected " + std::to_string(proto::kBatchHeaderBytes + pixels));
  std::vector<uint8_t> payload(header.length);
  link.wire->read(payload.data(), payload.size());
  proto::Reader r{payload.data(), proto::kBatchHeaderBytes, link.wire->address()};
  const uint64_t id = r.u64();
  const uint32_t got_count = r.u32();
  const uint32_t got_side = r.u32();
  const uint64_t skipped = r.u64();
  if (id != static_cast<uint64_t>(number) || got_count != count || got_side != side)
    throw DataError("loader server " + link.wire->address() + " answered batch " + std::to_string(id) +
                    " where batch " + std::to_string(number) + " was due");
  const int64_t first = detail::rank_first_sample(start_sample, number, count, options.rank, options.world_size);
  ContentStyleBatch batch;
  batch.content = detail::batch_tensor(count, side, options.pin_memory);
  batch.style = detail::batch_tensor(count, side, options.pin_memory);
  batch.start = cursor_at(first - options.rank * count, content_count);
  batch.first_sample = first;
  const uint8_t* content = payload.data() + proto::kBatchHeaderBytes;
  const uint8_t* style = content + pixels / 2;
  const int64_t sample_bytes = side * side * 3;
  for (int64_t i = 0; i < count; ++i) {
    detail::bytes_to_unit_chw(content + i * sample_bytes, side, batch.content.data_ptr<float>() + i * sample_bytes);
    detail::bytes_to_unit_chw(style + i * sample_bytes, side, batch.style.data_ptr<float>() + i * sample_bytes);
  }
  std::lock_guard<std::mutex> lock(mutex);
  link.skipped = static_cast<int64_t>(skipped);
  return batch;
}

// A link's thread: request, receive, repeat; on failure give the unanswered
// batch numbers back.
void ServiceLoader::State::serve(Link& link) {
  std::deque<int64_t> outstanding;  // requested, in the order the server answers
  try {
    for (;;) {
      std::vector<int64_t> taken;
      {
        std::unique_lock<std::mutex> lock(mutex);
        work_cv.wait(lock, [&] { return stopping || take(link, outstanding, taken); });
        if (stopping) return;
      }
      for (const int64_t number : taken) {
        proto::Request request;
        request.id = static_cast<uint64_t>(number);
        request.seed = options.seed;
        request.first =
            detail::rank_first_sample(start_sample, number, options.batch_size, options.rank, options.world_size);
        request.count = static_cast<uint32_t>(options.batch_size);
        request.load_size = static_cast<uint32_t>(options.augment.load_size);
        request.crop_size = static_cast<uint32_t>(options.augment.crop_size);
        request.flip = options.augment.flip;
        link.wire->send(proto::Type::Request, proto::encode(request));
      }
      ContentStyleBatch batch = receive(link, outstanding.front());
      {
        std::lock_guard<std::mutex> lock(mutex);
        ready.emplace(outstanding.front(), std::move(batch));
        outstanding.pop_front();
      }
      ready_cv.notify_all();
    }
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mutex);
    link.alive = false;
    link.error = e.what();
    orphans.insert(outstanding.begin(), outstanding.end());
    if (!stopping) spdlog::warn("loader server {} failed ({}); its batches go to the others", link.wire->address(), e.what());
  }
  work_cv.notify_all();
  ready_cv.notify_all();
}

ServiceLoader::ServiceLoader(ServiceOptions options, Cursor start) : state_(std::make_unique<State>()) {
  State& s = *state_;
  if (options.servers.empty()) throw DataError("data.servers lists no loader server");
  if (options.token.empty()) throw DataError("the loader service needs a non-empty job token");
  if (options.batch_size < 1 || options.prefetch < 1 || options.world_size < 1 || options.rank < 0 ||
      options.rank >= options.world_size)
    throw DataError("loader service options need batch_size, prefetch, world_size >= 1 and 0 <= rank < world_size");
  detail::check_augment_options(options.augment);
  detail::check_pinning(options.pin_memory);
  s.options = std::move(options);
  s.links.resize(s.options.servers.size());
  for (size_t i = 0; i < s.links.size(); ++i) {
    try {
      s.handshake(s.links[i], s.options.servers[i]);
    } catch (const std::exception& e) {
      s.links[i].error = e.what();
      spdlog::warn("loader server {} unusable: {}", s.options.servers[i], e.what());
    }
  }
  s.check_same_data();
  const Link* live = nullptr;
  for (const Link& link : s.links)
    if (link.alive && !live) live = &link;
  if (!live) throw DataError("no loader server could be used: " + s.servers_summary());
  s.content_count = static_cast<int64_t>(live->welcome.content_images);
  if (start.epoch < 0 || start.index < 0 || start.index >= s.content_count)
    throw DataError("start cursor (epoch " + std::to_string(start.epoch) + ", index " + std::to_string(start.index) +
                    ") is outside the servers' " + std::to_string(s.content_count) + " content images");
  s.start_sample = sample_at(start, s.content_count);
  for (Link& link : s.links)
    if (link.alive) link.thread = std::thread([&s, &link] { s.serve(link); });
}

ServiceLoader::~ServiceLoader() = default;

ContentStyleBatch ServiceLoader::next() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mutex);
  const auto begin = std::chrono::steady_clock::now();
  const auto any_alive = [&] {
    for (const Link& link : s.links)
      if (link.alive) return true;
    return false;
  };
  s.ready_cv.wait(lock, [&] { return s.ready.count(s.consumed) > 0 || !any_alive(); });
  s.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  const auto found = s.ready.find(s.consumed);
  if (found == s.ready.end())
    throw DataError("no loader server left for batch " + std::to_string(s.consumed) + ": " + s.servers_summary());
  ContentStyleBatch batch = std::move(found->second);
  s.ready.erase(found);
  ++s.consumed;
  lock.unlock();
  s.work_cv.notify_all();
  return batch;
}

Cursor ServiceLoader::cursor() const {
  const State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  return cursor_at(s.start_sample + s.consumed * s.options.batch_size * s.options.world_size, s.content_count);
}

int64_t ServiceLoader::skipped_files() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  int64_t most = 0;
  for (const Link& link : state_->links) most = std::max(most, link.skipped);
  return most;
}

double ServiceLoader::wait_seconds() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->wait_seconds;
}

int64_t ServiceLoader::live_servers() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  int64_t alive = 0;
  for (const Link& link : state_->links) alive += link.alive ? 1 : 0;
  return alive;
}

std::string read_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot read token file '" + path + "'");
  std::string token((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) throw DataError("token file '" + path + "' is empty");
  return token;
}

}  // namespace atelier::data
