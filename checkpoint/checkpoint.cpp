#include "checkpoint/checkpoint.h"
#include "checkpoint/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/crc.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace atelier::checkpoint {
namespace fs = std::filesystem;

namespace detail {

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

void sync_path(const fs::path& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) throw CheckpointError("cannot open '" + path.string() + "' to sync: " + errno_text());
  const int rc = ::fsync(fd);
  const std::string err = rc != 0 ? errno_text() : "";
  ::close(fd);
  if (rc != 0) throw CheckpointError("fsync of '" + path.string() + "' failed: " + err);
}

// POSIX write() rather than ofstream: a full disk or a file-size limit must
// name its cause (ENOSPC, EFBIG), which iostreams swallow.
void write_file_synced(const fs::path& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError("cannot create '" + path.string() + "': " + errno_text());
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string err = errno_text();
      ::close(fd);
      throw CheckpointError("cannot write '" + path.string() + "': " + err);
    }
    done += static_cast<size_t>(n);
  }
  const int rc = ::fsync(fd);
  const std::string err = rc != 0 ? errno_text() : "";
  if (::close(fd) != 0 && rc == 0) throw CheckpointError("cannot close '" + path.string() + "': " + errno_text());
  if (rc != 0) throw CheckpointError("fsync of '" + path.string() + "' failed: " + err);
}

namespace {

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_hardware(uint32_t state, const char* data, size_t size) {
  uint64_t crc = state;
  for (; size >= 8; data += 8, size -= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    crc = __builtin_ia32_crc32di(crc, word);
  }
  auto crc32 = static_cast<uint32_t>(crc);
  for (; size > 0; ++data, --size) crc32 = __builtin_ia32_crc32qi(crc32, static_cast<unsigned char>(*data));
  return crc32;
}
// Asked on first use, not during static initialisation: before main the CPU
// model that __builtin_cpu_supports reads may not be initialised yet (it then
// says "no" and every checksum silently took the slow table).
bool hardware_crc() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return has;
}
#else
uint32_t crc32c_hardware(uint32_t, const char*, size_t) { return 0; }
bool hardware_crc() { return false; }
#endif

}  // namespace

bool Crc32c::hardware_available() { return hardware_crc(); }

void Crc32c::update(const char* data, size_t size) {
  if (hardware_) state_ = crc32c_hardware(state_, data, size);
  else table_.process_bytes(data, size);
}

uint32_t Crc32c::value() const { return hardware_ ? ~state_ : table_.checksum(); }

uint32_t crc32c(const std::string& bytes) {
  Crc32c crc;
  crc.update(bytes.data(), bytes.size());
  return crc.value();
}

std::string utc_now() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Manifest manifest_of(const CheckpointInfo& info, std::vector<FileEntry> files) {
  auto history = info.world_history;
  if (history.empty()) history.push_back({0, info.world_size, 0});
  if (history.back().world_size != info.world_size)
    throw CheckpointError("checkpoint of step " + std::to_string(info.step) + ": the world-size history ends with " +
                          std::to_string(history.back().world_size) + " rank(s) but the checkpoint is of " +
                          std::to_string(info.world_size));
  return {1, atelier_version(), info.step, info.epoch, info.world_size, info.config_hash, utc_now(),
          std::move(files), std::move(history), info.loss_network};
}

void write_manifest(const fs::path& dir, const Manifest& m) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : m.files) files.push_back({{"name", f.name}, {"size", f.size}, {"crc32c", f.crc32c}});
  nlohmann::json history = nlohmann::json::array();
  for (const auto& span : m.world_history)
    history.push_back(
        {{"from_step", span.from_step}, {"world_size", span.world_size}, {"global_batch", span.global_batch}});
  nlohmann::json j = {{"format_version", m.format_version}, {"atelier_version", m.atelier_version},
                            {"step", m.step}, {"epoch", m.epoch}, {"world_size", m.world_size},
                            {"world_history", history}, {"config_hash", m.config_hash}, {"created", m.created},
                            {"files", files}};
  if (!m.loss_network.empty()) j["loss_network"] = m.loss_network;
  write_file_synced(dir / kManifest, j.dump(2) + "\n");
}

