// load_state_dict: reads `torch.save(module.state_dict(), f)` without Python,
// in both formats torch.save has written.
//
// Zip (PyTorch >= 1.6): LibTorch's PyTorchStreamReader reads its records,
// whatever the archive's top folder is called: `data.pkl` describes the dict,
// `data/<key>` holds each storage's raw little-endian bytes.
//
// Legacy (before 1.6, and `_use_new_zipfile_serialization=False`; most
// published weights, torchvision's vgg19-dcbb9e9d.pth among them): pickles in
// a row (magic number, protocol version 1001, sys_info, the dict, the sorted
// list of storage keys), then for each key in that order its element count
// as a little-endian int64 and its raw bytes. The file is mapped, not read:
// only the storages of wanted keys are touched, and every length is checked
// against the file's size before anything is copied.
//
// torch::pickle_load cannot be used: it rejects the OrderedDict a real
// state_dict() is (its `_metadata` attribute), see FINDINGS.md.
#include <c10/core/CPUAllocator.h>
#include <caffe2/serialize/inline_container.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "models/models.h"
#include "models/pickle.h"

namespace atelier::models {
namespace {

using caffe2::serialize::PyTorchStreamReader;
using pickle::TensorRef;
using pickle::Value;

// Raw bytes of one archive record.
struct Record {
  at::DataPtr bytes;
  size_t size = 0;
};

// Where a format keeps its storages: the bytes of the storage named `key`.
using StorageSource = std::function<Record(const std::string& key, const std::string& purpose)>;

// The pre-1.6 format is a bare pickle stream, and pickles start with PROTO;
// a zip archive starts with "PK".
bool is_legacy(const std::string& path) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) throw ModelError(path + ": cannot open state dict file (missing or unreadable)");
  char first = 0;
  probe.read(&first, 1);
  return probe.gcount() == 1 && static_cast<unsigned char>(first) == 0x80;
}

// Opens the archive; LibTorch's c10::Error becomes a ModelError naming the file.
std::unique_ptr<PyTorchStreamReader> open_archive(const std::string& path) {
  try {
    return std::make_unique<PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    throw ModelError(path + ": not a readable PyTorch zip archive: " + e.what_without_backtrace());
  }
}

Record read_record(PyTorchStreamReader& reader, const std::string& path, const std::string& name,
                   const std::string& purpose) {
  try {
    if (!reader.hasRecord(name)) {
      throw ModelError(path + ": archive has no record '" + name + "' (" + purpose + ")");
    }
    auto [bytes, size] = reader.getRecord(name);
    return Record{std::move(bytes), size};
  } catch (const c10::Error& e) {
    throw ModelError(path + ": cannot read record '" + name + "' (" + purpose +
                     "): " + e.what_without_backtrace());
  }
}

// torch >= 2.0 records the writer's byte order; storages are raw memory, so
// big-endian files would need every element swapped, which we do not do.
void check_byte_order(PyTorchStreamReader& reader, const std::string& path) {
  if (!reader.hasRecord("byteorder")) return;
  const Record order = read_record(reader, path, "byteorder", "byte order");
  const std::string text(static_cast<const char*>(order.bytes.get()), order.size);
  if (text != "little") throw ModelError(path + ": storages are '" + text + "'-endian");
}

// Refuses geometry that from_blob/as_strided would turn into an out-of-bounds
// read: negative sizes or strides, or a view reaching past its storage.
// Returns the number of elements of the view.
int64_t checked_numel(const TensorRef& t, const std::string& where) {
  if (t.offset < 0) throw ModelError(where + ": negative storage offset");
  int64_t numel = 1;
  int64_t last = t.offset;  // highest storage element the view touches
  bool overflow = false;
  for (size_t d = 0; d < t.size.size(); ++d) {
    if (t.size[d] < 0 || t.stride[d] < 0) throw ModelError(where + ": negative size or stride");
    int64_t reach = 0;
    overflow |= __builtin_mul_overflow(numel, t.size[d], &numel);
    if (t.size[d] > 0) {
      overflow |= __builtin_mul_overflow(t.size[d] - 1, t.stride[d], &reach);
      overflow |= __builtin_add_overflow(last, reach, &last);
    }
  }
  if (overflow) throw ModelError(where + ": tensor geometry overflows 64 bits");
  if (numel > 0 && last >= t.storage.numel) {
    throw ModelError(where + ": view reaches element " + std::to_string(last) +
                     " of a storage of " + std::to_string(t.storage.numel) + " elements");
  }
  return numel;
}

