// Shard files: writing (`atelier shard`) and reading (the loader service).
//
// A shard file is a 16-byte header (magic "ATSHARD\0", u32 version, u32 0)
// followed by records: u32 key length, u64 image length, u32 CRC-32C of the
// image bytes, the key, the image bytes (little-endian). index.json lists
// every record with its shard, offset, length, checksum and size. Nothing
// read from disk is trusted: every length and offset is checked against the
// caps below and the file's size before anything is allocated or read.
#include "data/data.h"
#include "data/pixels.h"

#include <boost/crc.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <cstdio>
#include <map>
#include <optional>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

namespace atelier::data {
namespace fs = std::filesystem;
namespace {

constexpr char kShardMagic[8] = {'A', 'T', 'S', 'H', 'A', 'R', 'D', '\0'};
constexpr uint32_t kShardVersion = 1;
constexpr int kIndexVersion = 1;
constexpr const char* kIndexName = "index.json";
constexpr int64_t kHeaderBytes = 16;          // shard file header
constexpr int64_t kRecordHeaderBytes = 16;    // u32 key length, u64 image length, u32 crc
constexpr int64_t kMaxKeyBytes = 4096;        // a relative path
constexpr int64_t kMaxImageBytes = int64_t{256} << 20;  // one encoded image
constexpr int64_t kMaxIndexBytes = int64_t{1} << 30;    // index.json

// CRC-32C with the SSE4.2 instruction where the CPU has it: Boost's byte
// table takes ~110 us for a typical 60 KB photograph, ~12% of what decoding
// and augmenting it costs the server now that decoding is scaled; the
// instruction takes a few us. The same technique as checkpoint/'s Crc32c
// (data/ cannot depend on checkpoint/), including asking on first use: during
// static initialisation __builtin_cpu_supports can answer "no" wrongly.
#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_instruction(const unsigned char* data, size_t size) {
  uint64_t crc = 0xFFFFFFFF;
  for (; size >= 8; data += 8, size -= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    crc = __builtin_ia32_crc32di(crc, word);
  }
  auto crc32 = static_cast<uint32_t>(crc);
  for (; size > 0; ++data, --size) crc32 = __builtin_ia32_crc32qi(crc32, *data);
  return ~crc32;
}

bool has_crc32c_instruction() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return has;
}
#else
uint32_t crc32c_instruction(const unsigned char*, size_t) { return 0; }
bool has_crc32c_instruction() { return false; }
#endif

uint32_t crc32c(const void* data, size_t size) {
  if (has_crc32c_instruction()) return crc32c_instruction(static_cast<const unsigned char*>(data), size);
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data, size);
  return crc.checksum();
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
uint64_t get_le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// What identifies the input: every image's relative path, size and
// modification time. Equal fingerprints make a re-run a no-op.
nlohmann::json input_fingerprint(const fs::path& input, const std::vector<std::string>& files) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& file : files) {
    std::error_code error;
    const auto size = fs::file_size(file, error);
    const auto mtime = fs::last_write_time(file, error).time_since_epoch().count();
    if (error) throw DataError("cannot stat '" + file + "': " + error.message());
    list.push_back({fs::path(file).lexically_relative(input).generic_string(), size, static_cast<int64_t>(mtime)});
  }
  return list;
}

std::optional<nlohmann::json> read_index(const fs::path& path) {
  std::error_code error;
  if (!fs::is_regular_file(path, error)) return std::nullopt;
  if (fs::file_size(path, error) > static_cast<uintmax_t>(kMaxIndexBytes))
    throw DataError("shard index '" + path.string() + "' is larger than " + std::to_string(kMaxIndexBytes) + " bytes");
  std::ifstream in(path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw DataError("shard index '" + path.string() + "' is not valid JSON: " + e.what());
  }
}

// An index of this version: an object whose "version" is kIndexVersion and
// whose "records" is an array. Anything else (valid JSON of another shape
// included: a number, a list) is not one; found by scripts/fuzz.sh, which
// made nlohmann's value() throw its own type_error instead of a DataError.
bool is_current_index(const nlohmann::json& index) {
  if (!index.is_object()) return false;
  const auto version = index.find("version"), records = index.find("records");
  return version != index.end() && version->is_number_integer() && *version == kIndexVersion &&
         records != index.end() && records->is_array();
}

void write_file_atomically(const fs::path& path, const std::string& bytes) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw DataError("cannot write '" + tmp.string() + "'");
  }
  std::error_code error;
  fs::rename(tmp, path, error);
  if (error) throw DataError("cannot rename '" + tmp.string() + "' to '" + path.string() + "': " + error.message());
}

std::string shard_name(int64_t number) {
  char name[32];
  std::snprintf(name, sizeof name, "shard-%05lld.bin", static_cast<long long>(number));
  return name;
}