void point_latest_to(const fs::path& checkpoints_dir, const fs::path& target) {
  const auto tmp = checkpoints_dir / (std::string(kLatest) + ".tmp");
  write_file_synced(tmp, target.filename().string() + "\n");
  fs::rename(tmp, checkpoints_dir / kLatest);
  sync_path(checkpoints_dir, true);
}

}  // namespace detail

namespace {
using namespace detail;

// step-<N> -> N, or -1 for any other name.
int64_t step_of(const fs::path& dir) {
  const auto name = dir.filename().string();
  if (name.rfind(kStepPrefix, 0) != 0) return -1;
  const auto digits = name.substr(std::strlen(kStepPrefix));
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

// Complete checkpoint directories, newest step first.
std::vector<fs::path> checkpoints_newest_first(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && step_of(entry.path()) >= 0) out.push_back(entry.path());
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) > step_of(b); });
  return out;
}

std::vector<FileEntry> describe_files(const fs::path& staging) {
  std::vector<FileEntry> files;
  for (const auto& entry : fs::recursive_directory_iterator(staging)) {
    if (!entry.is_regular_file()) continue;
    sync_path(entry.path(), false);
    files.push_back({fs::relative(entry.path(), staging).generic_string(), fs::file_size(entry.path()),
                     file_crc32c(entry.path())});
  }
  std::sort(files.begin(), files.end(), [](const FileEntry& a, const FileEntry& b) { return a.name < b.name; });
  return files;
}


}  // namespace

std::string atelier_version() { return "0.1.0"; }

std::string describe_world_history(const std::vector<WorldSpan>& history, int64_t step) {
  std::string out;
  for (size_t i = 0; i < history.size(); ++i) {
    const auto& span = history[i];
    const int64_t last = i + 1 < history.size() ? history[i + 1].from_step : step;
    if (!out.empty()) out += ", ";
    out += std::to_string(span.world_size) + (span.world_size == 1 ? " rank" : " ranks");
    if (history.size() > 1) out += " (steps " + std::to_string(span.from_step + 1) + "-" + std::to_string(last) + ")";
  }
  return out;
}

uint32_t file_crc32c(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("cannot read '" + path.string() + "'");
  Crc32c crc;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    crc.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  return crc.value();
}

fs::path save(const fs::path& checkpoints_dir, const CheckpointInfo& info,
              const std::function<void(const fs::path&)>& write_files) {
  fs::create_directories(checkpoints_dir);
  const auto name = kStepPrefix + std::to_string(info.step);
  const auto staging = checkpoints_dir / (kStagingPrefix + name);
  const auto final_dir = checkpoints_dir / name;
  try {
    fs::remove_all(staging);
    fs::create_directories(staging);
    write_files(staging);
    write_manifest(staging, manifest_of(info, describe_files(staging)));
    sync_path(staging, true);
    // A checkpoint of the same step (a repeated save) is replaced whole.
    if (fs::exists(final_dir)) fs::remove_all(final_dir);
    fs::rename(staging, final_dir);
    sync_path(checkpoints_dir, true);
    point_latest_to(checkpoints_dir, final_dir);
  } catch (const fs::filesystem_error& e) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw CheckpointError("checkpoint " + final_dir.string() + " failed: " + e.what());
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
  return final_dir;
}

