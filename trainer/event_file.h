// trainer/event_file.h — TensorBoard event files, written and read by hand.
//
// An event file is a sequence of TFRecords, each holding one serialized
// `tensorflow.Event` protobuf. We encode the few fields TensorBoard needs for
// scalars and images ourselves (varints, fixed64/fixed32, length-delimited),
// so no protobuf library or generated code is needed. The reader exists for
// tests and tools: it verifies every CRC and skips fields it does not know.
//
// Record framing (TFRecord):
//   uint64 length (little endian)
//   uint32 masked_crc32c(the 8 length bytes)
//   byte   data[length]
//   uint32 masked_crc32c(data)
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace atelier::trainer {

// CRC-32C (Castagnoli), the checksum TFRecord uses. crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t size);

// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8. Masking keeps
// a CRC stored inside data that is itself CRC'd from degenerating.
uint32_t masked_crc32c(const void* data, size_t size);

// Writes TensorBoard's events.out.tfevents.<secs>.<host>.<pid>[.<suffix>] in
// `dir` (created if missing). The first record is the file_version event
// TensorBoard expects. All methods may be called from several threads at once.
// Errors (cannot create or write the file) throw std::runtime_error naming the path.
class EventWriter {
 public:
  explicit EventWriter(const std::string& dir, const std::string& suffix = "");
  ~EventWriter();  // flushes, never throws
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  // Seconds since the Unix epoch, TensorBoard's wall_time.
  static double now();

  // One scalar point; TensorBoard stores it as a 32-bit float.
  void add_scalar(const std::string& tag, double value, int64_t step, double wall_time = now());

  // `png` holds the bytes of a PNG file of height x width pixels with
  // `channels` channels (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
  void add_image(const std::string& tag, const std::string& png, int height, int width,
                 int channels, int64_t step, double wall_time = now());

  // Pushes buffered records to the OS so a running TensorBoard sees them.
  void flush();

  const std::string& path() const { return path_; }

 private:
  // Frames `event` (a serialized Event) as a TFRecord and appends it. Caller holds mutex_.
  void write_record(const std::string& event);

  std::string path_;    // full path of the event file
  std::ofstream out_;   // open for the writer's whole life, binary
  std::mutex mutex_;    // serialises writes so concurrent adds never interleave bytes
};

// One Summary.Value as read back: a scalar, an image, or neither (a kind we skip).
struct SummaryValue {
  std::string tag;
  std::optional<float> simple_value;
  struct Image {
    int height = 0;
    int width = 0;
    int colorspace = 0;  // number of channels
    std::string encoded;  // PNG bytes
  };
  std::optional<Image> image;
};

// One Event as read back. values is empty for non-summary events (file_version).
struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<SummaryValue> values;
};

// Reads every event of `path` in file order. Verifies each record's length and
// data CRCs; throws std::runtime_error naming the file and byte offset of the
// record on a bad CRC, a truncated record or a malformed protobuf.
std::vector<Event> read_events(const std::string& path);

}  // namespace atelier::trainer
