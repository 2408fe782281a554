// LoaderServer (see data.h, docs/loader-protocol.md): Boost.Asio accepts and
// talks to clients on one io_context; samples are decoded and augmented on a
// separate pool of worker threads by the same Sampler the folder loader uses.
//
// Memory per client is bounded by `queue_batches`: a request is read only
// while the client has fewer than that many requests being built or waiting
// to be written, so a client that stops reading stalls its own connection
// (the kernel's socket buffers fill, our writes wait) and nothing else.
#include "data/data.h"
#include "data/jpeg.h"
#include "data/pixels.h"
#include "data/protocol.h"
#include "data/sampler.h"

#include <boost/asio.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace atelier::data {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
namespace proto = protocol;

// The records of a shard folder as the sampler sees them, decoded like the
// folder loader decodes files (decode_for_training), so both give the same pixels.
class ShardImages : public detail::ImageList {
 public:
  explicit ShardImages(const std::string& folder) : reader_(folder) {}
  int64_t size() const override { return reader_.size(); }
  std::string name(int64_t index) const override { return reader_.folder() + ":" + reader_.record(index).key; }
  cv::Mat decode(int64_t index, int64_t load_size, std::string& why) const override {
    std::vector<unsigned char> bytes;
    if (!reader_.read(index, bytes, why)) return {};
    return detail::decode_for_training(bytes, load_size, why);
  }
  const ShardReader& reader() const { return reader_; }

 private:
  ShardReader reader_;
};

// One client's samplers, rebuilt when its seed changes.
struct Samplers {
  uint64_t seed = 0;
  std::unique_ptr<detail::Sampler> content;
  std::unique_ptr<detail::Sampler> style;
};

// A request of one client: built on a worker, then written in arrival order.
struct Pending {
  bool ready = false;                           // `message` holds the whole reply
  std::shared_ptr<std::vector<uint8_t>> message;  // header + payload
};

class Connection;

// Everything the server's threads share.
struct ServerCore {
  ServerOptions options;
  ShardImages content;
  ShardImages style;
  detail::BadImages bad;  // records that failed, both lists (names carry the folder)
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::thread_pool workers;
  std::vector<std::thread> io_threads;
  std::atomic<bool> stopping{false};
  int port = 0;                                       // bound port, kept for after stop()
  std::mutex connections_mutex;                       // guards `connections`
  std::vector<std::weak_ptr<Connection>> connections;  // for shutting down

  std::atomic<int64_t> connections_count{0}, refused{0}, oversize{0}, malformed{0}, stalled{0}, batches_sent{0},
      queued{0}, peak_queue{0};

  explicit ServerCore(ServerOptions o)
      : options(std::move(o)),
        content(options.content),
        style(options.style),
        workers(static_cast<size_t>(options.workers)) {}
  void accept();
  void shut_down();
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(ServerCore& server, tcp::socket socket)
      : server_(server), socket_(std::move(socket)), strand_(asio::make_strand(server.io)), deadline_(strand_) {
    boost::system::error_code ignored;
    peer_ = socket_.remote_endpoint(ignored).address().to_string() + ":" +
            std::to_string(socket_.remote_endpoint(ignored).port());
  }
  void start();
  void close();
  // Closes the socket at once; only when no thread runs the io_context.
  void close_now();

 private:
  void send(proto::Type type, const std::vector<uint8_t>& payload, bool then_close);
  void read_header();
  void peer_finished();
  void read_header_bytes();
  void header_bytes(size_t got);
  void read_payload(proto::Header header);
  // The frame deadline (ServerOptions::frame_timeout_s): armed at connect
  // and at a message's first byte once authenticated, disarmed when the
  // handshake or the message is complete.
  void arm_deadline(const std::string& stall);
  void disarm_deadline();
  void handle(proto::Header header);
  void handle_request(const proto::Request& request);
  void build(const proto::Request& request, const std::shared_ptr<Pending>& pending);
  void drop(const std::shared_ptr<Pending>& pending);
  void write_next();
  void fail(const std::string& why);
  void malformed(const std::string& why) {
    ++server_.malformed;
    fail(why);
  }
  std::shared_ptr<Samplers> samplers_for(uint64_t seed);

