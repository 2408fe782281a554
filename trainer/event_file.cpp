// TensorBoard event files: TFRecord framing around hand-encoded Event protobufs.
// Field numbers follow tensorflow/core/util/event.proto and
// tensorflow/core/framework/summary.proto.
#include "trainer/event_file.h"

#include <unistd.h>

#include <boost/crc.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <stdexcept>
#include <string_view>
#include <utility>

namespace atelier::trainer {

uint32_t crc32c(const void* data, size_t size) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data, size);
  return crc.checksum();
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

namespace {

// Protobuf wire types we write or skip. Groups (3, 4) are deprecated and
// never appear in Event, so the reader rejects them as malformed.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// Field numbers of the messages we encode.
namespace event_field {
constexpr uint32_t kWallTime = 1, kStep = 2, kFileVersion = 3, kSummary = 5;
}
namespace summary_field {
constexpr uint32_t kValue = 1;
}
namespace value_field {
constexpr uint32_t kTag = 1, kSimpleValue = 2, kImage = 4;
}
namespace image_field {
constexpr uint32_t kHeight = 1, kWidth = 2, kColorspace = 3, kEncoded = 4;
}

constexpr char kFileVersion[] = "brain.Event:2";

// ---------------------------------------------------------------------------
// Encoding

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

void put_key(std::string& out, uint32_t field, WireType type) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | type);
}

// int32 and int64 fields: negative values are sign-extended to ten bytes, as protobuf does.
void put_int(std::string& out, uint32_t field, int64_t value) {
  put_key(out, field, kVarint);
  put_varint(out, static_cast<uint64_t>(value));
}

void put_double(std::string& out, uint32_t field, double value) {
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, kFixed64);
  put_le(out, bits, 8);
}

void put_float(std::string& out, uint32_t field, float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, kFixed32);
  put_le(out, bits, 4);
}

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

// Event{wall_time, step, summary{value}} around one serialized Summary.Value.
std::string summary_event(double wall_time, int64_t step, const std::string& value) {
  std::string summary;
  put_bytes(summary, summary_field::kValue, value);
  std::string event;
  put_double(event, event_field::kWallTime, wall_time);
  put_int(event, event_field::kStep, step);
  put_bytes(event, event_field::kSummary, summary);
  return event;
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// ---------------------------------------------------------------------------
// Decoding

// A record whose bytes are intact (CRCs match) but do not parse as an Event.
struct MalformedProto : std::runtime_error {
  using std::runtime_error::runtime_error;
};

uint64_t load_le(const char* p, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return value;
}

// Walks the fields of one serialized message; every read is bounds-checked.
class FieldReader {
 public:
  explicit FieldReader(std::string_view bytes) : rest_(bytes) {}

  bool done() const { return rest_.empty(); }

  // Reads a field key; returns {field number, wire type}.
  std::pair<uint32_t, uint32_t> key() {
    const uint64_t key = varint();
    const uint64_t field = key >> 3;
    if (field == 0 || field > 0x1FFFFFFF) throw MalformedProto("invalid field number");
    return {static_cast<uint32_t>(field), static_cast<uint32_t>(key & 7)};
  }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const uint8_t byte = static_cast<uint8_t>(take(1)[0]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    throw MalformedProto("varint longer than ten bytes");
  }

  uint64_t fixed64() { return load_le(take(8).data(), 8); }
  uint32_t fixed32() { return static_cast<uint32_t>(load_le(take(4).data(), 4)); }

  std::string_view bytes() {
    const uint64_t size = varint();
    if (size > rest_.size()) throw MalformedProto("length-delimited field runs past its message");
    return take(static_cast<size_t>(size));
  }

  double read_double() {
    const uint64_t bits = fixed64();
    double value = 0;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }

  float read_float() {
    const uint32_t bits = fixed32();
    float value = 0;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }

  // Skips the value of a field we do not decode, by its wire type.
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case kVarint: varint(); return;
      case kFixed64: take(8); return;
      case kLengthDelimited: bytes(); return;
      case kFixed32: take(4); return;
      default: throw MalformedProto("unsupported wire type " + std::to_string(wire_type));
    }
  }

 private:
  std::string_view take(size_t size) {
    if (size > rest_.size()) throw MalformedProto("field runs past the end of its message");
    std::string_view taken = rest_.substr(0, size);
    rest_.remove_prefix(size);
    return taken;
  }

  std::string_view rest_;  // bytes not yet consumed
};

// int32 fields travel as 64-bit varints; protobuf keeps the low 32 bits.
int to_int32(uint64_t varint) { return static_cast<int32_t>(static_cast<uint32_t>(varint)); }

SummaryValue::Image decode_image(std::string_view bytes) {
  SummaryValue::Image image;
  FieldReader in(bytes);
  while (!in.done()) {
    const auto [field, type] = in.key();
    if (field == image_field::kHeight && type == kVarint) {
      image.height = to_int32(in.varint());
    } else if (field == image_field::kWidth && type == kVarint) {
      image.width = to_int32(in.varint());
    } else if (field == image_field::kColorspace && type == kVarint) {
      image.colorspace = to_int32(in.varint());
    } else if (field == image_field::kEncoded && type == kLengthDelimited) {
      image.encoded = std::string(in.bytes());
    } else {
      in.skip(type);
    }
  }
  return image;
}

SummaryValue decode_value(std::string_view bytes) {
  SummaryValue value;
  FieldReader in(bytes);
  while (!in.done()) {
    const auto [field, type] = in.key();
    if (field == value_field::kTag && type == kLengthDelimited) {
      value.tag = std::string(in.bytes());
    } else if (field == value_field::kSimpleValue && type == kFixed32) {
      value.simple_value = in.read_float();
    } else if (field == value_field::kImage && type == kLengthDelimited) {
      value.image = decode_image(in.bytes());
    } else {
      in.skip(type);
    }
  }
  return value;
}

