// The pickle subset a PyTorch state dict uses (see pickle.h).
//
// Python's pickle is a stack machine: each opcode pushes, pops or mutates
// values. MARK opens a new frame that TUPLE, SETITEMS, ... collapse. Every
// read is bound-checked against the buffer and every pop against the current
// frame, because the bytes come from a file and a lying length must become a
// ModelError, not a read past the end.
#include "models/pickle.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <unordered_map>

#include "models/models.h"

namespace atelier::models::pickle {
namespace {

// Opcode bytes, named as in Python's pickletools.
// clang-format off
enum Op : uint8_t {
  MARK = '(', EMPTY_TUPLE = ')', STOP = '.', BINFLOAT = 'G', BININT = 'J', BININT1 = 'K',
  BININT2 = 'M', NONE = 'N', BINPERSID = 'Q', REDUCE = 'R', BINUNICODE = 'X', EMPTY_LIST = ']',
  APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd', APPENDS = 'e', BINGET = 'h',
  LONG_BINGET = 'j', LIST = 'l', BINPUT = 'q', LONG_BINPUT = 'r', SETITEM = 's', TUPLE = 't',
  SETITEMS = 'u', EMPTY_DICT = '}', PROTO = 0x80, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87,
  NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d,
  BINSTRING = 'T', SHORT_BINSTRING = 'U',
  STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95
};
// clang-format on

const char* op_name(uint8_t op) {
  switch (op) {
    case MARK: return "MARK";
    case EMPTY_TUPLE: return "EMPTY_TUPLE";
    case STOP: return "STOP";
    case BINFLOAT: return "BINFLOAT";
    case BININT: return "BININT";
    case BININT1: return "BININT1";
    case BININT2: return "BININT2";
    case NONE: return "NONE";
    case BINPERSID: return "BINPERSID";
    case REDUCE: return "REDUCE";
    case BINUNICODE: return "BINUNICODE";
    case EMPTY_LIST: return "EMPTY_LIST";
    case APPEND: return "APPEND";
    case BUILD: return "BUILD";
    case GLOBAL: return "GLOBAL";
    case DICT: return "DICT";
    case APPENDS: return "APPENDS";
    case BINGET: return "BINGET";
    case LONG_BINGET: return "LONG_BINGET";
    case LIST: return "LIST";
    case BINPUT: return "BINPUT";
    case LONG_BINPUT: return "LONG_BINPUT";
    case SETITEM: return "SETITEM";
    case TUPLE: return "TUPLE";
    case SETITEMS: return "SETITEMS";
    case EMPTY_DICT: return "EMPTY_DICT";
    case PROTO: return "PROTO";
    case TUPLE1: return "TUPLE1";
    case TUPLE2: return "TUPLE2";
    case TUPLE3: return "TUPLE3";
    case NEWTRUE: return "NEWTRUE";
    case NEWFALSE: return "NEWFALSE";
    case LONG1: return "LONG1";
    case SHORT_BINUNICODE: return "SHORT_BINUNICODE";
    case BINUNICODE8: return "BINUNICODE8";
    case BINSTRING: return "BINSTRING";
    case SHORT_BINSTRING: return "SHORT_BINSTRING";
    case STACK_GLOBAL: return "STACK_GLOBAL";
    case MEMOIZE: return "MEMOIZE";
    case FRAME: return "FRAME";
    default: return nullptr;
  }
}

// torch.<T>Storage -> dtype: the typed storages torch.save names in a
// persistent id (PyTorch 1.x and 2.x alike write these legacy names).
std::optional<c10::ScalarType> storage_dtype(const std::string& qualified) {
  static const std::unordered_map<std::string, c10::ScalarType> types = {
      {"torch.FloatStorage", c10::ScalarType::Float},
      {"torch.DoubleStorage", c10::ScalarType::Double},
      {"torch.HalfStorage", c10::ScalarType::Half},
      {"torch.BFloat16Storage", c10::ScalarType::BFloat16},
      {"torch.LongStorage", c10::ScalarType::Long},
      {"torch.IntStorage", c10::ScalarType::Int},
      {"torch.ShortStorage", c10::ScalarType::Short},
      {"torch.CharStorage", c10::ScalarType::Char},
      {"torch.ByteStorage", c10::ScalarType::Byte},
      {"torch.BoolStorage", c10::ScalarType::Bool},
      {"torch.ComplexFloatStorage", c10::ScalarType::ComplexFloat},
      {"torch.ComplexDoubleStorage", c10::ScalarType::ComplexDouble},
  };
  auto found = types.find(qualified);
  if (found == types.end()) return std::nullopt;
  return found->second;
}

// A name read from the file, fit for an error message: at most 100 bytes,
// anything unprintable as \xNN (a corrupt GLOBAL line can hold any byte).
std::string printable(const std::string& raw) {
  std::string out;
  for (size_t i = 0; i < raw.size() && i < 100; ++i) {
    const auto c = static_cast<unsigned char>(raw[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return raw.size() > 100 ? out + "..." : out;
}

const char* const kOrderedDict = "collections.OrderedDict";
const char* const kRebuildTensor = "torch._utils._rebuild_tensor_v2";
const char* const kRebuildTensorV1 = "torch._utils._rebuild_tensor";  // legacy files of PyTorch < 1.0
const char* const kRebuildParameter = "torch._utils._rebuild_parameter";
const char* const kRebuildParameterWithState = "torch._utils._rebuild_parameter_with_state";

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const std::string& source)
      : data_(data), size_(size), source_(source) {}

  Unpickled run();

 private:
  [[noreturn]] void fail(const std::string& what) const;

  // Bound-checked reads from the buffer.
  const uint8_t* take(size_t n);
  uint64_t read_le(size_t n);
  std::string read_line();
  std::string read_string(size_t length_bytes) {
    const uint64_t n = read_le(length_bytes);
    if (n > size_ - pos_) fail("string of " + std::to_string(n) + " bytes runs past the end");
    const auto* p = take(static_cast<size_t>(n));
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }

  // The value stack; pops never reach below the innermost MARK.
  ValueId add(Value value);
  void push(ValueId id) { stack_.push_back(id); }
  ValueId pop();
  ValueId top() const;
  std::vector<ValueId> pop_to_mark();
  Value& at(ValueId id) { return out_.values[id]; }
  Value& expect(ValueId id, Value::Kind kind, const char* role);

  bool scalar_op();
  bool container_op();
  bool memo_op();
  bool object_op();

  ValueId make_global(const std::string& module, const std::string& name);
  ValueId reduce(ValueId callable, ValueId args);
  ValueId rebuild_tensor(const std::string& function, const std::vector<ValueId>& args);
  ValueId persistent_storage(ValueId pid);
  ValueId make_tuple(std::vector<ValueId> items);

  const uint8_t* data_;
  size_t size_;
  const std::string source_;
  size_t pos_ = 0;       // next byte to read
  size_t op_start_ = 0;  // offset of the opcode being executed, for errors
  uint8_t op_ = 0;
  Unpickled out_;
  std::vector<ValueId> stack_;
  std::vector<size_t> marks_;  // stack_ sizes at each open MARK
  std::unordered_map<uint64_t, ValueId> memo_;
};

void Unpickler::fail(const std::string& what) const {
  const char* name = op_name(op_);
  std::string where = source_ + ": byte " + std::to_string(op_start_);
  if (name != nullptr) where += std::string(" (") + name + ")";
  throw ModelError(where + ": " + what);
}

const uint8_t* Unpickler::take(size_t n) {
  if (n > size_ - pos_) {
    fail("needs " + std::to_string(n) + " bytes but only " + std::to_string(size_ - pos_) +
         " remain (truncated pickle?)");
  }
  const uint8_t* p = data_ + pos_;
  pos_ += n;
  return p;
}

uint64_t Unpickler::read_le(size_t n) {
  const uint8_t* p = take(n);
  uint64_t value = 0;
  for (size_t i = 0; i < n; ++i) value |= static_cast<uint64_t>(p[i]) << (8 * i);
  return value;
}

std::string Unpickler::read_line() {
  const auto* begin = data_ + pos_;
  const auto* end = static_cast<const uint8_t*>(std::memchr(begin, '\n', size_ - pos_));
  if (end == nullptr) fail("line without a terminating newline (truncated pickle?)");
  pos_ += static_cast<size_t>(end - begin) + 1;
  return std::string(reinterpret_cast<const char*>(begin), static_cast<size_t>(end - begin));
}

ValueId Unpickler::add(Value value) {
  out_.values.push_back(std::move(value));
  return static_cast<ValueId>(out_.values.size() - 1);
}

ValueId Unpickler::pop() {
  const size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) fail("stack underflow");
  const ValueId id = stack_.back();
  stack_.pop_back();
  return id;
}

ValueId Unpickler::top() const {
  const size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) fail("stack underflow");
  return stack_.back();
}

std::vector<ValueId> Unpickler::pop_to_mark() {
  if (marks_.empty()) fail("no MARK to collect items from");
  const size_t mark = marks_.back();
  marks_.pop_back();
  std::vector<ValueId> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
  stack_.resize(mark);
  return items;
}

Value& Unpickler::expect(ValueId id, Value::Kind kind, const char* role) {
  Value& value = at(id);
  if (value.kind != kind) {
    fail(std::string(role) + " must be a " + kind_name(kind) + ", got a " + kind_name(value.kind));
  }
  return value;
}

ValueId Unpickler::make_tuple(std::vector<ValueId> items) {
  Value tuple;
  tuple.kind = Value::Kind::Tuple;
  tuple.items = std::move(items);
  return add(std::move(tuple));
}

Unpickled Unpickler::run() {
  if (size_ > std::numeric_limits<ValueId>::max()) fail("pickle larger than 4 GiB");
  while (pos_ < size_) {
    op_start_ = pos_;
    op_ = data_[pos_++];
    if (op_ == STOP) {
      out_.root = pop();
      out_.end = pos_;
      return std::move(out_);
    }
    if (!scalar_op() && !container_op() && !memo_op() && !object_op()) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", op_);
      fail(std::string("unsupported pickle opcode ") + hex +
           " (state dicts use pickle protocol 2 as torch.save writes by default)");
    }
  }
  op_start_ = size_;
  op_ = 0;
  fail("pickle ends without STOP (truncated file?)");
}