  ServerCore& server_;
  tcp::socket socket_;
  asio::strand<asio::io_context::executor_type> strand_;  // serialises everything below
  std::string peer_;
  std::array<uint8_t, proto::kNonceBytes> nonce_{};
  bool authenticated_ = false;
  std::array<uint8_t, proto::kHeaderBytes> header_{};
  size_t header_have_ = 0;      // bytes of header_ read so far
  asio::steady_timer deadline_;
  uint64_t deadline_id_ = 0;    // expiries of an earlier arming are ignored
  std::vector<uint8_t> payload_;
  std::deque<std::shared_ptr<Pending>> queue_;  // requests in arrival order
  std::deque<std::shared_ptr<std::vector<uint8_t>>> control_;  // hello, welcome, error: before batches
  bool writing_ = false;
  bool reading_ = false;       // a read is in flight
  bool peer_finished_ = false;  // the client's side ended: answer what is queued, then close
  // Set when the connection is closing: workers stop building its batches,
  // which nobody would receive, instead of keeping other clients waiting.
  std::atomic<bool> abandoned_{false};
  bool close_after_ = false;   // close once control_ is written
  std::mutex samplers_mutex_;            // guards samplers_ (workers use it)
  std::shared_ptr<Samplers> samplers_;  // for the seed of the latest request
};

void Connection::start() {
  nonce_ = proto::random_nonce();
  send(proto::Type::ServerHello, std::vector<uint8_t>(nonce_.begin(), nonce_.end()), false);
  arm_deadline("did not authenticate");
  read_header();
}