std::string shard_header() {
  std::string header(kShardMagic, sizeof kShardMagic);
  put_u32(header, kShardVersion);
  put_u32(header, 0);
  return header;
}

// Packs checked images into shards of about `shard_bytes`, in list order.
struct ShardPacker {
  ShardPacker(fs::path out, int64_t bytes) : output(std::move(out)), shard_bytes(bytes) {}
  fs::path output;
  int64_t shard_bytes = 0;
  std::string current = shard_header();  // the shard being filled
  std::vector<std::string> written;      // finished shard names
  nlohmann::json records = nlohmann::json::array();

  void add(const std::string& key, const std::vector<unsigned char>& bytes, const cv::Mat& rgb) {
    const int64_t record = kRecordHeaderBytes + static_cast<int64_t>(key.size() + bytes.size());
    if (static_cast<int64_t>(current.size()) > kHeaderBytes &&
        static_cast<int64_t>(current.size()) + record > shard_bytes)
      flush();
    const uint32_t crc = crc32c(bytes.data(), bytes.size());
    records.push_back({{"key", key}, {"shard", shard_name(static_cast<int64_t>(written.size()))},
                       {"offset", current.size()}, {"length", bytes.size()}, {"crc32c", crc},
                       {"width", rgb.cols}, {"height", rgb.rows}, {"jpeg", detail::looks_like_jpeg(bytes)}});
    put_u32(current, static_cast<uint32_t>(key.size()));
    put_u64(current, bytes.size());
    put_u32(current, crc);
    current += key;
    current.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  void flush() {
    if (static_cast<int64_t>(current.size()) == kHeaderBytes) return;
    const std::string name = shard_name(static_cast<int64_t>(written.size()));
    write_file_atomically(output / name, current);
    written.push_back(name);
    current = shard_header();
  }
};

// Deletes shard files of an earlier run that the new index does not name.
void remove_stale_shards(const fs::path& output, const std::vector<std::string>& keep) {
  const std::set<std::string> kept(keep.begin(), keep.end());
  for (const auto& entry : fs::directory_iterator(output)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("shard-", 0) == 0 && !kept.count(name)) fs::remove(entry.path());
  }
}

ShardReport report_of(const nlohmann::json& index, bool unchanged) {
  ShardReport report;
  report.unchanged = unchanged;
  report.records = static_cast<int64_t>(index.at("records").size());
  report.shards = index.at("shards").get<int64_t>();
  report.corrupt = index.at("corrupt").get<std::vector<std::string>>();
  return report;
}

}  // namespace

ShardReport write_shards(const ShardOptions& options) {
  if (options.shard_bytes < 1) throw DataError("shard size must be positive");
  const fs::path input = fs::path(options.input).lexically_normal();
  const fs::path output(options.output);
  if (!fs::is_directory(input)) throw DataError("shard input '" + options.input + "' is not a folder");
  const std::vector<std::string> files = list_images({input.string()});
  const nlohmann::json inputs = input_fingerprint(input, files);
  const auto old = read_index(output / kIndexName);
  if (old && is_current_index(*old) && old->value("inputs", nlohmann::json()) == inputs) {
    try {
      return report_of(*old, true);
    } catch (const nlohmann::json::exception&) {
      // A damaged index of the same inputs: written again below.
    }
  }

  fs::create_directories(output);
  ShardPacker packer{output, options.shard_bytes};
  std::vector<std::string> corrupt;
  for (const auto& file : files) {
    std::vector<unsigned char> bytes;
    std::string why;
    cv::Mat rgb;
    if (detail::read_bytes(file, bytes, why)) rgb = detail::decode_rgb(bytes, why);
    if (rgb.empty() || bytes.size() > static_cast<size_t>(kMaxImageBytes)) {
      if (!rgb.empty()) why = "larger than " + std::to_string(kMaxImageBytes) + " bytes";
      spdlog::warn("leaving out {}: {}", file, why);
      corrupt.push_back(file + ": " + why);
      continue;
    }
    packer.add(fs::path(file).lexically_relative(input).generic_string(), bytes, rgb);
  }
  packer.flush();
  if (packer.written.empty()) throw DataError("no image under '" + options.input + "' could be decoded");
  const nlohmann::json index = {{"format", "atelier-shards"}, {"version", kIndexVersion},
                                {"shards", packer.written.size()}, {"records", packer.records},
                                {"corrupt", corrupt}, {"inputs", inputs}};
  // The index goes last: until it is renamed into place, a reader sees the
  // previous complete set (or none).
  write_file_atomically(output / kIndexName, index.dump(1) + "\n");
  remove_stale_shards(output, packer.written);
  return report_of(index, false);
}