// Copies the view out of the storage bytes into a contiguous tensor that owns
// its memory, so the archive's buffers can be freed.
torch::Tensor materialise(const TensorRef& t, const Record& storage, const std::string& where) {
  const int64_t numel = checked_numel(t, where);
  const auto dtype = t.storage.dtype;
  const auto element = static_cast<int64_t>(c10::elementSize(dtype));
  int64_t expected = 0;
  if (__builtin_mul_overflow(t.storage.numel, element, &expected) ||
      static_cast<uint64_t>(expected) != storage.size) {
    throw ModelError(where + ": storage record holds " + std::to_string(storage.size) +
                     " bytes, its persistent id promises " + std::to_string(t.storage.numel) +
                     " x " + std::to_string(element));
  }
  try {
    if (numel == 0) return torch::empty(t.size, torch::TensorOptions().dtype(dtype));
    // Bools are read as bytes and compared with 0: a corrupt byte other than
    // 0/1 must not become an invalid bool.
    const auto read_as = dtype == torch::kBool ? torch::kUInt8 : dtype;
    const torch::Tensor flat = torch::from_blob(storage.bytes.get(), {t.storage.numel},
                                                torch::TensorOptions().dtype(read_as));
    const torch::Tensor view = flat.as_strided(t.size, t.stride, t.offset);
    if (dtype == torch::kBool) return view.ne(0).contiguous();
    return view.clone(at::MemoryFormat::Contiguous);
  } catch (const c10::Error& e) {
    throw ModelError(where + ": " + e.what_without_backtrace());
  }
}

// The wanted tensors of the dict, in file order; keys and values checked.
std::vector<std::pair<std::string, const TensorRef*>> select_tensors(
    const pickle::Unpickled& graph, const std::string& path,
    const std::function<bool(const std::string&)>& wanted) {
  const Value& root = graph[graph.root];
  if (root.kind != Value::Kind::Dict) {
    throw ModelError(path + ": holds a " + std::string(pickle::kind_name(root.kind)) +
                     ", not a state dict");
  }
  std::vector<std::pair<std::string, const TensorRef*>> selected;
  for (const auto& [key_id, value_id] : root.entries) {
    const Value& key = graph[key_id];
    if (key.kind != Value::Kind::String) {
      throw ModelError(path + ": state dict key is a " + std::string(pickle::kind_name(key.kind)) +
                       ", not a str");
    }
    if (wanted && !wanted(key.text)) continue;
    const Value& value = graph[value_id];
    if (value.kind != Value::Kind::Tensor) {
      throw ModelError(path + ": '" + key.text + "' is a " +
                       std::string(pickle::kind_name(value.kind)) + ", not a tensor");
    }
    selected.emplace_back(key.text, &value.tensor);
  }
  return selected;
}

