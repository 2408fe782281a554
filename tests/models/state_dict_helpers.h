// Helpers shared by the state dict tests: Python-made fixtures (written once
// per ctest run, see CMakeLists.txt), hand-written pickles and archives, and
// the message load_state_dict fails with.
#pragma once

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "models/models.h"

namespace fs = std::filesystem;
using atelier::models::load_state_dict;
using atelier::models::ModelError;

namespace {

// ---------------------------------------------------------------------------
// Helpers

// Runs a shell command; returns its exit status and its stdout+stderr.
inline std::pair<int, std::string> run_command(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed: " + command};
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  return {pclose(pipe), output};
}

inline fs::path make_temp_dir() {
  std::string pattern = (fs::temp_directory_path() / "atelier-state-dict-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

// The message load_state_dict(path) fails with ("" if it does not fail).
inline std::string load_error(const std::string& path,
                       const std::function<bool(const std::string&)>& wanted = {}) {
  try {
    load_state_dict(path, wanted);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

inline std::function<bool(const std::string&)> only(const std::string& wanted_key) {
  return [wanted_key](const std::string& key) { return key == wanted_key; };
}

// Same dtype, same shape, contiguous, owns its memory, bit-equal values.
inline void expect_exact(const torch::Tensor& actual, const torch::Tensor& expected) {
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type());
  ASSERT_EQ(actual.sizes(), expected.sizes());
  EXPECT_TRUE(actual.is_contiguous());
  // Half and bfloat16 widen to float exactly, so equality there is bit equality.
  const bool narrow =
      expected.scalar_type() == torch::kHalf || expected.scalar_type() == torch::kBFloat16;
  EXPECT_TRUE(narrow ? torch::equal(actual.to(torch::kFloat), expected.to(torch::kFloat))
                     : torch::equal(actual, expected))
      << actual << "\nexpected\n"
      << expected;
}

// ---------------------------------------------------------------------------
// Python-made fixtures: written once per test suite into a temp dir.

// Debian's interpreter has python3-torch; the `python3` on PATH may not.
const std::string kPython = "/usr/bin/python3";
const std::string kScript =
    std::string(ATELIER_SOURCE_DIR) + "/tests/models/make_state_dict_fixture.py";

// Runs the fixture script for `set` into a new temp dir; returns why it failed, or "".
// Under CTest the fixtures are written once for all tests (the
// models_python_fixtures setup test) and ATELIER_PY_FIXTURES names them:
// every test runs in its own process, and regenerating a 575 MB VGG file per
// test would dominate the suite.
inline std::string write_python_fixture(const std::string& set, fs::path* dir, bool* owned) {
  if (const char* shared = std::getenv("ATELIER_PY_FIXTURES")) {
    *dir = fs::path(shared) / set;
    *owned = false;
    if (fs::exists(*dir / "done")) return "";
    return "ATELIER_PY_FIXTURES is set but " + (*dir / "done").string() +
           " is missing: the models_python_fixtures setup test failed";
  }
  const auto [import_status, import_output] =
      run_command(kPython + " -c 'import torch, torchvision'");
  if (import_status != 0) {
    return kPython +
           " cannot import torch/torchvision; install Debian's python3-torch and "
           "python3-torchvision (apt-get install python3-torch python3-torchvision):\n" +
           import_output;
  }
  *dir = make_temp_dir();
  *owned = true;
  const auto start = std::chrono::steady_clock::now();
  const auto [status, output] =
      run_command(kPython + " '" + kScript + "' '" + dir->string() + "' " + set);
  if (status != 0) return "fixture script failed:\n" + output;
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  std::printf("[ fixture  ] %s written in %.1f s\n", set.c_str(), took.count());
  return "";
}

struct FormatsSet {
  static constexpr const char* name = "formats";
};
struct VggSet {
  static constexpr const char* name = "vgg";
};

template <class Set>
class PythonFixture : public ::testing::Test {
 public:
  static void SetUpTestSuite() { error_ = write_python_fixture(Set::name, &dir_, &owned_); }
  static void TearDownTestSuite() {
    if (owned_ && !dir_.empty()) fs::remove_all(dir_);
    dir_.clear();
  }

 protected:
  // A missing Python or a failed script fails every test of the suite, loudly.
  void SetUp() override { ASSERT_TRUE(error_.empty()) << error_; }
  static std::string file(const std::string& name) { return (dir_ / name).string(); }

  static inline fs::path dir_;
  static inline bool owned_ = false;  // made by this process, so removed by it
  static inline std::string error_;
};

using StateDictFormats = PythonFixture<FormatsSet>;
using StateDictVgg = PythonFixture<VggSet>;

// ---------------------------------------------------------------------------
// Hand-written archives: exact bytes, no Python needed.

// Pickle pieces (protocol 2, the opcodes torch.save emits).
inline std::string int1(int v) { return {'K', static_cast<char>(v)}; }
inline std::string int4(uint32_t v) {
  std::string s = "J";
  for (int i = 0; i < 4; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}
inline std::string str(const std::string& text) {
  std::string s = int4(static_cast<uint32_t>(text.size()));
  s[0] = 'X';  // BINUNICODE has BININT's 4-byte length layout
  return s + text;
}
inline std::string global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}
const std::string kProto2 = "\x80\x02";

// _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset,
// (size,), (1,), False, {}); the integers are already encoded.
inline std::string tensor(const std::string& key, const std::string& numel, const std::string& offset,
                   const std::string& size) {
  return global("torch._utils", "_rebuild_tensor_v2") + "((" + str("storage") +
         global("torch", "FloatStorage") + str(key) + str("cpu") + numel + "tQ" + offset + size +
         "\x85" + int1(1) + "\x85\x89}tR";
}
inline std::string dict(const std::vector<std::pair<std::string, std::string>>& items) {
  std::string s = kProto2 + "}(";
  for (const auto& [key, value] : items) s += str(key) + value;
  return s + "u.";
}
inline std::string floats(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

class StateDictFiles : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = make_temp_dir(); }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes data.pkl and `records` the way torch.save lays out its zip.
  std::string archive(const std::string& name, const std::string& pkl,
                      const std::map<std::string, std::string>& records = {}) {
    const std::string path = (dir_ / name).string();
    caffe2::serialize::PyTorchStreamWriter writer(path);
    writer.writeRecord("data.pkl", pkl.data(), pkl.size());
    for (const auto& [record, bytes] : records)
      writer.writeRecord(record, bytes.data(), bytes.size());
    writer.writeEndOfFile();
    return path;
  }

  fs::path dir_;
};

// The reference dict is a plain dict, which LibTorch's own torch::pickle_load
// reads: an oracle independent of the reader under test.
inline c10::Dict<c10::IValue, c10::IValue> read_reference(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes).toGenericDict();
}

}  // namespace
