// models/pickle.h — private to models/: the small unpickler behind
// load_state_dict.
//
// A file from `torch.save(module.state_dict(), f)` holds a pickle (data.pkl)
// that describes every tensor (storage key, dtype, offset, size, stride) and
// one raw byte record per storage. This reads the pickle into a flat graph of
// values without touching any storage bytes, so the caller fetches only the
// storages of the keys it wants.
//
// Only the opcodes and globals a state dict uses are understood; anything
// else is a ModelError naming the source, the opcode or global and its byte
// offset, so a file from an unexpected writer fails loudly, never silently.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace atelier::models::pickle {

// Index of a value in Unpickled::values. Values refer to each other by index,
// never by pointer: a hostile pickle can then build neither a reference cycle
// (a leak) nor a deep chain of owners (a stack overflow on destruction).
using ValueId = uint32_t;

// A storage as a persistent id names it: ('storage', torch.<T>Storage, key,
// location, numel), plus a view_metadata None in the legacy format. Its bytes
// are the archive record `data/<key>` (legacy: the record of `key` after the
// pickles).
struct StorageRef {
  std::string key;                                     // record name below data/
  c10::ScalarType dtype = c10::ScalarType::Undefined;  // torch.FloatStorage -> Float, ...
  int64_t numel = 0;                                   // elements of `dtype` the record must hold
  std::string location;  // device it was saved from ("cpu", "cuda:0"); informational
};

// A tensor as torch._utils._rebuild_tensor_v2 describes it: a strided view
// into a storage. Several tensors may view the same storage.
struct TensorRef {
  StorageRef storage;
  int64_t offset = 0;           // in elements of storage.dtype
  std::vector<int64_t> size;    // one entry per dimension
  std::vector<int64_t> stride;  // same length as size, in elements
};

struct Value {
  enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Storage, Tensor };
  Kind kind = Kind::None;
  bool boolean = false;                              // Bool
  int64_t integer = 0;                               // Int
  double real = 0.0;                                 // Float
  std::string text;                                  // String; Global as "module.name"
  std::vector<ValueId> items;                        // Tuple, List
  std::vector<std::pair<ValueId, ValueId>> entries;  // Dict, in insertion order
  StorageRef storage;                                // Storage
  TensorRef tensor;                                  // Tensor
};

// The whole object graph of one pickle; `root` is what STOP returned.
struct Unpickled {
  std::vector<Value> values;
  ValueId root = 0;
  size_t end = 0;  // offset just past STOP: where a following pickle starts

  const Value& operator[](ValueId id) const { return values[id]; }
};

// Human-readable kind name for error messages ("dict", "tensor", ...).
const char* kind_name(Value::Kind kind);

// Parses one pickle from the start of `size` bytes, up to its STOP (bytes
// after it are left alone: the legacy format is several pickles in a row).
// `source` prefixes every error message (e.g. "/path/model.pth: data.pkl").
// Throws ModelError.
Unpickled unpickle(const uint8_t* data, size_t size, const std::string& source);

}  // namespace atelier::models::pickle
