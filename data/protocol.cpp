// The loader service's wire format (see protocol.h).
#include "data/protocol.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

namespace atelier::data::protocol {
namespace {

constexpr char kProofContext[] = "atelier-loader-v1";

std::string type_name(uint16_t type) { return "message type " + std::to_string(type); }

}  // namespace

uint32_t max_length(Type type) {
  switch (type) {
    case Type::ServerHello: return kNonceBytes;
    case Type::ClientHello: return kProofBytes;
    case Type::Batch: return kMaxBatchBytes;
    default: return kMaxControlBytes;
  }
}

std::array<uint8_t, kHeaderBytes> encode_header(Type type, uint32_t length) {
  const auto t = static_cast<uint16_t>(type);
  std::array<uint8_t, kHeaderBytes> out{};
  for (int i = 0; i < 4; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(kMagic >> (8 * i));
  out[4] = kVersion & 0xFF;
  out[5] = kVersion >> 8;
  out[6] = t & 0xFF;
  out[7] = static_cast<uint8_t>(t >> 8);
  for (int i = 0; i < 4; ++i) out[static_cast<size_t>(8 + i)] = static_cast<uint8_t>(length >> (8 * i));
  return out;
}

Header decode_header(const uint8_t* bytes, const std::string& peer) {
  Reader r{bytes, kHeaderBytes, peer};
  const uint32_t magic = r.u32();
  const uint16_t version = static_cast<uint16_t>(r.u8() | (r.u8() << 8));
  const uint16_t type = static_cast<uint16_t>(r.u8() | (r.u8() << 8));
  const uint32_t length = r.u32();
  if (magic != kMagic) throw ProtocolError(peer + ": not an atelier loader message (bad magic)");
  if (version != kVersion)
    throw ProtocolError(peer + ": protocol version " + std::to_string(version) + ", this build speaks " +
                        std::to_string(kVersion));
  if (type < static_cast<uint16_t>(Type::ServerHello) || type > static_cast<uint16_t>(Type::Error))
    throw ProtocolError(peer + ": unknown " + type_name(type));
  const Header header{static_cast<Type>(type), length};
  if (length > max_length(header.type))
    throw LengthError(peer + ": " + type_name(type) + " of " + std::to_string(length) +
                        " bytes exceeds its cap of " + std::to_string(max_length(header.type)));
  return header;
}

void Writer::u32(uint32_t v) {
  for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void Writer::u64(uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

uint8_t Reader::u8() {
  if (at + 1 > size) throw ProtocolError(peer + ": message ends early");
  return data[at++];
}
uint32_t Reader::u32() {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(u8()) << (8 * i);
  return v;
}
uint64_t Reader::u64() {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(u8()) << (8 * i);
  return v;
}
void Reader::finish() const {
  if (at != size)
    throw ProtocolError(peer + ": message has " + std::to_string(size - at) + " unexpected trailing bytes");
}

std::vector<uint8_t> encode(const Request& q) {
  Writer w;
  w.u64(q.id);
  w.u64(q.seed);
  w.u64(static_cast<uint64_t>(q.first));
  w.u32(q.count);
  w.u32(q.load_size);
  w.u32(q.crop_size);
  w.u8(q.flip ? 1 : 0);
  return w.bytes;
}

Request decode_request(const uint8_t* data, size_t size, const std::string& peer) {
  Reader r{data, size, peer};
  Request q;
  q.id = r.u64();
  q.seed = r.u64();
  q.first = static_cast<int64_t>(r.u64());
  q.count = r.u32();
  q.load_size = r.u32();
  q.crop_size = r.u32();
  q.flip = r.u8() != 0;
  r.finish();
  if (q.first < 0 || q.count < 1 || q.count > kMaxSamplesPerRequest || q.crop_size < 1 ||
      q.load_size < q.crop_size || q.load_size > kMaxSide ||
      batch_pixel_bytes(q.count, q.crop_size) + kBatchHeaderBytes > kMaxBatchBytes ||
      batch_pixel_bytes(q.count, q.load_size) > kMaxResizedBytes)
    throw ProtocolError(peer + ": request out of bounds (first " + std::to_string(q.first) + ", count " +
                        std::to_string(q.count) + ", load " + std::to_string(q.load_size) + ", crop " +
                        std::to_string(q.crop_size) + ")");
  return q;
}

std::vector<uint8_t> encode(const Welcome& m) {
  Writer w;
  w.u64(m.content_images);
  w.u64(m.style_images);
  w.u32(m.content_fingerprint);
  w.u32(m.style_fingerprint);
  w.u32(m.queue_batches);
  return w.bytes;
}

Welcome decode_welcome(const uint8_t* data, size_t size, const std::string& peer) {
  Reader r{data, size, peer};
  Welcome m;
  m.content_images = r.u64();
  m.style_images = r.u64();
  m.content_fingerprint = r.u32();
  m.style_fingerprint = r.u32();
  m.queue_batches = r.u32();
  r.finish();
  if (m.content_images < 1 || m.style_images < 1 || m.queue_batches < 1)
    throw ProtocolError(peer + ": welcome with an empty image list or queue");
  return m;
}

std::array<uint8_t, kProofBytes> proof(const std::string& token, const uint8_t* nonce) {
  std::vector<uint8_t> message(kProofContext, kProofContext + sizeof kProofContext - 1);
  message.insert(message.end(), nonce, nonce + kNonceBytes);
  std::array<uint8_t, kProofBytes> out{};
  unsigned int length = 0;
  if (!HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()), message.data(), message.size(), out.data(),
            &length) ||
      length != kProofBytes)
    throw std::runtime_error("OpenSSL HMAC-SHA256 failed");
  return out;
}

bool same_proof(const uint8_t* a, const uint8_t* b) { return CRYPTO_memcmp(a, b, kProofBytes) == 0; }

std::array<uint8_t, kNonceBytes> random_nonce() {
  std::array<uint8_t, kNonceBytes> nonce{};
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1)
    throw std::runtime_error("OpenSSL RAND_bytes failed: no randomness for the loader handshake");
  return nonce;
}

}  // namespace atelier::data::protocol