void Connection::arm_deadline(const std::string& stall) {
  const uint64_t id = ++deadline_id_;
  const double seconds = server_.options.frame_timeout_s;
  deadline_.expires_after(std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
  deadline_.async_wait(
      asio::bind_executor(strand_, [self = shared_from_this(), id, stall, seconds](boost::system::error_code ec) {
        if (ec || id != self->deadline_id_ || self->close_after_) return;
        ++self->server_.stalled;
        char limit[32];
        std::snprintf(limit, sizeof limit, "%g", seconds);
        self->fail(self->peer_ + ": " + stall + " within " + limit + " s (frame_timeout_s)");
      }));
}

void Connection::disarm_deadline() {
  ++deadline_id_;
  deadline_.cancel();
}

void Connection::close() {
  abandoned_ = true;
  asio::post(strand_, [self = shared_from_this()] {
    self->disarm_deadline();  // its handler holds the connection alive
    // Requests not yet written never will be: out of the server's count.
    self->server_.queued -= static_cast<int64_t>(self->queue_.size());
    self->queue_.clear();
    boost::system::error_code ignored;
    self->socket_.shutdown(tcp::socket::shutdown_both, ignored);
    self->socket_.close(ignored);
  });
}

void Connection::close_now() {
  abandoned_ = true;
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

void Connection::fail(const std::string& why) {
  abandoned_ = true;  // only the Error is written now
  spdlog::warn("loader server: closing {}: {}", peer_, why);
  std::vector<uint8_t> text(why.begin(), why.end());
  if (text.size() > proto::kMaxControlBytes) text.resize(proto::kMaxControlBytes);
  send(proto::Type::Error, text, true);
}

void Connection::send(proto::Type type, const std::vector<uint8_t>& payload, bool then_close) {
  const auto header = proto::encode_header(type, static_cast<uint32_t>(payload.size()));
  auto message = std::make_shared<std::vector<uint8_t>>(header.size() + payload.size());
  std::copy(header.begin(), header.end(), message->begin());
  std::copy(payload.begin(), payload.end(), message->begin() + static_cast<std::ptrdiff_t>(header.size()));
  control_.push_back(std::move(message));
  close_after_ = close_after_ || then_close;
  write_next();
}

// The client closed its side (or the read failed): what it asked for is
// still written, then the connection closes. Reading again would wait
// forever: Asio's reactor does not report an end of stream twice.
void Connection::peer_finished() {
  peer_finished_ = true;
  read_header();
}

void Connection::read_header() {
  if (reading_ || close_after_ || server_.stopping) return;
  if (peer_finished_) {
    if (queue_.empty() && control_.empty() && !writing_) close();
    return;
  }
  // Backpressure: no new request is read while this client's queue is full.
  if (static_cast<int64_t>(queue_.size()) >= server_.options.queue_batches) return;
  read_header_bytes();
}

// Piecewise, so that the first byte of a message starts its deadline.
void Connection::read_header_bytes() {
  reading_ = true;
  socket_.async_read_some(
      asio::buffer(header_.data() + header_have_, header_.size() - header_have_),
      asio::bind_executor(strand_, [self = shared_from_this()](boost::system::error_code ec, size_t got) {
        self->reading_ = false;
        if (ec) return self->peer_finished();
        self->header_bytes(got);
      }));
}

void Connection::header_bytes(size_t got) {
  if (header_have_ == 0 && authenticated_) arm_deadline("stalled mid-message: it did not arrive whole");
  header_have_ += got;
  if (header_have_ < header_.size()) return read_header_bytes();  // the rest of the header, whatever the queue
  header_have_ = 0;
  proto::Header header;
  try {
    header = proto::decode_header(header_.data(), peer_);
  } catch (const proto::LengthError& e) {
    ++server_.oversize;
    return fail(e.what());
  } catch (const proto::ProtocolError& e) {
    return malformed(e.what());
  }
  read_payload(header);
}

void Connection::read_payload(proto::Header header) {
  const proto::Type expected = authenticated_ ? proto::Type::Request : proto::Type::ClientHello;
  if (header.type != expected)
    return malformed(peer_ + ": expected message type " + std::to_string(static_cast<int>(expected)) + ", got " +
                std::to_string(static_cast<int>(header.type)));
  // The length was checked against the type's cap in decode_header.
  payload_.resize(header.length);
  reading_ = true;
  asio::async_read(socket_, asio::buffer(payload_),
                   asio::bind_executor(strand_, [self = shared_from_this(), header](boost::system::error_code ec,
                                                                                   size_t) {
                     self->reading_ = false;
                     if (ec) return self->peer_finished();
                     try {
                       self->handle(header);
                     } catch (const proto::ProtocolError& e) {
                       self->malformed(e.what());
                     }
                   }));
}

void Connection::handle(proto::Header header) {
  if (header.type == proto::Type::ClientHello) {
    if (payload_.size() != proto::kProofBytes ||
        !proto::same_proof(payload_.data(), proto::proof(server_.options.token, nonce_.data()).data())) {
      ++server_.refused;
      return fail("authentication failed: the client does not hold this job's token");
    }
    authenticated_ = true;
    disarm_deadline();
    const proto::Welcome welcome{static_cast<uint64_t>(server_.content.size()),
                                 static_cast<uint64_t>(server_.style.size()),
                                 server_.content.reader().fingerprint(), server_.style.reader().fingerprint(),
                                 static_cast<uint32_t>(server_.options.queue_batches)};
    send(proto::Type::Welcome, proto::encode(welcome), false);
  } else {
    handle_request(proto::decode_request(payload_.data(), payload_.size(), peer_));
    disarm_deadline();
  }
  read_header();
}

void Connection::handle_request(const proto::Request& request) {
  if (server_.stopping) return;  // the worker pool may already be joined
  auto pending = std::make_shared<Pending>();
  queue_.push_back(pending);
  ++server_.queued;
  int64_t peak = server_.peak_queue;
  const auto size = static_cast<int64_t>(queue_.size());
  while (size > peak && !server_.peak_queue.compare_exchange_weak(peak, size)) {
  }
  asio::post(server_.workers, [self = shared_from_this(), request, pending] { self->build(request, pending); });
}

std::shared_ptr<Samplers> Connection::samplers_for(uint64_t seed) {
  std::lock_guard<std::mutex> lock(samplers_mutex_);
  if (!samplers_ || samplers_->seed != seed) {
    auto fresh = std::make_shared<Samplers>();
    fresh->seed = seed;
    fresh->content = std::make_unique<detail::Sampler>(server_.content, "content", seed, server_.bad);
    fresh->style = std::make_unique<detail::Sampler>(server_.style, "style", seed, server_.bad);
    samplers_ = std::move(fresh);
  }
  return samplers_;
}

// On a worker thread: decode and augment every sample straight into the reply.
void Connection::build(const proto::Request& request, const std::shared_ptr<Pending>& pending) {
  if (abandoned_) return drop(pending);
  const uint64_t sample_bytes = uint64_t{request.crop_size} * request.crop_size * 3;
  const uint64_t pixels = proto::batch_pixel_bytes(request.count, request.crop_size);
  auto message = std::make_shared<std::vector<uint8_t>>();
  std::string error;
  try {
    const auto header = proto::encode_header(proto::Type::Batch,
                                             static_cast<uint32_t>(proto::kBatchHeaderBytes + pixels));
    message->reserve(proto::kHeaderBytes + proto::kBatchHeaderBytes + pixels);
    message->assign(header.begin(), header.end());
    message->resize(proto::kHeaderBytes + proto::kBatchHeaderBytes + pixels);
    uint8_t* content = message->data() + proto::kHeaderBytes + proto::kBatchHeaderBytes;
    uint8_t* style = content + pixels / 2;
    const AugmentOptions augment{request.load_size, request.crop_size, request.flip};
    const std::shared_ptr<Samplers> s = samplers_for(request.seed);
    for (uint32_t i = 0; i < request.count && !server_.stopping && !abandoned_; ++i) {
      s->content->draw(request.first + i, augment, content + i * sample_bytes);
      s->style->draw(request.first + i, augment, style + i * sample_bytes);
    }
    proto::Writer w;
    w.u64(request.id);
    w.u32(request.count);
    w.u32(request.crop_size);
    w.u64(static_cast<uint64_t>(server_.bad.count()));
    std::copy(w.bytes.begin(), w.bytes.end(), message->begin() + proto::kHeaderBytes);
  } catch (const std::exception& e) {
    error = e.what();
  }
  // A loop cut short by a stop or a close left a partial batch: never sent.
  if (abandoned_ || server_.stopping) return drop(pending);
  asio::post(strand_, [self = shared_from_this(), pending, message, error] {
    if (!error.empty()) return self->fail(error);
    pending->message = message;
    pending->ready = true;
    self->write_next();
  });
}

// A request of a closing connection: out of its queue and the server's count, never built or sent.
void Connection::drop(const std::shared_ptr<Pending>& pending) {
  asio::post(strand_, [self = shared_from_this(), pending] {
    auto& queue = self->queue_;
    const auto at = std::find(queue.begin(), queue.end(), pending);
    if (at == queue.end()) return;
    queue.erase(at);
    --self->server_.queued;
  });
}

void Connection::write_next() {
  if (writing_) return;
  std::shared_ptr<std::vector<uint8_t>> message;
  std::shared_ptr<Pending> batch;  // the request answered, when this is a batch
  if (!control_.empty()) {
    message = control_.front();
  } else if (close_after_) {
    return close();
  } else if (!queue_.empty() && queue_.front()->ready) {
    batch = queue_.front();
    message = batch->message;
  } else {
    return;
  }
  writing_ = true;
  asio::async_write(socket_, asio::buffer(*message),
                    asio::bind_executor(strand_, [self = shared_from_this(), batch](boost::system::error_code ec,
                                                                                   size_t) {
                      self->writing_ = false;
                      if (!batch) {
                        self->control_.pop_front();
                      } else if (!self->queue_.empty() && self->queue_.front() == batch) {
                        // (close() may have emptied the queue while this was written)
                        self->queue_.pop_front();
                        --self->server_.queued;
                      }
                      if (ec) return self->close();
                      if (batch) ++self->server_.batches_sent;
                      self->write_next();
                      self->read_header();  // room again in the queue
                    }));
}

void ServerCore::accept() {
  acceptor.async_accept(asio::make_strand(io), [this](boost::system::error_code ec, tcp::socket socket) {
    if (ec || stopping) return;
    socket.set_option(tcp::no_delay(true));
    auto connection = std::make_shared<Connection>(*this, std::move(socket));
    {
      std::lock_guard<std::mutex> lock(connections_mutex);
      connections.erase(std::remove_if(connections.begin(), connections.end(),
                                       [](const std::weak_ptr<Connection>& c) { return c.expired(); }),
                        connections.end());
      connections.push_back(connection);
    }
    ++connections_count;
    asio::post(io, [connection] { connection->start(); });
    accept();
  });
}

void ServerCore::shut_down() {
  if (stopping.exchange(true)) return;
  asio::post(io, [this] {
    boost::system::error_code ignored;
    acceptor.close(ignored);
  });
  {
    std::lock_guard<std::mutex> lock(connections_mutex);
    for (auto& weak : connections)
      if (auto connection = weak.lock()) connection->close();
  }
  // Workers finish the sample they are on (build() checks `stopping`).
  workers.join();
  io.stop();
  for (auto& thread : io_threads)
    if (thread.joinable()) thread.join();
  // No thread runs the io_context now: close every socket here, so clients
  // see the end at once rather than when the io_context is destroyed.
  std::lock_guard<std::mutex> lock(connections_mutex);
  for (auto& weak : connections)
    if (auto connection = weak.lock()) connection->close_now();
}

}  // namespace

struct LoaderServer::State : ServerCore {
  using ServerCore::ServerCore;
};

LoaderServer::LoaderServer(ServerOptions options) {
  if (options.workers < 1 || options.io_threads < 1 || options.queue_batches < 1)
    throw DataError("loader server needs workers, io_threads and queue_batches >= 1");
  if (options.token.empty()) throw DataError("loader server needs a non-empty job token");
  if (!(options.frame_timeout_s > 0)) throw DataError("loader server needs frame_timeout_s > 0");
  detail::keep_opencv_single_threaded();
  state_ = std::make_unique<State>(std::move(options));
  State& s = *state_;
  try {
    const tcp::endpoint endpoint(asio::ip::make_address(s.options.host), static_cast<uint16_t>(s.options.port));
    s.acceptor.open(endpoint.protocol());
    s.acceptor.set_option(tcp::acceptor::reuse_address(true));
    s.acceptor.bind(endpoint);
    s.acceptor.listen();
    s.port = s.acceptor.local_endpoint().port();
  } catch (const boost::system::system_error& e) {
    throw DataError("loader server cannot listen on " + s.options.host + ":" + std::to_string(s.options.port) +
                    ": " + e.code().message());
  }
  s.accept();
  for (int64_t i = 0; i < s.options.io_threads; ++i) s.io_threads.emplace_back([&s] { s.io.run(); });
}

LoaderServer::~LoaderServer() {
  try {
    stop();
  } catch (...) {
    // stop() only joins threads; a destructor must not throw.
  }
}

int LoaderServer::port() const { return state_->port; }

void LoaderServer::stop() { state_->shut_down(); }

ServerStats LoaderServer::stats() const {
  const State& s = *state_;
  ServerStats out;
  out.connections = s.connections_count;
  out.refused = s.refused;
  out.oversize = s.oversize;
  out.malformed = s.malformed;
  out.stalled = s.stalled;
  out.batches_sent = s.batches_sent;
  out.queued_batches = s.queued;
  out.peak_client_queue = s.peak_queue;
  out.skipped_records = s.bad.count();
  return out;
}

}  // namespace atelier::data