namespace {

// A manifest comes from disk and checkpoints travel between machines: what
// the writer never produces is refused here, before verify or a resume opens
// a file it names. Names must stay inside the checkpoint directory.
void check_manifest(const Manifest& m, const fs::path& path) {
  const auto bad = [&](const std::string& why) {
    throw CheckpointError("'" + path.string() + "' is not a valid manifest: " + why);
  };
  if (m.step < 0 || m.epoch < 0) bad("negative step or epoch");
  if (m.world_size < 1) bad("world_size " + std::to_string(m.world_size) + " is not a number of ranks");
  std::vector<std::string> names;
  for (const auto& f : m.files) {
    const fs::path name = fs::path(f.name).lexically_normal();
    if (f.name.empty() || name.is_absolute() || name.empty() || name == "." || *name.begin() == ".." ||
        f.name.find('\0') != std::string::npos)
      bad("file name '" + f.name + "' is not a path inside the checkpoint");
    names.push_back(name.string());
  }
  std::sort(names.begin(), names.end());
  if (const auto twin = std::adjacent_find(names.begin(), names.end()); twin != names.end())
    bad("file '" + *twin + "' is listed twice");
  int64_t from = 0;
  for (const auto& span : m.world_history) {
    if (span.from_step < from || span.world_size < 1 || span.global_batch < 0)
      bad("world_history span from step " + std::to_string(span.from_step) + " (world size " +
          std::to_string(span.world_size) + ") is out of order or not a number of ranks");
    from = span.from_step;
  }
}

}  // namespace

namespace {

// An integer field, checked: nlohmann's get<T>() converts a number of
// another kind or range with a plain cast (1e50 into a uint32_t is undefined
// behaviour), so a manifest's numbers are read through this.
template <typename T>
T integer(const nlohmann::json& j, const char* key, const fs::path& path) {
  const auto& v = j.at(key);
  const auto refuse = [&] {
    throw CheckpointError("'" + path.string() + "' is not a valid manifest: \"" + key + "\" is " + v.dump() +
                          ", not an integer in range");
  };
  if (!v.is_number_integer()) refuse();
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) refuse();
    return static_cast<T>(u);
  }
  const auto i = v.get<int64_t>();
  if (i < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
      (i > 0 && static_cast<uint64_t>(i) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
    refuse();
  return static_cast<T>(i);
}

}  // namespace

Manifest read_manifest(const fs::path& checkpoint_dir) {
  const auto path = checkpoint_dir / kManifest;
  std::ifstream in(path);
  if (!in) throw CheckpointError("checkpoint '" + checkpoint_dir.string() + "' has no manifest.json");
  try {
    const auto j = nlohmann::json::parse(in);
    Manifest m;
    m.format_version = integer<int>(j, "format_version", path);
    j.at("atelier_version").get_to(m.atelier_version);
    m.step = integer<int64_t>(j, "step", path);
    m.epoch = integer<int64_t>(j, "epoch", path);
    m.world_size = integer<int64_t>(j, "world_size", path);
    j.at("config_hash").get_to(m.config_hash);
    j.at("created").get_to(m.created);
    for (const auto& f : j.at("files"))
      m.files.push_back(
          {f.at("name").get<std::string>(), integer<uint64_t>(f, "size", path), integer<uint32_t>(f, "crc32c", path)});
    if (j.contains("world_history")) {
      for (const auto& span : j.at("world_history"))
        m.world_history.push_back({integer<int64_t>(span, "from_step", path), integer<int64_t>(span, "world_size", path),
                                   integer<int64_t>(span, "global_batch", path)});
    }
    if (m.world_history.empty()) m.world_history.push_back({0, m.world_size, 0});
    if (j.contains("loss_network")) j.at("loss_network").get_to(m.loss_network);
    if (m.format_version != 1)
      throw CheckpointError("'" + path.string() + "' has format_version " + std::to_string(m.format_version) +
                            "; this atelier reads version 1");
    check_manifest(m, path);
    return m;
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError("'" + path.string() + "' is not a valid manifest: " + e.what());
  }
}