namespace {

ShardRecord parse_record(const nlohmann::json& r, const std::string& where) {
  try {
    ShardRecord record{r.at("key").get<std::string>(), r.at("shard").get<std::string>(),
                       r.at("offset").get<int64_t>(), r.at("length").get<int64_t>(),
                       r.at("crc32c").get<uint32_t>(), r.at("width").get<int64_t>(),
                       r.at("height").get<int64_t>(), r.at("jpeg").get<bool>()};
    if (record.shard.find('/') != std::string::npos || record.shard.find("..") != std::string::npos)
      throw DataError(where + ": shard name '" + record.shard + "' is not a plain file name");
    return record;
  } catch (const nlohmann::json::exception& e) {
    throw DataError(where + ": " + e.what());
  }
}

// Checks a shard file's header and size, once per file.
int64_t checked_shard_size(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::array<char, kHeaderBytes> header{};
  if (!in || !in.read(header.data(), kHeaderBytes))
    throw DataError("shard '" + path.string() + "' is missing or shorter than its header");
  if (std::memcmp(header.data(), kShardMagic, sizeof kShardMagic) != 0)
    throw DataError("shard '" + path.string() + "' does not start with the shard magic");
  const auto version = get_le(reinterpret_cast<const unsigned char*>(header.data()) + 8, 4);
  if (version != kShardVersion)
    throw DataError("shard '" + path.string() + "' has version " + std::to_string(version) + ", this build reads " +
                    std::to_string(kShardVersion));
  return static_cast<int64_t>(fs::file_size(path));
}

}  // namespace

ShardReader::ShardReader(const std::string& folder) : folder_(folder) {
  const fs::path index_path = fs::path(folder) / kIndexName;
  const auto index = read_index(index_path);
  if (!index) throw DataError("shard folder '" + folder + "' has no " + kIndexName + " (run `atelier shard`)");
  if (!is_current_index(*index))
    throw DataError("shard index '" + index_path.string() + "' is not a version " + std::to_string(kIndexVersion) +
                    " atelier shard index");
  std::map<std::string, int64_t> sizes;  // checked shard files
  std::string fingerprint;
  for (const auto& r : index->at("records")) {
    const std::string where = index_path.string() + " record " + std::to_string(records_.size());
    ShardRecord record = parse_record(r, where);
    auto size = sizes.find(record.shard);
    if (size == sizes.end())
      size = sizes.emplace(record.shard, checked_shard_size(fs::path(folder) / record.shard)).first;
    const int64_t key_bytes = static_cast<int64_t>(record.key.size());
    if (key_bytes < 1 || key_bytes > kMaxKeyBytes || record.length < 1 || record.length > kMaxImageBytes ||
        record.offset < kHeaderBytes ||
        record.offset > size->second - kRecordHeaderBytes - key_bytes - record.length)
      throw DataError(where + " ('" + record.key + "'): offset " + std::to_string(record.offset) + " + length " +
                      std::to_string(record.length) + " does not fit shard '" + record.shard + "' of " +
                      std::to_string(size->second) + " bytes (truncated or mismatched index?)");
    fingerprint += record.key + ":" + std::to_string(record.crc32c) + "\n";
    records_.push_back(std::move(record));
  }
  if (records_.empty()) throw DataError("shard index '" + index_path.string() + "' lists no records");
  fingerprint_ = crc32c(fingerprint.data(), fingerprint.size());
}

bool ShardReader::read(int64_t index, std::vector<unsigned char>& bytes, std::string& why) const {
  const ShardRecord& record = records_.at(static_cast<size_t>(index));
  const fs::path path = fs::path(folder_) / record.shard;
  std::ifstream in(path, std::ios::binary);
  std::array<unsigned char, kRecordHeaderBytes> header{};
  in.seekg(record.offset);
  if (!in.read(reinterpret_cast<char*>(header.data()), kRecordHeaderBytes)) {
    why = "cannot read the record header in " + path.string();
    return false;
  }
  const uint64_t key_bytes = get_le(header.data(), 4);
  const uint64_t length = get_le(header.data() + 4, 8);
  const auto crc = static_cast<uint32_t>(get_le(header.data() + 12, 4));
  // The file was checked when opened, but may have changed since: compare
  // with the index before trusting either length.
  if (key_bytes != record.key.size() || length != static_cast<uint64_t>(record.length) || crc != record.crc32c) {
    why = "record header in " + path.string() + " disagrees with the index (length " + std::to_string(length) +
          ", index says " + std::to_string(record.length) + ")";
    return false;
  }
  std::string key(record.key.size(), '\0');
  bytes.resize(static_cast<size_t>(record.length));
  if (!in.read(key.data(), static_cast<std::streamsize>(key.size())) ||
      !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
    why = "shard " + path.string() + " ends inside the record";
    return false;
  }
  if (key != record.key) {
    why = "record key in " + path.string() + " is '" + key + "', the index says '" + record.key + "'";
    return false;
  }
  if (crc32c(bytes.data(), bytes.size()) != record.crc32c) {
    why = "checksum mismatch in " + path.string();
    return false;
  }
  return true;
}

}  // namespace atelier::data
