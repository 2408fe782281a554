// The loader service over real TCP on 127.0.0.1: the same batches as the
// folder loader, resume from a cursor, concurrent clients, authentication
// without sending the token, length caps, bounded memory for a client that
// stops reading, and failover when a server dies mid-stream.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "data/protocol.h"
#include "service_fixture.h"
#include "wire.h"

namespace atelier::data_tests {
namespace {

namespace proto = data::protocol;

std::vector<data::ContentStyleBatch> take(data::BatchSource& source, int count) {
  std::vector<data::ContentStyleBatch> out;
  for (int i = 0; i < count; ++i) out.push_back(source.next());
  return out;
}

// Forwards one TCP connection to 127.0.0.1:target and records every byte
// the client sends and receives.
class RecordingProxy {
 public:
  explicit RecordingProxy(int target) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(listener_, 1), 0);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this, target] {
      client_ = ::accept(listener_, nullptr, nullptr);
      server_ = connect_to(target);
      std::thread up([this] { pump(client_, server_, sent_); });
      pump(server_, client_, received_);
      up.join();
    });
  }
  ~RecordingProxy() {
    ::shutdown(listener_, SHUT_RDWR);
    ::shutdown(client_, SHUT_RDWR);
    ::shutdown(server_, SHUT_RDWR);
    thread_.join();
    for (int fd : {listener_, client_, server_}) ::close(fd);
  }
  int port() const { return port_; }
  std::string sent() {
    std::lock_guard<std::mutex> lock(mutex_);
    return sent_;
  }
  std::string received() {
    std::lock_guard<std::mutex> lock(mutex_);
    return received_;
  }

 private:
  void pump(int from, int to, std::string& record) {
    char buffer[65536];
    for (;;) {
      const ssize_t got = ::recv(from, buffer, sizeof buffer, 0);
      if (got <= 0) break;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        record.append(buffer, static_cast<size_t>(got));
      }
      if (::send(to, buffer, static_cast<size_t>(got), MSG_NOSIGNAL) != got) break;
    }
    ::shutdown(to, SHUT_WR);
  }
  int listener_ = -1, client_ = -1, server_ = -1;
  int port_ = 0;
  std::mutex mutex_;
  std::string sent_, received_;  // client -> server, server -> client
  std::thread thread_;
};



TEST_F(ServiceTest, ServiceBatchesEqualFolderBatchesBitForBit) {
  shard_all();
  auto& server = start_server();
  data::PrefetchLoader folder(folder_options());
  data::ServiceLoader service(service_options({address(server)}));
  const auto expected = take(folder, 10);  // 20 samples: past the end of the 7-image epoch twice
  const auto got = take(service, 10);
  for (int i = 0; i < 10; ++i) expect_same_batch(got[static_cast<size_t>(i)], expected[static_cast<size_t>(i)], i);
  EXPECT_TRUE(service.cursor() == folder.cursor());
}

TEST_F(ServiceTest, ServiceResumedAtACursorYieldsExactlyTheRemainder) {
  shard_all();
  auto& server = start_server();
  data::PrefetchLoader folder(folder_options());
  const auto all = take(folder, 8);
  data::ServiceLoader first(service_options({address(server)}));
  take(first, 3);
  const data::Cursor cursor = first.cursor();
  data::ServiceLoader resumed(service_options({address(server)}), cursor);
  for (int i = 3; i < 8; ++i) expect_same_batch(resumed.next(), all[static_cast<size_t>(i)], i);
}

TEST_F(ServiceTest, TwoRanksAreServedConcurrentlyWithDisjointSlices) {
  shard_all();
  auto& server = start_server();
  auto folder_options_for = [&](int64_t rank) {
    auto o = folder_options();
    o.rank = rank;
    o.world_size = 2;
    return o;
  };
  data::PrefetchLoader folder0(folder_options_for(0)), folder1(folder_options_for(1));
  auto options = service_options({address(server)});
  options.world_size = 2;
  data::ServiceLoader rank0(options);
  options.rank = 1;
  data::ServiceLoader rank1(options);
  for (int i = 0; i < 6; ++i) {
    const auto a = rank0.next();
    const auto b = rank1.next();
    expect_same_batch(a, folder0.next(), i);
    expect_same_batch(b, folder1.next(), i);
  }
  EXPECT_GE(server.stats().connections, 2);
}