void verify(const fs::path& checkpoint_dir, Check check) {
  const auto manifest = read_manifest(checkpoint_dir);
  for (const auto& f : manifest.files) {
    const auto path = checkpoint_dir / f.name;
    if (!fs::is_regular_file(path)) throw CheckpointError("checkpoint file '" + path.string() + "' is missing");
    const auto size = fs::file_size(path);
    if (size != f.size)
      throw CheckpointError("checkpoint file '" + path.string() + "' has " + std::to_string(size) +
                            " bytes; the manifest says " + std::to_string(f.size));
    if (check == Check::Checksums && file_crc32c(path) != f.crc32c)
      throw CheckpointError("checkpoint file '" + path.string() + "' fails its CRC-32C check");
  }
}

fs::path resolve(const fs::path& path) {
  if (fs::is_regular_file(path / kManifest)) return path;
  if (fs::is_directory(path)) {
    const auto dir = fs::is_directory(path / "checkpoints") ? path / "checkpoints" : path;
    if (auto found = latest(dir)) return *found;
    throw CheckpointError("'" + path.string() + "' holds no complete checkpoint");
  }
  if (path.filename() == kLatest && fs::is_regular_file(path)) {
    if (auto named = named_latest(path.parent_path())) return *named;
    throw CheckpointError("'" + path.string() + "' does not name a checkpoint directory beside it");
  }
  throw CheckpointError("checkpoint '" + path.string() + "' does not exist");
}

bool verifies(const fs::path& checkpoint_dir, Check check) {
  try {
    verify(checkpoint_dir, check);
    return true;
  } catch (const CheckpointError&) {
    return false;
  }
}

std::vector<fs::path> list(const fs::path& checkpoints_dir) { return checkpoints_newest_first(checkpoints_dir); }

std::optional<fs::path> named_latest(const fs::path& checkpoints_dir) {
  std::ifstream latest_file(checkpoints_dir / kLatest);
  std::string named;
  if (latest_file >> named && step_of(named) >= 0 && fs::is_directory(checkpoints_dir / named))
    return checkpoints_dir / named;
  return std::nullopt;
}

std::optional<fs::path> latest(const fs::path& checkpoints_dir) {
  std::vector<fs::path> candidates;
  if (auto named = named_latest(checkpoints_dir)) candidates.push_back(*named);
  for (const auto& dir : checkpoints_newest_first(checkpoints_dir))
    if (candidates.empty() || dir != candidates.front()) candidates.push_back(dir);
  for (const auto& dir : candidates) {
    try {
      verify(dir);
      return dir;
    } catch (const CheckpointError& e) {
      spdlog::warn("skipping checkpoint {}: {}", dir.string(), e.what());
    }
  }
  return std::nullopt;
}

void retain(const fs::path& checkpoints_dir, int64_t keep, int64_t keep_every) {
  if (!fs::is_directory(checkpoints_dir)) return;
  const auto named = named_latest(checkpoints_dir);
  const auto all = checkpoints_newest_first(checkpoints_dir);
  std::vector<bool> kept(all.size(), false);
  bool a_kept_one_verifies = false;
  for (size_t i = 0; i < all.size(); ++i) {
    const int64_t step = step_of(all[i]);
    kept[i] = all[i] == named || static_cast<int64_t>(i) < keep || (keep_every > 0 && step % keep_every == 0);
    if (kept[i] && !a_kept_one_verifies) a_kept_one_verifies = verifies(all[i], Check::Sizes);
  }
  // Should every kept checkpoint be damaged, the newest intact one is the
  // run's only way back: it stays whatever the policy says.
  for (size_t i = 0; i < all.size() && !a_kept_one_verifies; ++i)
    if (!kept[i] && verifies(all[i], Check::Sizes)) kept[i] = a_kept_one_verifies = true;
  for (size_t i = 0; i < all.size(); ++i)
    if (!kept[i]) fs::remove_all(all[i]);
  for (const auto& entry : fs::directory_iterator(checkpoints_dir))
    if (entry.path().filename().string().rfind(kStagingPrefix, 0) == 0) fs::remove_all(entry.path());
}

}  // namespace atelier::checkpoint
