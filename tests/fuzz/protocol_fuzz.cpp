// Fuzz target: the loader service's frame decoding as the server and the
// client meet it from an unauthenticated peer: a 12-byte header, then the
// payload as a Request and as a Welcome. Only ProtocolError may come out.
#include <cstddef>
#include <cstdint>

#include "data/protocol.h"

namespace protocol = atelier::data::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= protocol::kHeaderBytes) {
    try {
      const auto header = protocol::decode_header(data, "fuzz");
      if (header.length > protocol::max_length(header.type)) __builtin_trap();  // decode_header checks the cap
    } catch (const protocol::ProtocolError&) {
    }
  }
  try {
    protocol::decode_request(data, size, "fuzz");
  } catch (const protocol::ProtocolError&) {
  }
  try {
    protocol::decode_welcome(data, size, "fuzz");
  } catch (const protocol::ProtocolError&) {
  }
  return 0;
}