// Both decode JPEGs through TurboJPEG at a reduced scale (here 1/8: 512 px
// photographs for load size 24), one from files, one from shard records.
TEST_F(ServiceTest, JpegPhotographsEqualTheFolderBitForBit) {
  const fs::path photos = "/usr/share/doc/opencv-doc/examples/data";
  fs::remove_all(path("content"));
  fs::create_directories(path("content"));
  for (const char* name : {"baboon.jpg", "fruits.jpg", "building.jpg"}) fs::copy_file(photos / name, path("content") / name);
  shard_all();
  auto& server = start_server();
  data::PrefetchLoader folder(folder_options());
  data::ServiceLoader service(service_options({address(server)}));
  for (int i = 0; i < 3; ++i) expect_same_batch(service.next(), folder.next(), i);
}

TEST_F(ServiceTest, CorruptRecordIsSkippedAndCountedLikeACorruptFile) {
  shard_all();
  // The same image broken in the folder and in the shard: both loaders
  // replace it by the same next image of the permutation.
  const data::ShardReader reader(path("shards/content").string());
  const auto& record = reader.record(3);
  auto bytes = read_bytes(path("shards/content") / record.shard);
  bytes[static_cast<size_t>(record.offset + 16 + static_cast<int64_t>(record.key.size()) + 30)] ^= 0x5A;
  write_bytes(path("shards/content") / record.shard, bytes);
  write_bytes(path("content") / record.key, std::vector<unsigned char>(100, 0x42));
  auto& server = start_server();
  data::PrefetchLoader folder(folder_options());
  data::ServiceLoader service(service_options({address(server)}));
  for (int i = 0; i < 8; ++i) expect_same_batch(service.next(), folder.next(), i);
  EXPECT_EQ(folder.skipped_files(), 1);
  EXPECT_EQ(service.skipped_files(), 1);
  EXPECT_EQ(server.stats().skipped_records, 1);
}

TEST_F(ServiceTest, WrongTokenIsRefusedNamingTheServer) {
  shard_all();
  auto& server = start_server();
  auto options = service_options({address(server)});
  options.token = "not-the-job-token";
  try {
    data::ServiceLoader loader(options);
    FAIL() << "a wrong token was accepted";
  } catch (const data::DataError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("authentication failed"), std::string::npos) << message;
    EXPECT_NE(message.find(address(server)), std::string::npos) << message;
  }
  EXPECT_EQ(server.stats().refused, 1);
  EXPECT_EQ(server.stats().batches_sent, 0);
}

TEST_F(ServiceTest, TokenNeverCrossesTheWire) {
  shard_all();
  auto& server = start_server();
  RecordingProxy proxy(server.port());
  {
    data::ServiceLoader loader(service_options({"127.0.0.1:" + std::to_string(proxy.port())}));
    take(loader, 2);
  }
  const std::string sent = proxy.sent(), received = proxy.received();
  EXPECT_GT(sent.size(), proto::kHeaderBytes + proto::kProofBytes) << "the proxy saw no handshake";
  EXPECT_GT(received.size(), size_t{2 * 2 * 16 * 16 * 3}) << "the proxy saw no batch";
  EXPECT_EQ(sent.find(kToken), std::string::npos) << "the client sent the token";
  EXPECT_EQ(received.find(kToken), std::string::npos);
  EXPECT_EQ(sent.find("job-token"), std::string::npos) << "the client sent part of the token";
}

