// Shards: write/read round trip, idempotent re-runs, corrupt inputs, and
// reading that trusts no length (truncated files, huge lengths, index mismatch).
#include <boost/crc.hpp>
#include <nlohmann/json.hpp>

#include "service_fixture.h"

namespace atelier::data_tests {
namespace {

// Offset of record `index`'s image bytes inside its shard file.
int64_t image_offset(const data::ShardReader& reader, int64_t index) {
  const auto& r = reader.record(index);
  return r.offset + 16 + static_cast<int64_t>(r.key.size());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const data::DataError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a DataError";
  return "";
}

TEST_F(ServiceTest, ShardRoundTripKeepsEveryImageInListOrder) {
  shard_all();
  const data::ShardReader reader(path("shards/content").string());
  const auto files = data::list_images({path("content").string()});
  ASSERT_EQ(reader.size(), static_cast<int64_t>(files.size()));
  std::set<std::string> shards;
  for (int64_t i = 0; i < reader.size(); ++i) {
    const auto& record = reader.record(i);
    EXPECT_EQ(record.key, fs::path(files[static_cast<size_t>(i)]).filename().string());
    EXPECT_EQ(record.width, 48);
    EXPECT_EQ(record.height, 40);
    EXPECT_FALSE(record.jpeg);
    std::vector<unsigned char> bytes;
    std::string why;
    ASSERT_TRUE(reader.read(i, bytes, why)) << why;
    EXPECT_EQ(bytes, read_bytes(files[static_cast<size_t>(i)])) << record.key;
    shards.insert(record.shard);
  }
  EXPECT_GT(shards.size(), 1u) << "1 KiB shards should split 7 images";
}

// The recorded checksum is the standard CRC-32C (Boost's table as the
// reference), whichever implementation the CPU gets, so shards written on
// one machine verify on another. Odd sizes exercise the byte-wise tail.
TEST_F(ServiceTest, ShardChecksumsAreStandardCrc32c) {
  shard_all();
  const data::ShardReader reader(path("shards/content").string());
  const auto files = data::list_images({path("content").string()});
  for (int64_t i = 0; i < reader.size(); ++i) {
    const auto bytes = read_bytes(files[static_cast<size_t>(i)]);
    boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> reference;
    reference.process_bytes(bytes.data(), bytes.size());
    EXPECT_EQ(reader.record(i).crc32c, reference.checksum()) << reader.record(i).key << ", " << bytes.size() << " bytes";
  }
}

TEST_F(ServiceTest, ShardReRunOnUnchangedInputWritesNothing) {
  data::ShardOptions options{path("content").string(), path("out").string(), 4096};
  const auto first = data::write_shards(options);
  EXPECT_FALSE(first.unchanged);
  std::map<std::string, fs::file_time_type> times;
  for (const auto& entry : fs::directory_iterator(path("out"))) times[entry.path().string()] = entry.last_write_time();
  const auto again = data::write_shards(options);
  EXPECT_TRUE(again.unchanged);
  EXPECT_EQ(again.records, first.records);
  EXPECT_EQ(again.shards, first.shards);
  for (const auto& entry : fs::directory_iterator(path("out")))
    EXPECT_EQ(times.at(entry.path().string()), entry.last_write_time()) << entry.path();

  testing_support::write_pattern_image(path("content/zz.png"), 99);
  const auto changed = data::write_shards(options);
  EXPECT_FALSE(changed.unchanged);
  EXPECT_EQ(changed.records, first.records + 1);
  EXPECT_EQ(data::ShardReader(path("out").string()).size(), first.records + 1);
}

TEST_F(ServiceTest, ShardLeavesOutAndReportsCorruptInputs) {
  write_bytes(path("content/bad.png"), std::vector<unsigned char>(300, 0x42));
  std::vector<uchar> jpeg = atelier::testing_support::encode_bgr(".jpg", cv::Mat(32, 32, CV_8UC3, cv::Scalar(1, 2, 3)));
  jpeg.resize(jpeg.size() / 2);
  write_bytes(path("content/cut.jpg"), jpeg);
  const auto report = data::write_shards({path("content").string(), path("out").string(), 1 << 20});
  EXPECT_EQ(report.records, 7);
  ASSERT_EQ(report.corrupt.size(), 2u);
  EXPECT_NE(report.corrupt[0].find("bad.png"), std::string::npos) << report.corrupt[0];
  EXPECT_NE(report.corrupt[1].find("cut.jpg"), std::string::npos) << report.corrupt[1];
  // A no-op re-run still reports them.
  EXPECT_EQ(data::write_shards({path("content").string(), path("out").string(), 1 << 20}).corrupt, report.corrupt);
}

TEST_F(ServiceTest, ShardRecordWithBadChecksumIsSkippedWithAReason) {
  shard_all();
  data::ShardReader before(path("shards/content").string());
  const auto file = path("shards/content") / before.record(2).shard;
  auto bytes = read_bytes(file);
  bytes[static_cast<size_t>(image_offset(before, 2) + 20)] ^= 0xFF;
  write_bytes(file, bytes);
  const data::ShardReader reader(path("shards/content").string());
  std::vector<unsigned char> image;
  std::string why;
  EXPECT_FALSE(reader.read(2, image, why));
  EXPECT_NE(why.find("checksum"), std::string::npos) << why;
  EXPECT_TRUE(reader.read(1, image, why)) << why;
}

TEST_F(ServiceTest, TruncatedShardIsRefusedNamingTheFile) {
  shard_all();
  data::ShardReader before(path("shards/content").string());
  const auto last = path("shards/content") / before.record(before.size() - 1).shard;
  fs::resize_file(last, fs::file_size(last) - 10);
  const auto message = error_of([&] { data::ShardReader(path("shards/content").string()); });
  EXPECT_NE(message.find(last.filename().string()), std::string::npos) << message;
  EXPECT_NE(message.find("does not fit"), std::string::npos) << message;
}

TEST_F(ServiceTest, HugeLengthInTheIndexIsRefusedBeforeReading) {
  shard_all();
  const auto index_path = path("shards/content/index.json");
  std::ifstream in(index_path);
  auto index = nlohmann::json::parse(in);
  in.close();
  index["records"][0]["length"] = int64_t{1} << 40;
  std::ofstream(index_path) << index.dump();
  const auto message = error_of([&] { data::ShardReader(path("shards/content").string()); });
  EXPECT_NE(message.find("does not fit"), std::string::npos) << message;
}

TEST_F(ServiceTest, RecordHeaderDisagreeingWithTheIndexIsSkipped) {
  shard_all();
  data::ShardReader reader(path("shards/content").string());
  const auto file = path("shards/content") / reader.record(0).shard;
  auto bytes = read_bytes(file);
  // The record's u64 image length (after the u32 key length) becomes 2^48.
  const auto at = static_cast<size_t>(reader.record(0).offset + 4);
  for (size_t i = 0; i < 8; ++i) bytes[at + i] = i == 6 ? 1 : 0;
  write_bytes(file, bytes);
  std::vector<unsigned char> image;
  std::string why;
  EXPECT_FALSE(reader.read(0, image, why));
  EXPECT_NE(why.find("disagrees with the index"), std::string::npos) << why;
  EXPECT_LT(image.capacity(), size_t{1} << 20) << "the bogus length must not be allocated";
}

TEST_F(ServiceTest, ShardWithoutMagicIsRefused) {
  shard_all();
  data::ShardReader before(path("shards/style").string());
  const auto file = path("shards/style") / before.record(0).shard;
  auto bytes = read_bytes(file);
  bytes[0] = 'X';
  write_bytes(file, bytes);
  const auto message = error_of([&] { data::ShardReader(path("shards/style").string()); });
  EXPECT_NE(message.find("magic"), std::string::npos) << message;
}

// Valid JSON of the wrong shape is refused as a DataError naming the index
// (found by scripts/fuzz.sh: nlohmann's own type_error escaped before), and
// `atelier shard` over it writes a good index again.
TEST_F(ServiceTest, AnIndexOfTheWrongShapeIsRefusedNamingIt) {
  shard_all();
  const auto index = path("shards/style") / "index.json";
  for (const char* text : {"7", "[1, 2]", "{\"version\": \"1\", \"records\": []}", "{\"version\": 1, \"records\": 3}"}) {
    std::ofstream(index) << text;
    const auto message = error_of([&] { data::ShardReader(path("shards/style").string()); });
    EXPECT_NE(message.find(index.string()), std::string::npos) << text << ": " << message;
  }
  shard_all();
  EXPECT_GT(data::ShardReader(path("shards/style").string()).size(), 0);
}

}  // namespace
}  // namespace atelier::data_tests