// Opcodes that push one plain value.
bool Unpickler::scalar_op() {
  Value value;
  switch (op_) {
    case NONE: break;
    case NEWTRUE:
    case NEWFALSE:
      value.kind = Value::Kind::Bool;
      value.boolean = op_ == NEWTRUE;
      break;
    case BININT:
      value.kind = Value::Kind::Int;
      value.integer = static_cast<int32_t>(static_cast<uint32_t>(read_le(4)));
      break;
    case BININT1:
    case BININT2:
      value.kind = Value::Kind::Int;
      value.integer = static_cast<int64_t>(read_le(op_ == BININT1 ? 1 : 2));
      break;
    case LONG1: {
      // Little-endian two's complement of n bytes; n == 0 means 0.
      const size_t n = *take(1);
      if (n > 8) fail("integer of " + std::to_string(n) + " bytes does not fit 64 bits");
      uint64_t bits = read_le(n);
      if (n > 0 && n < 8 && (bits >> (8 * n - 1)) != 0) bits |= ~uint64_t{0} << (8 * n);
      value.kind = Value::Kind::Int;
      value.integer = static_cast<int64_t>(bits);
      break;
    }
    case BINFLOAT: {
      // The one big-endian field in pickle.
      const uint8_t* p = take(8);
      uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];
      value.kind = Value::Kind::Float;
      std::memcpy(&value.real, &bits, sizeof bits);
      break;
    }
    case SHORT_BINUNICODE:
    case BINUNICODE:
    case BINUNICODE8:
      value.kind = Value::Kind::String;
      value.text = read_string(op_ == SHORT_BINUNICODE ? 1 : op_ == BINUNICODE ? 4 : 8);
      break;
    case SHORT_BINSTRING:
    case BINSTRING:  // Python 2's str, in files saved from Python 2
      value.kind = Value::Kind::String;
      value.text = read_string(op_ == SHORT_BINSTRING ? 1 : 4);
      break;
    default: return false;
  }
  push(add(std::move(value)));
  return true;
}

