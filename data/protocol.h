// Private to data/: the loader service's wire format (docs/loader-protocol.md
// is the reader's version). Every message is a 12-byte header, then
// `length` payload bytes:
//
//   u32 magic 0x444C5441 ("ATLD" in memory) | u16 version (1) | u16 type | u32 length
//
// All integers are little-endian. A receiver checks magic, version, type and
// length (against the cap for that type, before allocating) and closes the
// connection on any violation.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace atelier::data::protocol {

constexpr uint32_t kMagic = 0x444C5441;
constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderBytes = 12;
constexpr size_t kNonceBytes = 32;
constexpr size_t kProofBytes = 32;  // HMAC-SHA256
constexpr uint32_t kMaxControlBytes = 4096;          // every message except Batch
constexpr uint32_t kMaxBatchBytes = uint32_t{1} << 30;  // one Batch (content + style pixels)
// The work of one Request: its images resized to load_size before the crop
// (content + style, 8-bit RGB). The crop bounds what is sent, not what is
// computed: 512 samples at load 4096, crop 8 kept a worker busy for a minute.
constexpr uint64_t kMaxResizedBytes = uint64_t{4} << 30;
constexpr uint32_t kMaxSamplesPerRequest = 4096;
constexpr uint32_t kMaxSide = 8192;

enum class Type : uint16_t {
  ServerHello = 1,  // S->C on connect: nonce[32]
  ClientHello = 2,  // C->S: HMAC-SHA256(token, "atelier-loader-v1" || nonce)[32]
  Welcome = 3,      // S->C: u64 content images, u64 style images, u32 content fingerprint,
                    //       u32 style fingerprint, u32 queue_batches
  Request = 4,      // C->S: u64 id, u64 seed, i64 first sample, u32 count, u32 load_size,
                    //       u32 crop_size, u8 flip
  Batch = 5,        // S->C: u64 id, u32 count, u32 side, u64 skipped records, then
                    //       content uint8 [count, side, side, 3], style the same
  Error = 6,        // S->C: UTF-8 text; the server closes the connection after it
};

// The connection broke the protocol; the message names the peer.
struct ProtocolError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A length over its cap: refused from the header, before any allocation.
struct LengthError : ProtocolError {
  using ProtocolError::ProtocolError;
};

struct Header {
  Type type = Type::Error;
  uint32_t length = 0;  // payload bytes
};

// The largest payload a message of `type` may have.
uint32_t max_length(Type type);

std::array<uint8_t, kHeaderBytes> encode_header(Type type, uint32_t length);
// Throws ProtocolError naming `peer` on a bad magic, version or type, and
// LengthError on a length over max_length(type).
Header decode_header(const uint8_t* bytes, const std::string& peer);

// Little-endian payload building and parsing.
struct Writer {
  std::vector<uint8_t> bytes;
  void u8(uint8_t v) { bytes.push_back(v); }
  void u32(uint32_t v);
  void u64(uint64_t v);
};
struct Reader {
  const uint8_t* data;
  size_t size;
  std::string peer;  // for messages
  size_t at = 0;
  uint8_t u8();
  uint32_t u32();
  uint64_t u64();
  // Throws unless every byte was read: a payload must have its exact size.
  void finish() const;
};

struct Request {
  uint64_t id = 0;         // echoed in the Batch
  uint64_t seed = 0;       // the run's seed (permutations and crops)
  int64_t first = 0;       // first global sample number
  uint32_t count = 0;      // samples
  uint32_t load_size = 0;  // AugmentOptions
  uint32_t crop_size = 0;
  bool flip = false;
};
std::vector<uint8_t> encode(const Request& request);
Request decode_request(const uint8_t* data, size_t size, const std::string& peer);

struct Welcome {
  uint64_t content_images = 0;
  uint64_t style_images = 0;
  uint32_t content_fingerprint = 0;  // ShardReader::fingerprint
  uint32_t style_fingerprint = 0;
  uint32_t queue_batches = 0;        // requests the server accepts per client at once
};
std::vector<uint8_t> encode(const Welcome& welcome);
Welcome decode_welcome(const uint8_t* data, size_t size, const std::string& peer);

constexpr size_t kBatchHeaderBytes = 24;  // u64 id, u32 count, u32 side, u64 skipped

// Pixel bytes of one Batch payload after its batch header.
inline uint64_t batch_pixel_bytes(uint64_t count, uint64_t side) { return 2 * count * side * side * 3; }

// HMAC-SHA256 of the nonce under the token (OpenSSL): proves the token
// without sending it, and differs for every connection.
std::array<uint8_t, kProofBytes> proof(const std::string& token, const uint8_t* nonce);
// Constant-time comparison.
bool same_proof(const uint8_t* a, const uint8_t* b);
// Cryptographically random bytes (OpenSSL RAND_bytes).
std::array<uint8_t, kNonceBytes> random_nonce();

}  // namespace atelier::data::protocol
