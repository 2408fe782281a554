// TensorBoard event files: CRCs, exact read-back, hand-checked bytes, and loud
// failures on damaged files.
#include "trainer/event_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace atelier::trainer {
namespace {

namespace fs = std::filesystem;

// A real 2x1 RGB PNG (one red, one blue pixel), made with zlib and checked with PIL.
const std::string kTinyPng(
    "\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52"
    "\x00\x00\x00\x02\x00\x00\x00\x01\x08\x02\x00\x00\x00\x7b\x40\xe8"
    "\xdd\x00\x00\x00\x0d\x49\x44\x41\x54\x78\xda\x63\xf8\xcf\x00\x04"
    "\xff\x01\x07\x00\x01\xff\x3d\x7d\x8c\x49\x00\x00\x00\x00\x49\x45"
    "\x4e\x44\xae\x42\x60\x82",
    70);

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

uint64_t load_le(const std::string& bytes, size_t offset, int size) {
  uint64_t value = 0;
  for (int i = 0; i < size; ++i) {
    value |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
  }
  return value;
}

std::string le(uint64_t value, int size) {
  std::string out;
  for (int i = 0; i < size; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
  return out;
}

// Frames `data` as one TFRecord, independently of the writer.
std::string tf_record(const std::string& data) {
  const std::string length = le(data.size(), 8);
  return length + le(masked_crc32c(length.data(), 8), 4) + data +
         le(masked_crc32c(data.data(), data.size()), 4);
}

// Byte offset of the second record: after the file_version record.
size_t second_record_offset(const std::string& bytes) { return 12 + load_le(bytes, 0, 8) + 4; }

class EventFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = fs::temp_directory_path() / ("atelier_event_file_" + name + "_" + std::to_string(getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes one file_version record and one scalar ("loss" = 2 at step 3, wall time 1.5).
  std::string write_one_scalar() {
    EventWriter writer(dir_.string());
    writer.add_scalar("loss", 2.0, 3, 1.5);
    return writer.path();
  }

  fs::path dir_;
};

TEST_F(EventFileTest, Crc32cMatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
}

TEST_F(EventFileTest, MaskedCrcFollowsTheTfRecordFormula) {
  const uint32_t crc = 0xE3069283u;
  EXPECT_EQ(masked_crc32c("123456789", 9), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST_F(EventFileTest, FileNameFollowsTheTensorBoardPatternInACreatedDirectory) {
  const fs::path nested = dir_ / "run" / "logs";
  EventWriter writer(nested.string(), "rank0");
  const fs::path path(writer.path());
  EXPECT_EQ(path.parent_path(), nested);
  const std::string name = path.filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_EQ(name.substr(name.size() - 6), ".rank0") << name;
  EXPECT_NE(name.find("." + std::to_string(getpid()) + "."), std::string::npos) << name;
  EXPECT_TRUE(fs::exists(path));
}

TEST_F(EventFileTest, ScalarsAndImageReadBackExactly) {
  const std::vector<int64_t> steps = {0, 1, 1000, int64_t{1} << 40, -1};
  std::string path;
  {
    EventWriter writer(dir_.string());
    for (size_t i = 0; i < steps.size(); ++i) {
      writer.add_scalar("loss/generator", 0.25 * static_cast<double>(i), steps[i], 100.0 + static_cast<double>(i));
    }
    writer.add_image("samples/0", kTinyPng, 1, 2, 3, 7, 200.5);
    path = writer.path();
  }  // the destructor flushes

  const std::vector<Event> events = read_events(path);
  ASSERT_EQ(events.size(), steps.size() + 2);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_EQ(events[0].step, 0);
  EXPECT_GT(events[0].wall_time, 1.5e9);  // written now, not at the epoch
  EXPECT_TRUE(events[0].values.empty());

  for (size_t i = 0; i < steps.size(); ++i) {
    const Event& event = events[i + 1];
    EXPECT_EQ(event.step, steps[i]);
    EXPECT_EQ(event.wall_time, 100.0 + static_cast<double>(i));
    EXPECT_TRUE(event.file_version.empty());
    ASSERT_EQ(event.values.size(), 1u);
    EXPECT_EQ(event.values[0].tag, "loss/generator");
    ASSERT_TRUE(event.values[0].simple_value.has_value());
    EXPECT_EQ(*event.values[0].simple_value, 0.25f * static_cast<float>(i));
    EXPECT_FALSE(event.values[0].image.has_value());
  }

  const Event& image_event = events.back();
  EXPECT_EQ(image_event.step, 7);
  EXPECT_EQ(image_event.wall_time, 200.5);
  ASSERT_EQ(image_event.values.size(), 1u);
  EXPECT_EQ(image_event.values[0].tag, "samples/0");
  EXPECT_FALSE(image_event.values[0].simple_value.has_value());
  ASSERT_TRUE(image_event.values[0].image.has_value());
  const SummaryValue::Image& image = *image_event.values[0].image;
  EXPECT_EQ(image.height, 1);
  EXPECT_EQ(image.width, 2);
  EXPECT_EQ(image.colorspace, 3);
  EXPECT_EQ(image.encoded, kTinyPng);
}

// The encoding is checked against bytes worked out by hand from the protobuf
// wire format, not only against our own reader.
TEST_F(EventFileTest, ScalarRecordMatchesHandEncodedProtobuf) {
  const std::string bytes = read_bytes(write_one_scalar());
  const std::string value = std::string("\x0a\x04", 2) + "loss" + std::string("\x15\x00\x00\x00\x40", 5);
  const std::string summary = std::string("\x0a\x0b", 2) + value;
  const std::string event = std::string("\x09\x00\x00\x00\x00\x00\x00\xf8\x3f", 9) +  // wall_time 1.5
                            std::string("\x10\x03", 2) +                             // step 3
                            std::string("\x2a\x0d", 2) + summary;                    // summary
  const size_t offset = second_record_offset(bytes);
  EXPECT_EQ(bytes.substr(offset), tf_record(event));
}

TEST_F(EventFileTest, FlippedDataByteThrowsNamingFileAndOffset) {
  const std::string path = write_one_scalar();
  std::string bytes = read_bytes(path);
  const size_t offset = second_record_offset(bytes);
  bytes[offset + 12 + 5] ^= 0x01;
  write_bytes(path, bytes);
  try {
    read_events(path);
    FAIL() << "a flipped byte went unnoticed";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("offset " + std::to_string(offset)), std::string::npos) << message;
    EXPECT_NE(message.find("data CRC"), std::string::npos) << message;
  }
}

TEST_F(EventFileTest, FlippedLengthByteThrowsNamingTheOffset) {
  const std::string path = write_one_scalar();
  std::string bytes = read_bytes(path);
  const size_t offset = second_record_offset(bytes);
  bytes[offset] ^= 0x40;
  write_bytes(path, bytes);
  try {
    read_events(path);
    FAIL() << "a flipped length byte went unnoticed";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("offset " + std::to_string(offset)), std::string::npos) << message;
    EXPECT_NE(message.find("length CRC"), std::string::npos) << message;
  }
}

TEST_F(EventFileTest, TruncatedFileThrows) {
  const std::string path = write_one_scalar();
  const std::string bytes = read_bytes(path);
  const size_t offset = second_record_offset(bytes);
  for (const size_t cut : {size_t{1}, size_t{5}, bytes.size() - offset - 1}) {
    write_bytes(path, bytes.substr(0, bytes.size() - cut));
    try {
      read_events(path);
      FAIL() << "a file cut by " << cut << " bytes went unnoticed";
    } catch (const std::runtime_error& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("truncated"), std::string::npos) << message;
      EXPECT_NE(message.find("offset " + std::to_string(offset)), std::string::npos) << message;
    }
  }
  write_bytes(path, bytes.substr(0, offset));  // a cut between records is a shorter valid file
  EXPECT_EQ(read_events(path).size(), 1u);
}

// Fields TensorBoard adds (or that a newer writer emits) are skipped by wire type.
TEST_F(EventFileTest, ReaderSkipsUnknownFieldsOfEveryWireType) {
  const std::string unknown = std::string("\x30\x96\x01", 3) +                      // 6: varint 150
                              std::string("\x39", 1) + le(0x0123456789abcdefu, 8) +  // 7: fixed64
                              std::string("\x42\x03xyz", 5) +                        // 8: bytes
                              std::string("\x4d", 1) + le(0xdeadbeefu, 4);           // 9: fixed32
  const std::string value = std::string("\x0a\x01", 2) + "a" + unknown + std::string("\x15\x00\x00\x80\x3f", 5);
  const std::string summary = std::string("\x0a", 1) + static_cast<char>(value.size()) + value + unknown;
  const std::string event = std::string("\x10\x2a", 2) + unknown + std::string("\x2a", 1) +
                            static_cast<char>(summary.size()) + summary;
  fs::create_directories(dir_);
  const std::string path = (dir_ / "handmade.tfevents").string();
  write_bytes(path, tf_record(event));

  const std::vector<Event> events = read_events(path);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].step, 42);
  ASSERT_EQ(events[0].values.size(), 1u);
  EXPECT_EQ(events[0].values[0].tag, "a");
  EXPECT_EQ(*events[0].values[0].simple_value, 1.0f);
}