// Tuples, lists and dicts: building them and adding items.
bool Unpickler::container_op() {
  switch (op_) {
    case MARK: marks_.push_back(stack_.size()); return true;
    case EMPTY_TUPLE: push(make_tuple({})); return true;
    case TUPLE: push(make_tuple(pop_to_mark())); return true;
    case TUPLE1:
    case TUPLE2:
    case TUPLE3: {
      std::vector<ValueId> items(static_cast<size_t>(op_ - TUPLE1 + 1));
      for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
      push(make_tuple(std::move(items)));
      return true;
    }
    case EMPTY_LIST:
    case LIST: {
      Value list;
      list.kind = Value::Kind::List;
      if (op_ == LIST) list.items = pop_to_mark();
      push(add(std::move(list)));
      return true;
    }
    case APPEND:
    case APPENDS: {
      std::vector<ValueId> items = op_ == APPEND ? std::vector<ValueId>{pop()} : pop_to_mark();
      Value& list = expect(top(), Value::Kind::List, "APPEND target");
      list.items.insert(list.items.end(), items.begin(), items.end());
      return true;
    }
    case EMPTY_DICT:
    case DICT:
    case SETITEM:
    case SETITEMS: {
      std::vector<ValueId> flat;
      if (op_ == SETITEM) {
        const ValueId value = pop();
        flat = {pop(), value};
      } else if (op_ != EMPTY_DICT) {
        flat = pop_to_mark();
      }
      if (flat.size() % 2 != 0) fail("odd number of items for a dict");
      ValueId dict = 0;
      if (op_ == EMPTY_DICT || op_ == DICT) {
        Value fresh;
        fresh.kind = Value::Kind::Dict;
        dict = add(std::move(fresh));
        push(dict);
      } else {
        dict = top();
        expect(dict, Value::Kind::Dict, "SETITEM target");
      }
      // Repeated keys are appended; the reader keeps the last, as Python does.
      for (size_t i = 0; i < flat.size(); i += 2)
        at(dict).entries.emplace_back(flat[i], flat[i + 1]);
      return true;
    }
    default: return false;
  }
}

