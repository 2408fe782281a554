// Raw loopback sockets speaking (or breaking) the loader protocol by hand,
// for the service tests that misbehave on purpose.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

#include "data/protocol.h"
#include "service_fixture.h"
#include "tests/support/socket_io.h"

namespace atelier::data_tests {

namespace proto = data::protocol;

inline int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  return fd;
}

inline void send_all(int fd, const std::vector<uint8_t>& bytes) {
  ASSERT_TRUE(testing_support::send_all(fd, bytes.data(), bytes.size())) << "the server closed the connection";
}

using testing_support::recv_all;

inline std::vector<uint8_t> message(proto::Type type, const std::vector<uint8_t>& payload) {
  const auto header = proto::encode_header(type, static_cast<uint32_t>(payload.size()));
  std::vector<uint8_t> out(header.size() + payload.size());
  std::copy(header.begin(), header.end(), out.begin());
  std::copy(payload.begin(), payload.end(), out.begin() + static_cast<std::ptrdiff_t>(header.size()));
  return out;
}

// Reads one message; its header type and payload.
inline std::pair<proto::Header, std::vector<uint8_t>> read_message(int fd) {
  std::array<uint8_t, proto::kHeaderBytes> header{};
  if (!recv_all(fd, header.data(), header.size())) return {proto::Header{proto::Type::Error, 0}, {}};
  const auto h = proto::decode_header(header.data(), "server");
  std::vector<uint8_t> payload(h.length);
  EXPECT_TRUE(recv_all(fd, payload.data(), payload.size()));
  return {h, payload};
}

// The client side of the handshake by hand, for tests that misbehave after it.
inline int authenticated_socket(int port) {
  const int fd = connect_to(port);
  const auto hello = read_message(fd);
  EXPECT_EQ(hello.first.type, proto::Type::ServerHello);
  const auto mac = proto::proof(kToken, hello.second.data());
  send_all(fd, message(proto::Type::ClientHello, std::vector<uint8_t>(mac.begin(), mac.end())));
  EXPECT_EQ(read_message(fd).first.type, proto::Type::Welcome);
  return fd;
}

// Waits for a server counter to reach a value; the deadline only guards
// against a hang, the assertions are about the counters.
template <typename Condition>
inline bool eventually(Condition condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace atelier::data_tests
