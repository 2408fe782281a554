// The loader service under malformed traffic (issue 24 M3): while a
// well-behaved client streams its batches, raw loopback connections send
// bounded floods of broken frames (bad magic, version and type, oversized
// and truncated frames, messages out of order, payloads of the wrong size
// or out of bounds, a wrong proof, random bytes) and connections stall
// mid-frame. The server refuses each with an Error naming the reason and
// counts it, closes the connection, never crashes, and the good client gets
// exactly the folder loader's batches: no sample lost or repeated.
#include <sys/time.h>

#include <atomic>
#include <cerrno>
#include <random>
#include <thread>

#include "service_fixture.h"
#include "wire.h"

namespace atelier::data_tests {
namespace {

// A bad connection: what it sends, whether it authenticates first, and
// what the server's Error must say.
struct Abuse {
  std::string name;
  bool authenticate;
  std::vector<uint8_t> bytes;
  std::string reason;
};

std::vector<uint8_t> header_bytes(uint32_t magic, uint16_t version, uint16_t type, uint32_t length) {
  proto::Writer w;
  w.u32(magic);
  w.u8(static_cast<uint8_t>(version & 0xff));
  w.u8(static_cast<uint8_t>(version >> 8));
  w.u8(static_cast<uint8_t>(type & 0xff));
  w.u8(static_cast<uint8_t>(type >> 8));
  w.u32(length);
  return w.bytes;
}

std::vector<uint8_t> request_bytes(uint32_t count, uint32_t load, uint32_t crop) {
  proto::Request r;
  r.seed = 1;
  r.count = count;
  r.load_size = load;
  r.crop_size = crop;
  return message(proto::Type::Request, proto::encode(r));  // encode() does not check bounds: the server must
}

std::vector<Abuse> abuses() {
  const auto type = [](proto::Type t) { return static_cast<uint16_t>(t); };
  std::vector<uint8_t> garbage(64);
  std::mt19937 random(7);
  for (auto& b : garbage) b = static_cast<uint8_t>(random());
  return {
      {"bad magic", false, header_bytes(0x12345678, 1, type(proto::Type::ClientHello), 32), "bad magic"},
      {"bad version", false, header_bytes(proto::kMagic, 9, type(proto::Type::ClientHello), 32), "protocol version 9"},
      {"unknown type", false, header_bytes(proto::kMagic, 1, 77, 0), "unknown"},
      {"oversized hello", false, header_bytes(proto::kMagic, 1, type(proto::Type::ClientHello), 0xFFFFFFF0u),
       "exceeds its cap"},
      {"request before hello", false, request_bytes(4, 24, 16), "expected message type 2, got 4"},
      {"wrong proof", false, message(proto::Type::ClientHello, std::vector<uint8_t>(32, 0xAB)), "authentication failed"},
      {"short proof", false, message(proto::Type::ClientHello, std::vector<uint8_t>(5, 1)), "authentication failed"},
      {"random bytes", false, garbage, "bad magic"},
      {"second hello", true, message(proto::Type::ClientHello, std::vector<uint8_t>(32, 0)),
       "expected message type 4, got 2"},
      {"server-only type", true, message(proto::Type::Batch, std::vector<uint8_t>(30, 0)),
       "expected message type 4, got 5"},
      {"request of the wrong size", true, message(proto::Type::Request, std::vector<uint8_t>(20, 0)),
       "message ends early"},
      {"request with trailing bytes", true, [] {
         auto m = request_bytes(4, 24, 16);
         m.push_back(0);
         m[8] = static_cast<uint8_t>(m[8] + 1);  // length + 1 (little-endian low byte)
         return m;
       }(),
       "unexpected trailing bytes"},
      {"zero samples", true, request_bytes(0, 24, 16), "request out of bounds"},
      {"crop above load", true, request_bytes(2, 16, 24), "request out of bounds"},
      {"side above the cap", true, request_bytes(1, 9000, 16), "request out of bounds"},
      {"batch above the cap", true, request_bytes(4096, 8192, 8192), "request out of bounds"},
      {"resizing above the cap", true, request_bytes(512, 4096, 8), "request out of bounds"},
      {"oversized request", true, header_bytes(proto::kMagic, 1, type(proto::Type::Request), proto::kMaxControlBytes + 1),
       "exceeds its cap"},
  };
}

// Sends the abuse on a fresh connection; the server's Error text ("" when
// it sent none) and whether it then closed the connection.
std::pair<std::string, bool> commit(const Abuse& abuse, int port) {
  const int fd = abuse.authenticate ? authenticated_socket(port) : connect_to(port);
  if (!abuse.authenticate) {
    EXPECT_EQ(read_message(fd).first.type, proto::Type::ServerHello);
  }
  send_all(fd, abuse.bytes);
  const auto reply = read_message(fd);
  uint8_t byte = 0;
  const bool closed = !recv_all(fd, &byte, 1);
  ::close(fd);
  if (reply.first.type != proto::Type::Error) return {"", closed};
  return {std::string(reply.second.begin(), reply.second.end()), closed};
}

}  // namespace

TEST_F(ServiceTest, MalformedTrafficIsRefusedWhileAWellBehavedClientIsServedExactly) {
  shard_all();
  auto& server = start_server(/*queue=*/4, /*workers=*/2, /*frame_timeout_s=*/0.5);
  const int batches = 40;  // 80 samples: the 7-image content epoch more than 11 times
  data::PrefetchLoader folder(folder_options());
  std::vector<data::ContentStyleBatch> expected;
  for (int i = 0; i < batches; ++i) expected.push_back(folder.next());

  std::vector<data::ContentStyleBatch> got;
  std::atomic<bool> done{false};
  std::thread good([&] {
    data::ServiceLoader service(service_options({address(server)}));
    for (int i = 0; i < batches; ++i) got.push_back(service.next());
    done = true;
  });

  const auto list = abuses();
  const int rounds = 3;
  int64_t oversize = 0, refused = 0;
  for (int round = 0; round < rounds; ++round) {
    for (const auto& abuse : list) {
      const auto [error, closed] = commit(abuse, server.port());
      EXPECT_NE(error.find(abuse.reason), std::string::npos) << abuse.name << ": the server said '" << error << "'";
      EXPECT_TRUE(closed) << abuse.name << ": the server kept the connection open";
      oversize += abuse.reason == "exceeds its cap";
      refused += abuse.reason == "authentication failed";
    }
  }

  // Stalls: silent before authenticating, half a header after it, a whole
  // header and half its payload. Each gets an Error naming the stall.
  const auto stall = [&](bool authenticate, std::vector<uint8_t> bytes) {
    const int fd = authenticate ? authenticated_socket(server.port()) : connect_to(server.port());
    if (!authenticate) {
      EXPECT_EQ(read_message(fd).first.type, proto::Type::ServerHello);
    }
    send_all(fd, bytes);
    const auto reply = read_message(fd);  // blocks until the server gives up on the frame
    ::close(fd);
    return reply.first.type == proto::Type::Error ? std::string(reply.second.begin(), reply.second.end()) : "";
  };
  const auto request = request_bytes(2, 24, 16);
  EXPECT_NE(stall(false, {}).find("did not authenticate within 0.5 s"), std::string::npos);
  EXPECT_NE(stall(true, std::vector<uint8_t>(request.begin(), request.begin() + 5)).find("stalled mid-message"),
            std::string::npos);
  EXPECT_NE(stall(true, std::vector<uint8_t>(request.begin(), request.begin() + proto::kHeaderBytes + 10))
                .find("stalled mid-message"),
            std::string::npos);

  good.join();
  ASSERT_TRUE(done);
  ASSERT_EQ(got.size(), expected.size());
  for (int i = 0; i < batches; ++i) expect_same_batch(got[static_cast<size_t>(i)], expected[static_cast<size_t>(i)], i);

  const auto stats = server.stats();
  const auto bad = static_cast<int64_t>(list.size()) * rounds;
  EXPECT_EQ(stats.oversize, oversize);
  EXPECT_EQ(stats.refused, refused);
  EXPECT_EQ(stats.malformed, bad - oversize - refused);
  EXPECT_EQ(stats.stalled, 3);
  EXPECT_GE(stats.connections, bad + 3 + 1);
}

TEST_F(ServiceTest, AnIdleAuthenticatedClientIsNotAStall) {
  shard_all();
  auto& server = start_server(/*queue=*/4, /*workers=*/2, /*frame_timeout_s=*/0.2);
  const int fd = authenticated_socket(server.port());
  // Quiet between messages for longer than the frame timeout, as a trainer
  // is while it checkpoints: still served.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  send_all(fd, request_bytes(2, 24, 16));
  const auto reply = read_message(fd);
  EXPECT_EQ(reply.first.type, proto::Type::Batch);
  ::close(fd);
  EXPECT_EQ(server.stats().stalled, 0);
}

// A client that asks and then closes its side still gets every batch it asked
// for, and then the server closes the connection: it used to read again after
// the end of stream, which Asio never completes, and kept the connection (and
// its socket) until the server stopped. Found by tests/fuzz/handshake_fuzz.cpp.
TEST_F(ServiceTest, AClientThatClosesItsSideGetsItsBatchesAndThenTheEnd) {
  shard_all();
  auto& server = start_server();
  for (const int requests : {1, 3}) {
    const int fd = authenticated_socket(server.port());
    timeval limit{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    for (int i = 0; i < requests; ++i) send_all(fd, request_bytes(2, 24, 16));
    ::shutdown(fd, SHUT_WR);
    for (int i = 0; i < requests; ++i) EXPECT_EQ(read_message(fd).first.type, proto::Type::Batch) << i;
    uint8_t byte = 0;
    EXPECT_EQ(::recv(fd, &byte, 1, 0), 0) << "the server neither closed nor said more (errno " << errno << ")";
    ::close(fd);
  }
}

// A client refused with requests still queued: the server forgets them
// (its queued count returns to 0) and its workers stop building batches
// nobody will read, instead of holding up every other client. Found by
// tests/fuzz/handshake_fuzz.cpp: a refused client's expensive requests kept
// the next client waiting past the fuzzer's limit.
TEST_F(ServiceTest, ARefusedClientsQueuedRequestsAreDropped) {
  shard_all();
  auto& server = start_server(/*queue=*/4, /*workers=*/1);
  const int fd = authenticated_socket(server.port());
  std::vector<uint8_t> bytes;
  for (int i = 0; i < 4; ++i) {
    const auto request = request_bytes(16, 256, 256);
    bytes.insert(bytes.end(), request.begin(), request.end());
  }
  const std::vector<uint8_t> garbage(proto::kHeaderBytes, 0x5a);  // bad magic: refused
  bytes.insert(bytes.end(), garbage.begin(), garbage.end());
  send_all(fd, bytes);
  for (int i = 0; i < 5; ++i)
    if (read_message(fd).first.type == proto::Type::Error) break;
  uint8_t byte = 0;
  EXPECT_EQ(::recv(fd, &byte, 1, 0), 0);
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return server.stats().queued_batches == 0; }))
      << server.stats().queued_batches << " requests of a closed connection still queued";
  // The server still serves the next client.
  const int next = authenticated_socket(server.port());
  send_all(next, request_bytes(2, 24, 16));
  EXPECT_EQ(read_message(next).first.type, proto::Type::Batch);
  ::close(next);
}

}  // namespace atelier::data_tests
