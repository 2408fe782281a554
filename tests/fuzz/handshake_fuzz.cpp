// Fuzz target: the loader service as a TCP peer meets it. A real
// LoaderServer on loopback (two tiny shard folders, started once) gets one
// connection per input: when the first byte is odd the target first
// authenticates as a trainer would, so the rest reaches the request path;
// otherwise the rest is all the server hears from an unauthenticated peer.
// The rest is sent raw, the write side shut, and every reply read until the
// server closes. The server must refuse what is wrong without crashing (ASan
// and UBSan watch its threads too), and go on accepting connections.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "data/data.h"
#include "data/protocol.h"
#include "tests/support/socket_io.h"

namespace fs = std::filesystem;
namespace data = atelier::data;
namespace proto = atelier::data::protocol;

namespace {

constexpr const char* kToken = "fuzz-token";

data::LoaderServer& server() {
  static const std::unique_ptr<data::LoaderServer> instance = [] {
    spdlog::set_level(spdlog::level::err);  // a warning per refused input would drown the fuzzer's output
    const auto root = fs::temp_directory_path() / ("atelier-fuzz-handshake-" + std::to_string(getpid()));
    for (const char* what : {"content", "style"}) {
      fs::create_directories(root / what);
      for (int i = 0; i < 2; ++i)
        data::write_image_file((root / what / ("image-" + std::to_string(i) + ".png")).string(),
                               torch::full({12, 16, 3}, 40 * (i + 1), torch::kUInt8));
      data::ShardOptions options;
      options.input = (root / what).string();
      options.output = (root / "shards" / what).string();
      data::write_shards(options);
    }
    data::ServerOptions options;
    options.content = (root / "shards" / "content").string();
    options.style = (root / "shards" / "style").string();
    options.host = "127.0.0.1";
    options.token = kToken;
    options.workers = 1;
    options.queue_batches = 2;
    options.frame_timeout_s = 0.05;  // a stalled input costs 50 ms, not 30 s
    return std::make_unique<data::LoaderServer>(options);
  }();
  return *instance;
}

// A finding: the reason on stderr, then abort() as libFuzzer expects.
[[noreturn]] void finding(const char* why) {
  std::fprintf(stderr, "handshake_fuzz: %s\n", why);
  std::abort();
}

using atelier::testing_support::recv_all;
using atelier::testing_support::send_all;

// ServerHello, our proof, Welcome: false if the server did not play along.
bool authenticate(int fd) {
  std::array<uint8_t, proto::kHeaderBytes + proto::kNonceBytes> hello{};
  if (!recv_all(fd, hello.data(), hello.size())) return false;
  const auto mac = proto::proof(kToken, hello.data() + proto::kHeaderBytes);
  const auto header = proto::encode_header(proto::Type::ClientHello, proto::kProofBytes);
  std::vector<uint8_t> message(header.begin(), header.end());
  message.insert(message.end(), mac.begin(), mac.end());
  if (!send_all(fd, message.data(), message.size())) return false;
  std::array<uint8_t, proto::kHeaderBytes> welcome{};
  if (!recv_all(fd, welcome.data(), welcome.size())) return false;
  const auto length = proto::decode_header(welcome.data(), "server").length;
  std::vector<uint8_t> payload(length);
  return recv_all(fd, payload.data(), payload.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int port = server().port();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval limit{30, 0};  // a server that neither answers nor closes is a hang: fail loudly
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    finding("the server stopped accepting connections");
  if ((data[0] & 1) && !authenticate(fd)) finding("a client holding the token was not welcomed");
  send_all(fd, data + 1, size - 1);
  ::shutdown(fd, SHUT_WR);
  std::vector<uint8_t> sink(1 << 16);
  for (;;) {
    const ssize_t got = ::recv(fd, sink.data(), sink.size(), 0);
    if (got == 0) break;
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) finding("the server neither answered nor closed in 30 s");
      break;  // reset: the server closed with our bytes unread
    }
  }
  ::close(fd);
  return 0;
}
