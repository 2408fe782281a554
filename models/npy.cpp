// A reader for NumPy's .npy files (format versions 1, 2 and 3): the header's
// Python-literal dict is parsed for its three keys, the data read as is.
#include "models/models.h"

#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>

namespace atelier::models {
namespace {

[[noreturn]] void refuse(const std::string& name, const std::string& why) {
  throw ModelError(".npy '" + name + "': " + why);
}

uint32_t little_endian(const std::string& bytes, size_t at, size_t size) {
  uint32_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  return value;
}

// The dtype a descr such as '<f4' names, and its element size.
std::pair<torch::ScalarType, int64_t> dtype_of(const std::string& descr, const std::string& name) {
  static const std::map<std::string, std::pair<torch::ScalarType, int64_t>> known = {
      {"<f4", {torch::kFloat32, 4}}, {"<f8", {torch::kFloat64, 8}}, {"<f2", {torch::kFloat16, 2}},
      {"<i8", {torch::kInt64, 8}},   {"<i4", {torch::kInt32, 4}},   {"<i2", {torch::kInt16, 2}},
      {"|i1", {torch::kInt8, 1}},    {"|u1", {torch::kUInt8, 1}},   {"|b1", {torch::kBool, 1}}};
  const auto it = known.find(descr);
  if (it == known.end())
    refuse(name, "dtype '" + descr + "' is not supported (little-endian float, int, uint8 and bool are)");
  return it->second;
}

std::vector<int64_t> shape_of(const std::string& text, const std::string& name) {
  std::vector<int64_t> shape;
  static const std::regex number("\\s*(\\d{1,12})\\s*(,|$)");
  auto begin = text.cbegin();
  std::smatch m;
  while (begin != text.cend() && std::regex_search(begin, text.cend(), m, number,
                                                   std::regex_constants::match_continuous)) {
    shape.push_back(std::stoll(m[1].str()));
    begin = m[0].second;
  }
  if (begin != text.cend() && !std::all_of(begin, text.cend(), [](char c) { return std::isspace(c); }))
    refuse(name, "shape '(" + text + ")' is not a tuple of sizes");
  return shape;
}

}  // namespace

torch::Tensor parse_npy(const std::string& bytes, const std::string& name) {
  static const char kMagic[] = "\x93NUMPY";
  if (bytes.size() < 10 || bytes.compare(0, 6, kMagic, 6) != 0) refuse(name, "not a .npy file (no \\x93NUMPY magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  if (major < 1 || major > 3) refuse(name, "format version " + std::to_string(major) + " is not supported");
  const size_t length_size = major == 1 ? 2 : 4;
  const size_t header_start = 8 + length_size;
  if (bytes.size() < header_start) refuse(name, "truncated header");
  const size_t header_size = little_endian(bytes, 8, length_size);
  if (header_size > 65536) refuse(name, "header of " + std::to_string(header_size) + " bytes is implausibly long");
  if (header_size > bytes.size() - header_start) refuse(name, "truncated header");
  const std::string header = bytes.substr(header_start, header_size);

  static const std::regex descr_key("'descr'\\s*:\\s*'([^']*)'");
  static const std::regex order_key("'fortran_order'\\s*:\\s*(True|False)");
  static const std::regex shape_key("'shape'\\s*:\\s*\\(([^)]*)\\)");
  std::smatch descr, order, shape_text;
  if (!std::regex_search(header, descr, descr_key) || !std::regex_search(header, order, order_key) ||
      !std::regex_search(header, shape_text, shape_key))
    refuse(name, "header '" + header + "' lacks descr, fortran_order or shape");
  if (order[1] == "True") refuse(name, "Fortran-ordered arrays are not supported");
  const auto [dtype, element_size] = dtype_of(descr[1], name);
  const auto shape = shape_of(shape_text[1], name);

  int64_t count = 1;
  for (const auto size : shape) {
    if (size != 0 && count > (int64_t{1} << 40) / size) refuse(name, "shape is implausibly large");
    count *= size;
  }
  const size_t data_start = header_start + header_size;
  const auto expected = static_cast<size_t>(count * element_size);
  if (bytes.size() - data_start != expected)
    refuse(name, "holds " + std::to_string(bytes.size() - data_start) + " data bytes, its header says " +
                     std::to_string(expected));
  auto tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  if (expected > 0) std::memcpy(tensor.data_ptr(), bytes.data() + data_start, expected);
  return tensor;
}

torch::Tensor load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) refuse(path, "cannot be opened");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_npy(bytes, path);
}

}  // namespace atelier::models