// A file mapped read-only; unmapped when destroyed.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw ModelError(path + ": cannot open state dict file: " + std::strerror(errno));
    struct stat info {};
    if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
      ::close(fd);
      throw ModelError(path + ": not a regular file");
    }
    size_ = static_cast<size_t>(info.st_size);
    if (size_ > 0) {
      void* mapped = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (mapped == MAP_FAILED) {
        const std::string why = std::strerror(errno);
        ::close(fd);
        throw ModelError(path + ": cannot map state dict file: " + why);
      }
      data_ = static_cast<const uint8_t*>(mapped);
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// torch.save's legacy MAGIC_NUMBER, 0x1950a86a20f9469cfc6c, as the 10 bytes
// of its LONG1, and the legacy PROTOCOL_VERSION.
constexpr uint8_t kLegacyMagic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr int64_t kLegacyProtocolVersion = 1001;

// A legacy torch.save file: its pickled dict and where each storage's bytes
// lie in the file. Every storage key, count and length is checked when the
// file is opened; bytes are copied only when record() asks for them.
class LegacyFile {
 public:
  explicit LegacyFile(const std::string& path) : path_(path), file_(path) {
    size_t pos = skip_magic();
    const auto version = next_pickle(pos, "the protocol version");
    const auto& v = version[version.root];
    if (v.kind != Value::Kind::Int || v.integer != kLegacyProtocolVersion)
      throw ModelError(path_ + ": legacy torch.save protocol version is not " +
                       std::to_string(kLegacyProtocolVersion));
    check_sys_info(next_pickle(pos, "sys_info"));
    dict_ = next_pickle(pos, "the pickled dict");
    const auto keys = next_pickle(pos, "the storage keys");
    locate_storages(keys, pos);
  }

  const pickle::Unpickled& dict() const { return dict_; }

  // A copy of storage `key`'s bytes (aligned for its dtype, unlike the file).
  Record record(const std::string& key, const std::string& purpose) const {
    const auto found = records_.find(key);
    if (found == records_.end())
      throw ModelError(path_ + ": no storage '" + key + "' follows the pickles (" + purpose + ")");
    const auto [offset, size] = found->second;
    Record record{c10::GetCPUAllocator()->allocate(size), size};
    if (size > 0) std::memcpy(record.bytes.get(), file_.data() + offset, size);
    return record;
  }

 private:
  [[noreturn]] void fail(size_t at, const std::string& what) const {
    throw ModelError(path_ + ": legacy torch.save format, byte " + std::to_string(at) + ": " + what);
  }

  // PROTO n, [FRAME], LONG1 of the 10 magic bytes, STOP.
  size_t skip_magic() const {
    const uint8_t* d = file_.data();
    const size_t n = file_.size();
    size_t pos = 2;  // PROTO and its version, checked by is_legacy
    if (pos < n && d[pos] == 0x95) pos += 9;  // protocol 4 framing
    if (pos > n || n - pos < 13 || d[pos] != 0x8a || d[pos + 1] != 10 ||
        std::memcmp(d + pos + 2, kLegacyMagic, sizeof kLegacyMagic) != 0 || d[pos + 12] != '.')
      throw ModelError(path_ + ": a pickle, but not one torch.save wrote (no legacy magic number): "
                       "expected a PyTorch state dict (.pth)");
    return pos + 13;
  }

  pickle::Unpickled next_pickle(size_t& pos, const std::string& what) const {
    if (pos >= file_.size()) fail(pos, "the file ends before " + what + " (truncated?)");
    // unpickle() refuses more than 4 GiB of pickle; what follows it here is storages.
    const size_t rest = std::min<size_t>(file_.size() - pos, std::numeric_limits<uint32_t>::max());
    auto out = pickle::unpickle(file_.data() + pos, rest,
                                path_ + ": " + what + " (legacy format, from byte " + std::to_string(pos) + ")");
    pos += out.end;
    return out;
  }

  // {'protocol_version': 1001, 'little_endian': True, 'type_sizes': ...}:
  // storages are raw memory of the writer's byte order.
  void check_sys_info(const pickle::Unpickled& info) const {
    const auto& root = info[info.root];
    if (root.kind != Value::Kind::Dict) throw ModelError(path_ + ": legacy sys_info is not a dict");
    for (const auto& [key, value] : root.entries)
      if (info[key].kind == Value::Kind::String && info[key].text == "little_endian") {
        if (info[value].kind == Value::Kind::Bool && info[value].boolean) return;
        throw ModelError(path_ + ": storages were written big-endian, which is not supported");
      }
    throw ModelError(path_ + ": legacy sys_info does not say the byte order");
  }

  // After the keys pickle: per key, an int64 element count and the bytes.
  void locate_storages(const pickle::Unpickled& keys, size_t pos) {
    std::map<std::string, const pickle::StorageRef*> storages;
    for (const auto& value : dict_.values) {
      if (value.kind != Value::Kind::Storage) continue;
      const auto [it, added] = storages.emplace(value.storage.key, &value.storage);
      if (!added && (it->second->dtype != value.storage.dtype || it->second->numel != value.storage.numel))
        throw ModelError(path_ + ": storage '" + value.storage.key + "' is named with two types or sizes");
    }
    const auto& list = keys[keys.root];
    if (list.kind != Value::Kind::List) throw ModelError(path_ + ": legacy storage keys are not a list");
    for (const auto item : list.items) {
      if (keys[item].kind != Value::Kind::String) throw ModelError(path_ + ": a legacy storage key is not a str");
      const std::string& key = keys[item].text;
      const auto ref = storages.find(key);
      if (ref == storages.end()) fail(pos, "storage '" + key + "' is listed but no tensor uses it");
      if (file_.size() - pos < 8) fail(pos, "the file ends in storage '" + key + "''s size (truncated?)");
      uint64_t count = 0;
      for (int b = 0; b < 8; ++b) count |= static_cast<uint64_t>(file_.data()[pos + b]) << (8 * b);
      pos += 8;
      const auto element = static_cast<uint64_t>(c10::elementSize(ref->second->dtype));
      if (count != static_cast<uint64_t>(ref->second->numel))
        fail(pos - 8, "storage '" + key + "' holds " + std::to_string(count) + " elements, its persistent id says " +
                          std::to_string(ref->second->numel));
      uint64_t bytes = 0;
      if (__builtin_mul_overflow(count, element, &bytes) || bytes > file_.size() - pos)
        fail(pos, "storage '" + key + "' needs " + std::to_string(count) + " x " + std::to_string(element) +
                      " bytes but only " + std::to_string(file_.size() - pos) + " remain (truncated?)");
      if (!records_.emplace(key, std::make_pair(pos, static_cast<size_t>(bytes))).second)
        fail(pos, "storage '" + key + "' is listed twice");
      pos += static_cast<size_t>(bytes);
    }
    if (pos != file_.size())
      fail(pos, std::to_string(file_.size() - pos) + " bytes follow the last storage (not a state dict file?)");
  }

  std::string path_;
  MappedFile file_;
  pickle::Unpickled dict_;
  std::map<std::string, std::pair<size_t, size_t>> records_;  // key -> (offset, bytes) in the file
};

// The wanted tensors of `graph`, their storages read from `source` once
// each (views and tied weights share one) and freed after their last wanted
// user, so peak memory stays ~1x the dict.
std::map<std::string, torch::Tensor> read_tensors(const pickle::Unpickled& graph, const std::string& path,
                                                  const std::function<bool(const std::string&)>& wanted,
                                                  const StorageSource& source) {
  const auto selected = select_tensors(graph, path, wanted);
  std::map<std::string, int> users;
  for (const auto& entry : selected) ++users[entry.second->storage.key];
  std::map<std::string, Record> storages;
  std::map<std::string, torch::Tensor> state;
  for (const auto& [key, tensor] : selected) {
    const std::string& storage_key = tensor->storage.key;
    auto cached = storages.find(storage_key);
    if (cached == storages.end())
      cached = storages.emplace(storage_key, source(storage_key, "storage of '" + key + "'")).first;
    // A repeated key keeps its last value, as Python's dict does.
    state.insert_or_assign(key, materialise(*tensor, cached->second, path + ": '" + key + "'"));
    if (--users[storage_key] == 0) storages.erase(cached);
  }
  return state;
}

std::map<std::string, torch::Tensor> load_zip(const std::string& path,
                                              const std::function<bool(const std::string&)>& wanted) {
  std::unique_ptr<PyTorchStreamReader> reader = open_archive(path);
  check_byte_order(*reader, path);
  const Record pkl = read_record(*reader, path, "data.pkl", "the pickled dict");
  const pickle::Unpickled graph =
      pickle::unpickle(static_cast<const uint8_t*>(pkl.bytes.get()), pkl.size, path + ": data.pkl");
  return read_tensors(graph, path, wanted, [&](const std::string& key, const std::string& purpose) {
    return read_record(*reader, path, "data/" + key, purpose);
  });
}

}  // namespace

std::string state_dict_format(const std::string& path) {
  return is_legacy(path) ? "legacy format" : "zip format";
}

std::map<std::string, torch::Tensor> load_state_dict(
    const std::string& path, const std::function<bool(const std::string&)>& wanted) {
  if (!is_legacy(path)) return load_zip(path, wanted);
  const LegacyFile file(path);
  return read_tensors(file.dict(), path, wanted, [&file](const std::string& key, const std::string& purpose) {
    return file.record(key, purpose);
  });
}

}  // namespace atelier::models