// The memo lets later opcodes refer back to an earlier value.
bool Unpickler::memo_op() {
  switch (op_) {
    case BINPUT:
    case LONG_BINPUT: memo_[read_le(op_ == BINPUT ? 1 : 4)] = top(); return true;
    case MEMOIZE: memo_[memo_.size()] = top(); return true;
    case BINGET:
    case LONG_BINGET: {
      const uint64_t index = read_le(op_ == BINGET ? 1 : 4);
      auto found = memo_.find(index);
      if (found == memo_.end()) fail("memo entry " + std::to_string(index) + " was never stored");
      push(found->second);
      return true;
    }
    default: return false;
  }
}

// Globals, calls (REDUCE), object state (BUILD) and storages (BINPERSID).
bool Unpickler::object_op() {
  switch (op_) {
    case PROTO: {
      const unsigned version = *take(1);
      if (version > 5) fail("pickle protocol " + std::to_string(version) + " is unknown");
      return true;
    }
    case FRAME: read_le(8); return true;  // protocol 4 framing: only a read-ahead hint
    case GLOBAL: {
      const std::string module = read_line();
      push(make_global(module, read_line()));
      return true;
    }
    case STACK_GLOBAL: {
      const std::string name = expect(pop(), Value::Kind::String, "STACK_GLOBAL name").text;
      const std::string module = expect(pop(), Value::Kind::String, "STACK_GLOBAL module").text;
      push(make_global(module, name));
      return true;
    }
    case REDUCE: {
      const ValueId args = pop();
      push(reduce(pop(), args));
      return true;
    }
    case BUILD: {
      // OrderedDict's state is {'_metadata': per-module versions}; tensors
      // do not need it, and only dicts may receive it.
      const Value::Kind state = at(pop()).kind;
      expect(top(), Value::Kind::Dict, "BUILD target");
      if (state != Value::Kind::Dict && state != Value::Kind::None) {
        fail(std::string("BUILD state must be a dict, got a ") + kind_name(state));
      }
      return true;
    }
    case BINPERSID: push(persistent_storage(pop())); return true;
    default: return false;
  }
}

ValueId Unpickler::make_global(const std::string& module, const std::string& name) {
  const std::string qualified = module + "." + name;
  if (qualified != kOrderedDict && qualified != kRebuildTensor && qualified != kRebuildTensorV1 &&
      qualified != kRebuildParameter &&
      qualified != kRebuildParameterWithState && !storage_dtype(qualified)) {
    std::string hint = "a state dict may hold only tensors";
    if (qualified == "torch.UntypedStorage" || qualified == "torch.storage.TypedStorage" ||
        qualified == "torch.storage.UntypedStorage") {
      hint = "bare storages are not supported, only tensors with typed storages";
    }
    fail("unsupported global '" + printable(qualified) + "' (" + hint + ")");
  }
  Value global;
  global.kind = Value::Kind::Global;
  global.text = qualified;
  return add(std::move(global));
}

