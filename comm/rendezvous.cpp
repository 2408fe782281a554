// torchrun-style bootstrap: a star over TCP (Boost.Asio) centred on rank 0
// at MASTER_ADDR:MASTER_PORT. Every rank sends (rank, blob); rank 0 answers
// everyone with all blobs in rank order. Every wait has the deadline.
#include <boost/asio.hpp>
#include <thread>

#include "comm/comm.h"

namespace atelier::comm {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Lengths are bounded so a stray client cannot make us allocate gigabytes.
constexpr uint64_t kMaxBlob = 64u << 20;

struct Context {
  asio::io_context io;
  Clock::time_point deadline;
  int rank = 0;
};

// Runs the pending operation until it completes or the deadline passes; on
// timeout cancels it (by closing `socket`) and throws naming `what`.
template <typename Closable>
void await(Context& ctx, boost::system::error_code& ec, Closable& socket, const std::string& what) {
  ctx.io.restart();
  ctx.io.run_until(ctx.deadline);
  if (ec == asio::error::would_block) {
    boost::system::error_code ignored;
    socket.close(ignored);
    ctx.io.restart();
    ctx.io.run();
    throw CommError("rendezvous: rank " + std::to_string(ctx.rank) + " timed out " + what);
  }
  if (ec) throw CommError("rendezvous: rank " + std::to_string(ctx.rank) + " failed " + what + ": " + ec.message());
}

template <typename Buffers>
void read(Context& ctx, tcp::socket& socket, const Buffers& buffers, const std::string& what) {
  boost::system::error_code ec = asio::error::would_block;
  asio::async_read(socket, buffers, [&](const boost::system::error_code& e, size_t) { ec = e; });
  await(ctx, ec, socket, what);
}

template <typename Buffers>
void write(Context& ctx, tcp::socket& socket, const Buffers& buffers, const std::string& what) {
  boost::system::error_code ec = asio::error::would_block;
  asio::async_write(socket, buffers, [&](const boost::system::error_code& e, size_t) { ec = e; });
  await(ctx, ec, socket, what);
}

void send_blob(Context& ctx, tcp::socket& socket, const std::string& blob, const std::string& what) {
  const uint64_t size = blob.size();
  write(ctx, socket, std::vector<asio::const_buffer>{asio::buffer(&size, sizeof size), asio::buffer(blob)}, what);
}

std::string receive_blob(Context& ctx, tcp::socket& socket, const std::string& what) {
  uint64_t size = 0;
  read(ctx, socket, asio::buffer(&size, sizeof size), what);
  if (size > kMaxBlob) throw CommError("rendezvous: " + what + ": blob of " + std::to_string(size) + " bytes");
  std::string blob(size, '\0');
  read(ctx, socket, asio::buffer(blob), what);
  return blob;
}

std::vector<std::string> serve(Context& ctx, const Environment& env, const std::string& blob) {
  tcp::endpoint endpoint(asio::ip::make_address(env.master_addr), static_cast<uint16_t>(env.master_port));
  tcp::acceptor acceptor(ctx.io, endpoint.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(endpoint);
  acceptor.listen();
  std::vector<std::string> blobs(static_cast<size_t>(env.world_size));
  std::vector<std::unique_ptr<tcp::socket>> peers(static_cast<size_t>(env.world_size));
  blobs[0] = blob;
  for (int joined = 1; joined < env.world_size; ++joined) {
    auto socket = std::make_unique<tcp::socket>(ctx.io);
    boost::system::error_code ec = asio::error::would_block;
    acceptor.async_accept(*socket, [&](const boost::system::error_code& e) { ec = e; });
    await(ctx, ec, acceptor, "waiting for " + std::to_string(env.world_size - joined) + " rank(s) to connect");
    uint32_t rank = 0;
    read(ctx, *socket, asio::buffer(&rank, sizeof rank), "reading a peer's rank");
    if (rank == 0 || rank >= static_cast<uint32_t>(env.world_size) || peers[rank])
      throw CommError("rendezvous: a peer claims rank " + std::to_string(rank) + ", which is invalid or taken");
    blobs[rank] = receive_blob(ctx, *socket, "reading rank " + std::to_string(rank) + "'s blob");
    peers[rank] = std::move(socket);
  }
  for (int r = 1; r < env.world_size; ++r)
    for (const auto& b : blobs) send_blob(ctx, *peers[r], b, "sending the blobs to rank " + std::to_string(r));
  return blobs;
}

std::vector<std::string> join(Context& ctx, const Environment& env, const std::string& blob) {
  tcp::resolver resolver(ctx.io);
  const auto endpoints = resolver.resolve(env.master_addr, std::to_string(env.master_port));
  tcp::socket socket(ctx.io);
  const std::string master = env.master_addr + ":" + std::to_string(env.master_port);
  // Rank 0 may not listen yet: retry refused connections until the deadline.
  for (;;) {
    boost::system::error_code ec = asio::error::would_block;
    asio::async_connect(socket, endpoints, [&](const boost::system::error_code& e, const tcp::endpoint&) { ec = e; });
    try {
      await(ctx, ec, socket, "connecting to rank 0 at " + master);
      break;
    } catch (const CommError&) {
      if (Clock::now() >= ctx.deadline) throw;
      socket = tcp::socket(ctx.io);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  const uint32_t rank = static_cast<uint32_t>(env.rank);
  write(ctx, socket, asio::buffer(&rank, sizeof rank), "sending its rank to " + master);
  send_blob(ctx, socket, blob, "sending its blob to " + master);
  std::vector<std::string> blobs;
  for (int r = 0; r < env.world_size; ++r)
    blobs.push_back(receive_blob(ctx, socket, "receiving rank " + std::to_string(r) + "'s blob from " + master));
  return blobs;
}

}  // namespace

std::vector<std::string> rendezvous_all_gather(const Environment& env, const std::string& blob,
                                               std::chrono::milliseconds timeout) {
  if (env.world_size == 1) return {blob};
  if (env.master_addr.empty() || env.master_port == 0)
    throw CommError("rendezvous: MASTER_ADDR and MASTER_PORT must be set for " + std::to_string(env.world_size) +
                    " ranks");
  Context ctx;
  ctx.deadline = Clock::now() + timeout;
  ctx.rank = env.rank;
  try {
    return env.rank == 0 ? serve(ctx, env, blob) : join(ctx, env, blob);
  } catch (const boost::system::system_error& e) {
    throw CommError("rendezvous: rank " + std::to_string(env.rank) + " at " + env.master_addr + ":" +
                    std::to_string(env.master_port) + ": " + e.what());
  }
}

}  // namespace atelier::comm