TEST_F(EventFileTest, MalformedProtobufWithGoodCrcsThrows) {
  fs::create_directories(dir_);
  const std::string path = (dir_ / "malformed.tfevents").string();
  write_bytes(path, tf_record(std::string("\x2a\x10\x0a", 3)));  // summary claims 16 bytes, has 1
  EXPECT_THROW(read_events(path), std::runtime_error);
}

TEST_F(EventFileTest, ConcurrentAddsAllArriveIntact) {
  constexpr int kPerThread = 200;
  std::string path;
  {
    EventWriter writer(dir_.string());
    auto add = [&writer](const std::string& tag) {
      for (int step = 0; step < kPerThread; ++step) writer.add_scalar(tag, step, step);
    };
    std::thread generator(add, "g");
    std::thread critic(add, "d");
    generator.join();
    critic.join();
    writer.flush();
    path = writer.path();
  }
  const std::vector<Event> events = read_events(path);
  ASSERT_EQ(events.size(), 1u + 2 * kPerThread);
  int64_t step_sum = 0;
  for (size_t i = 1; i < events.size(); ++i) {
    ASSERT_EQ(events[i].values.size(), 1u);
    EXPECT_EQ(*events[i].values[0].simple_value, static_cast<float>(events[i].step));
    step_sum += events[i].step;
  }
  EXPECT_EQ(step_sum, 2 * (kPerThread * (kPerThread - 1) / 2));
}

TEST_F(EventFileTest, ErrorsNameThePath) {
  fs::create_directories(dir_);
  const std::string blocker = (dir_ / "not_a_directory").string();
  write_bytes(blocker, "x");
  try {
    EventWriter writer(blocker + "/logs");
    FAIL() << "a directory under a regular file was accepted";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find(blocker), std::string::npos) << error.what();
  }
  const std::string missing = (dir_ / "missing.tfevents").string();
  try {
    read_events(missing);
    FAIL() << "a missing file was read";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find(missing), std::string::npos) << error.what();
  }
}

TEST_F(EventFileTest, EmptyFileHoldsNoEvents) {
  fs::create_directories(dir_);
  const std::string path = (dir_ / "empty.tfevents").string();
  write_bytes(path, "");
  EXPECT_TRUE(read_events(path).empty());
}

}  // namespace
}  // namespace atelier::trainer
