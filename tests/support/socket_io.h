// Whole-buffer send and receive on a connected socket, without gtest, for
// the tests that speak the loader protocol by hand and for the fuzz targets.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace atelier::testing_support {

// Sends all `size` bytes; false when the peer is gone.
inline bool send_all(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t sent = ::send(fd, data, size, MSG_NOSIGNAL);
    if (sent <= 0) return false;
    data += sent;
    size -= static_cast<size_t>(sent);
  }
  return true;
}

// Reads exactly `size` bytes; false on end of stream or an error.
inline bool recv_all(int fd, uint8_t* out, size_t size) {
  while (size > 0) {
    const ssize_t got = ::recv(fd, out, size, 0);
    if (got <= 0) return false;
    out += got;
    size -= static_cast<size_t>(got);
  }
  return true;
}

}  // namespace atelier::testing_support
