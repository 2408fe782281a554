// load_state_dict: reads `torch.save(module.state_dict(), f)` without Python.
//
// The file is a zip archive (LibTorch's PyTorchStreamReader reads its
// records, whatever the archive's top folder is called): `data.pkl` describes
// the dict, `data/<key>` holds each storage's raw little-endian bytes.
// torch::pickle_load cannot be used: it rejects the OrderedDict a real
// state_dict() is (its `_metadata` attribute), see FINDINGS.md.
#include <caffe2/serialize/inline_container.h>

#include <fstream>
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

// Opens the archive; LibTorch's c10::Error becomes a ModelError naming the file.
std::unique_ptr<PyTorchStreamReader> open_archive(const std::string& path) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) throw ModelError(path + ": cannot open state dict file (missing or unreadable)");
  char first = 0;
  probe.read(&first, 1);
  // The pre-1.6 format is a bare pickle stream, and pickles start with PROTO.
  if (probe.gcount() == 1 && static_cast<unsigned char>(first) == 0x80) {
    throw ModelError(path +
                     ": legacy (non-zip) torch.save format; re-save it with "
                     "torch.save(state_dict, f) from PyTorch >= 1.6");
  }
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

}  // namespace

std::map<std::string, torch::Tensor> load_state_dict(
    const std::string& path, const std::function<bool(const std::string&)>& wanted) {
  std::unique_ptr<PyTorchStreamReader> reader = open_archive(path);
  check_byte_order(*reader, path);
  const Record pkl = read_record(*reader, path, "data.pkl", "the pickled dict");
  const pickle::Unpickled graph =
      pickle::unpickle(static_cast<const uint8_t*>(pkl.bytes.get()), pkl.size, path + ": data.pkl");
  const auto selected = select_tensors(graph, path, wanted);

  // Tensors that share a storage (views, tied weights) read its record once;
  // it is freed after its last wanted user so peak memory stays ~1x the dict.
  std::map<std::string, int> users;
  for (const auto& entry : selected) ++users[entry.second->storage.key];
  std::map<std::string, Record> storages;
  std::map<std::string, torch::Tensor> state;
  for (const auto& [key, tensor] : selected) {
    const std::string& storage_key = tensor->storage.key;
    auto cached = storages.find(storage_key);
    if (cached == storages.end()) {
      Record record = read_record(*reader, path, "data/" + storage_key, "storage of '" + key + "'");
      cached = storages.emplace(storage_key, std::move(record)).first;
    }
    // A repeated key keeps its last value, as Python's dict does.
    state.insert_or_assign(key, materialise(*tensor, cached->second, path + ": '" + key + "'"));
    if (--users[storage_key] == 0) storages.erase(cached);
  }
  return state;
}

}  // namespace atelier::models