void decode_summary(std::string_view bytes, std::vector<SummaryValue>& values) {
  FieldReader in(bytes);
  while (!in.done()) {
    const auto [field, type] = in.key();
    if (field == summary_field::kValue && type == kLengthDelimited) {
      values.push_back(decode_value(in.bytes()));
    } else {
      in.skip(type);
    }
  }
}

Event decode_event(std::string_view bytes) {
  Event event;
  FieldReader in(bytes);
  while (!in.done()) {
    const auto [field, type] = in.key();
    if (field == event_field::kWallTime && type == kFixed64) {
      event.wall_time = in.read_double();
    } else if (field == event_field::kStep && type == kVarint) {
      event.step = static_cast<int64_t>(in.varint());
    } else if (field == event_field::kFileVersion && type == kLengthDelimited) {
      event.file_version = std::string(in.bytes());
    } else if (field == event_field::kSummary && type == kLengthDelimited) {
      // A repeated or split message field merges; appending values does the same.
      decode_summary(in.bytes(), event.values);
    } else {
      in.skip(type);
    }
  }
  return event;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot open event file '" + path + "': " + std::strerror(errno));
  }
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error("cannot read event file '" + path + "'");
  return data;
}

}  // namespace

// ---------------------------------------------------------------------------
// EventWriter

double EventWriter::now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

EventWriter::EventWriter(const std::string& dir, const std::string& suffix) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    throw std::runtime_error("cannot create event directory '" + dir + "': " + error.message());
  }
  const double wall_time = now();
  std::string name = "events.out.tfevents." + std::to_string(static_cast<int64_t>(wall_time)) +
                     "." + host_name() + "." + std::to_string(getpid());
  if (!suffix.empty()) name += "." + suffix;
  path_ = (std::filesystem::path(dir) / name).string();

  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) {
    throw std::runtime_error("cannot open event file '" + path_ + "': " + std::strerror(errno));
  }
  // TensorBoard identifies the format by this first event.
  std::string event;
  put_double(event, event_field::kWallTime, wall_time);
  put_int(event, event_field::kStep, 0);
  put_bytes(event, event_field::kFileVersion, kFileVersion);
  std::lock_guard<std::mutex> lock(mutex_);
  write_record(event);
  out_.flush();
}

EventWriter::~EventWriter() {
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    out_.flush();
  } catch (...) {
    // A destructor must not throw; flush() is the place to see write errors.
  }
}

void EventWriter::add_scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  std::string summary_value;
  put_bytes(summary_value, value_field::kTag, tag);
  put_float(summary_value, value_field::kSimpleValue, static_cast<float>(value));
  const std::string event = summary_event(wall_time, step, summary_value);
  std::lock_guard<std::mutex> lock(mutex_);
  write_record(event);
}

void EventWriter::add_image(const std::string& tag, const std::string& png, int height, int width,
                            int channels, int64_t step, double wall_time) {
  std::string image;
  put_int(image, image_field::kHeight, height);
  put_int(image, image_field::kWidth, width);
  put_int(image, image_field::kColorspace, channels);
  put_bytes(image, image_field::kEncoded, png);
  std::string summary_value;
  put_bytes(summary_value, value_field::kTag, tag);
  put_bytes(summary_value, value_field::kImage, image);
  const std::string event = summary_event(wall_time, step, summary_value);
  std::lock_guard<std::mutex> lock(mutex_);
  write_record(event);
}

void EventWriter::flush() {
  std::lock_guard<std::mutex> lock(mutex_);
  out_.flush();
  if (!out_) throw std::runtime_error("cannot write event file '" + path_ + "'");
}

void EventWriter::write_record(const std::string& event) {
  std::string header;
  put_le(header, event.size(), 8);
  put_le(header, masked_crc32c(header.data(), 8), 4);
  std::string footer;
  put_le(footer, masked_crc32c(event.data(), event.size()), 4);
  out_.write(header.data(), static_cast<std::streamsize>(header.size()));
  out_.write(event.data(), static_cast<std::streamsize>(event.size()));
  out_.write(footer.data(), static_cast<std::streamsize>(footer.size()));
  if (!out_) throw std::runtime_error("cannot write event file '" + path_ + "'");
}

// ---------------------------------------------------------------------------
// Reading

std::vector<Event> read_events(const std::string& path) {
  const std::string data = read_file(path);
  std::vector<Event> events;
  size_t offset = 0;
  while (offset < data.size()) {
    const std::string where = path + ": record at byte offset " + std::to_string(offset);
    const size_t left = data.size() - offset;
    if (left < 12) throw std::runtime_error(where + " is truncated (header)");
    const char* record = data.data() + offset;
    if (masked_crc32c(record, 8) != load_le(record + 8, 4)) {
      throw std::runtime_error(where + " has a bad length CRC");
    }
    const uint64_t length = load_le(record, 8);
    if (length > left - 12 || left - 12 - length < 4) {
      throw std::runtime_error(where + " is truncated (needs " + std::to_string(length) +
                               " data bytes + 4 CRC bytes, file has " + std::to_string(left - 12) + ")");
    }
    const char* payload = record + 12;
    if (masked_crc32c(payload, length) != load_le(payload + length, 4)) {
      throw std::runtime_error(where + " has a bad data CRC");
    }
    try {
      events.push_back(decode_event(std::string_view(payload, length)));
    } catch (const MalformedProto& error) {
      throw std::runtime_error(where + " is not a valid Event: " + error.what());
    }
    offset += 12 + length + 4;
  }
  return events;
}

}  // namespace atelier::trainer