ValueId Unpickler::reduce(ValueId callable, ValueId args_id) {
  const std::string function = expect(callable, Value::Kind::Global, "REDUCE callable").text;
  const std::vector<ValueId> args = expect(args_id, Value::Kind::Tuple, "REDUCE arguments").items;
  if (function == kOrderedDict) {
    if (!args.empty()) fail("collections.OrderedDict called with arguments");
    Value dict;
    dict.kind = Value::Kind::Dict;
    return add(std::move(dict));
  }
  if (function == kRebuildTensor || function == kRebuildTensorV1) return rebuild_tensor(function, args);
  if (function == kRebuildParameter || function == kRebuildParameterWithState) {
    // (data, requires_grad, backward_hooks[, state]): the data is the tensor.
    if (args.size() < 3) fail(function + " needs at least 3 arguments");
    expect(args[0], Value::Kind::Tensor, "parameter data");
    return args[0];
  }
  fail("'" + function + "' cannot be called");
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
// backward_hooks[, metadata]), or _rebuild_tensor(storage, storage_offset,
// size, stride) of old legacy files. Only the view geometry matters here;
// whether it fits its storage is checked by the reader, which knows the key.
ValueId Unpickler::rebuild_tensor(const std::string& function, const std::vector<ValueId>& args) {
  const bool v1 = function == kRebuildTensorV1;
  if (v1 ? args.size() != 4 : args.size() != 6 && args.size() != 7) {
    fail(function + (v1 ? " takes 4 arguments, got " : " takes 6 or 7 arguments, got ") +
         std::to_string(args.size()));
  }
  Value tensor;
  tensor.kind = Value::Kind::Tensor;
  tensor.tensor.storage = expect(args[0], Value::Kind::Storage, "tensor storage").storage;
  tensor.tensor.offset = expect(args[1], Value::Kind::Int, "tensor storage offset").integer;
  for (int field = 0; field < 2; ++field) {
    auto& dims = field == 0 ? tensor.tensor.size : tensor.tensor.stride;
    const auto& items = expect(args[2 + field], Value::Kind::Tuple, "tensor size/stride").items;
    for (const ValueId item : items) {
      dims.push_back(expect(item, Value::Kind::Int, "tensor size/stride entry").integer);
    }
  }
  if (tensor.tensor.size.size() != tensor.tensor.stride.size()) {
    fail("tensor size and stride have different lengths");
  }
  return add(std::move(tensor));
}

// ('storage', torch.<T>Storage, key, location, numel), as torch.save writes
// it; the legacy format adds view_metadata, None unless the storage was a
// view of another (PyTorch < 0.4), which is refused.
ValueId Unpickler::persistent_storage(ValueId pid) {
  const std::vector<ValueId> fields = expect(pid, Value::Kind::Tuple, "persistent id").items;
  if ((fields.size() != 5 && fields.size() != 6) || at(fields[0]).kind != Value::Kind::String ||
      at(fields[0]).text != "storage") {
    fail("persistent id is not ('storage', type, key, location, numel[, view_metadata])");
  }
  if (fields.size() == 6 && at(fields[5]).kind != Value::Kind::None)
    fail("storage views (a legacy persistent id with view metadata) are not supported");
  const std::string type = expect(fields[1], Value::Kind::Global, "storage type").text;
  const std::optional<c10::ScalarType> dtype = storage_dtype(type);
  if (!dtype) fail("'" + type + "' is not a typed storage");
  Value storage;
  storage.kind = Value::Kind::Storage;
  storage.storage.dtype = *dtype;
  storage.storage.key = expect(fields[2], Value::Kind::String, "storage key").text;
  storage.storage.location = expect(fields[3], Value::Kind::String, "storage location").text;
  storage.storage.numel = expect(fields[4], Value::Kind::Int, "storage numel").integer;
  if (storage.storage.numel < 0) fail("negative storage size");
  return add(std::move(storage));
}

}  // namespace

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::String: return "str";
    case Value::Kind::Tuple: return "tuple";
    case Value::Kind::List: return "list";
    case Value::Kind::Dict: return "dict";
    case Value::Kind::Global: return "global";
    case Value::Kind::Storage: return "storage";
    case Value::Kind::Tensor: return "tensor";
  }
  return "?";
}

Unpickled unpickle(const uint8_t* data, size_t size, const std::string& source) {
  return Unpickler(data, size, source).run();
}

}  // namespace atelier::models::pickle