TEST_F(ServiceTest, OversizeMessageIsRefusedAndTheConnectionClosed) {
  shard_all();
  auto& server = start_server();
  const int fd = connect_to(server.port());
  EXPECT_EQ(read_message(fd).first.type, proto::Type::ServerHello);
  // A hello claiming 4 GiB - 1: refused from the header alone.
  const auto header = proto::encode_header(proto::Type::ClientHello, 0xFFFFFFFFu);
  send_all(fd, std::vector<uint8_t>(header.begin(), header.end()));
  const auto reply = read_message(fd);
  EXPECT_EQ(reply.first.type, proto::Type::Error);
  const std::string text(reply.second.begin(), reply.second.end());
  EXPECT_NE(text.find("exceeds its cap"), std::string::npos) << text;
  uint8_t byte = 0;
  EXPECT_FALSE(recv_all(fd, &byte, 1)) << "the server kept the connection open";
  ::close(fd);
  EXPECT_EQ(server.stats().oversize, 1);

  // After authentication a request is capped at the control size too.
  const int again = authenticated_socket(server.port());
  const auto big = proto::encode_header(proto::Type::Request, proto::kMaxControlBytes + 1);
  send_all(again, std::vector<uint8_t>(big.begin(), big.end()));
  EXPECT_EQ(read_message(again).first.type, proto::Type::Error);
  EXPECT_FALSE(recv_all(again, &byte, 1));
  ::close(again);
  EXPECT_EQ(server.stats().oversize, 2);
}

TEST_F(ServiceTest, ClientThatStopsReadingCannotGrowTheServerQueue) {
  shard_all();
  const int64_t queue = 3;
  auto& server = start_server(queue);
  const int fd = authenticated_socket(server.port());
  // 100 requests of 8 samples at 64 px (about 20 MB of replies, more than
  // loopback socket buffers hold), and then no reading at all.
  const int requests = 100;
  for (int i = 0; i < requests; ++i) {
    proto::Request r;
    r.id = static_cast<uint64_t>(i);
    r.seed = 1;
    r.first = 8 * i;
    r.count = 8;
    r.load_size = 64;
    r.crop_size = 64;
    send_all(fd, message(proto::Type::Request, proto::encode(r)));
  }
  ASSERT_TRUE(eventually([&] { return server.stats().queued_batches == queue; }));
  // Once the kernel buffers are full the server holds `queue` replies and
  // reads no further requests.
  data::ServerStats stalled;
  ASSERT_TRUE(eventually([&] {
    const auto before = server.stats().batches_sent;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    stalled = server.stats();
    return stalled.batches_sent == before && stalled.queued_batches >= queue;
  }));
  EXPECT_LT(stalled.batches_sent, requests - queue) << "the replies should not fit in the socket buffers";
  EXPECT_EQ(stalled.queued_batches, queue);
  EXPECT_LE(stalled.peak_client_queue, queue);
  // Reading again drains everything, in order, nothing lost.
  for (int i = 0; i < requests; ++i) {
    const auto reply = read_message(fd);
    ASSERT_EQ(reply.first.type, proto::Type::Batch) << "reply " << i;
    proto::Reader r{reply.second.data(), proto::kBatchHeaderBytes, "server"};
    EXPECT_EQ(r.u64(), static_cast<uint64_t>(i));
  }
  EXPECT_LE(server.stats().peak_client_queue, queue);
  ::close(fd);
}

TEST_F(ServiceTest, KilledServerFailsOverAndTheBatchesStayIdentical) {
  shard_all();
  // Queues of 1 keep a request in flight at each server all the time.
  auto& first = start_server(1);
  auto& second = start_server(1);
  data::PrefetchLoader folder(folder_options());
  const auto expected = take(folder, 12);
  data::ServiceLoader service(service_options({address(first), address(second)}));
  std::vector<data::ContentStyleBatch> got = take(service, 4);
  EXPECT_EQ(service.live_servers(), 2);
  first.stop();
  for (int i = 4; i < 12; ++i) got.push_back(service.next());
  EXPECT_EQ(service.live_servers(), 1);
  for (int i = 0; i < 12; ++i) expect_same_batch(got[static_cast<size_t>(i)], expected[static_cast<size_t>(i)], i);
  // The server counts a batch once its write completes, which may be after
  // the client has read it: wait for the count, boundedly.
  EXPECT_TRUE(eventually([&] { return second.stats().batches_sent > 6; }))
      << "the second server should have taken over (it sent " << second.stats().batches_sent << ")";

  second.stop();
  try {
    for (int i = 0; i < 10; ++i) service.next();
    FAIL() << "batches kept coming with every server stopped";
  } catch (const data::DataError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("no loader server left"), std::string::npos) << message;
    EXPECT_NE(message.find(address(first)), std::string::npos) << message;
    EXPECT_NE(message.find(address(second)), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace atelier::data_tests
