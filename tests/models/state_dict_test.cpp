// load_state_dict against files Python's torch.save really wrote (torchvision's
// full vgg19 state dict; every dtype and view layout) and against hand-made
// broken archives, which must fail with the file's path in the message.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/models/state_dict_helpers.h"

// ---------------------------------------------------------------------------
// Hand-written archives

TEST_F(StateDictFiles, HandWrittenStateDictLoads) {
  // Every integer form: BININT1, BININT (J), and LONG1 with a sign-padding byte (255).
  const std::string long1_255 = std::string("\x8a\x02\xff", 3) + '\0';
  const std::string path = archive(
      "hand.pth",
      dict({{"w", tensor("0", int1(4), int1(1), int1(3))},
            {"v", tensor("1", long1_255, int4(5), int4(250))}}),
      {{"data/0", floats({1, 2, 3, 4})}, {"data/1", floats(std::vector<float>(255, 0.5f))}});
  const auto state = load_state_dict(path);
  ASSERT_EQ(state.size(), 2u);
  expect_exact(state.at("w"), torch::tensor({2.0f, 3.0f, 4.0f}));
  expect_exact(state.at("v"), torch::full({250}, 0.5f));
}

TEST_F(StateDictFiles, MissingFileNamesPath) {
  const std::string path = (dir_ / "absent.pth").string();
  EXPECT_NE(load_error(path).find(path), std::string::npos) << load_error(path);
}

TEST_F(StateDictFiles, NonZipFileNamesPath) {
  const std::string path = (dir_ / "text.pth").string();
  std::ofstream(path) << "this is not a zip archive\n";
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("zip"), std::string::npos) << error;
}

TEST_F(StateDictFiles, TruncatedArchiveNamesPath) {
  const std::string path = archive("cut.pth", dict({{"w", tensor("0", int1(4), int1(0), int1(4))}}),
                                   {{"data/0", floats({1, 2, 3, 4})}});
  fs::resize_file(path, fs::file_size(path) / 2);
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path), std::string::npos) << error;
}

TEST_F(StateDictFiles, UnknownOpcodeNamesOpcodeAndOffset) {
  const std::string path = archive("opcode.pth", kProto2 + "}\xff.");
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("byte 3"), std::string::npos) << error;
  EXPECT_NE(error.find("0xff"), std::string::npos) << error;
}

TEST_F(StateDictFiles, ArbitraryGlobalsAreRefused) {
  // The classic malicious pickle: calling os.system must never be possible.
  const std::string path =
      archive("evil.pth", kProto2 + global("os", "system") + "(" + str("echo pwned") + "tR.");
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("'os.system'"), std::string::npos) << error;
  EXPECT_NE(error.find("byte 2"), std::string::npos) << error;
}

TEST_F(StateDictFiles, LyingStringLengthIsRejected) {
  const std::string path = archive("lie.pth", kProto2 + "}X\xf0\xff\xff\xff" + "abc");
  const std::string error = load_error(path);
  EXPECT_NE(error.find("byte 3 (BINUNICODE)"), std::string::npos) << error;
  EXPECT_NE(error.find("runs past the end"), std::string::npos) << error;
}

TEST_F(StateDictFiles, TruncatedPickleIsRejected) {
  std::string pkl = dict({{"w", tensor("0", int1(4), int1(0), int1(4))}});
  for (size_t keep : {pkl.size() - 1, pkl.size() - 3, pkl.size() / 2, size_t{5}}) {
    const std::string path = archive("short" + std::to_string(keep) + ".pth", pkl.substr(0, keep),
                                     {{"data/0", floats({1, 2, 3, 4})}});
    const std::string error = load_error(path);
    EXPECT_NE(error.find(path + ": data.pkl"), std::string::npos) << keep << ": " << error;
  }
}

TEST_F(StateDictFiles, ViewOutsideItsStorageIsRejected) {
  const std::string path =
      archive("oob.pth", dict({{"w", tensor("0", int1(4), int1(0), int1(100))}}),
              {{"data/0", floats({1, 2, 3, 4})}});
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path + ": 'w'"), std::string::npos) << error;
  EXPECT_NE(error.find("reaches element 99"), std::string::npos) << error;
}

TEST_F(StateDictFiles, StorageShorterThanPromisedIsRejected) {
  const std::string path =
      archive("short.pth", dict({{"w", tensor("0", int1(4), int1(0), int1(2))}}),
              {{"data/0", floats({1, 2})}});
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path + ": 'w'"), std::string::npos) << error;
  EXPECT_NE(error.find("holds 8 bytes"), std::string::npos) << error;
}

TEST_F(StateDictFiles, UnwantedStoragesAreNeverRead) {
  // b's storage record is missing: only loading b may notice.
  const std::string path = archive("lazy.pth",
                                   dict({{"a", tensor("0", int1(2), int1(0), int1(2))},
                                         {"b", tensor("1", int1(3), int1(0), int1(3))}}),
                                   {{"data/0", floats({7, 8})}});
  const auto state = load_state_dict(path, only("a"));
  ASSERT_EQ(state.size(), 1u);
  expect_exact(state.at("a"), torch::tensor({7.0f, 8.0f}));
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("data/1"), std::string::npos) << error;
  EXPECT_NE(error.find("'b'"), std::string::npos) << error;
}

TEST_F(StateDictFiles, NonTensorValueNamesKey) {
  const std::string path = archive(
      "epoch.pth", dict({{"epoch", int1(3)}, {"w", tensor("0", int1(2), int1(0), int1(2))}}),
      {{"data/0", floats({1, 2})}});
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path + ": 'epoch' is a int, not a tensor"), std::string::npos) << error;
  EXPECT_EQ(load_state_dict(path, only("w")).size(), 1u);
  const std::string list = archive("list.pth", kProto2 + "].");
  EXPECT_NE(load_error(list).find("holds a list, not a state dict"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Files written by Python's torch.save

TEST_F(StateDictFormats, DtypesRoundTripExactly) {
  const auto state = load_state_dict(file("formats.pth"));
  const auto arange = [](int64_t n, torch::ScalarType dtype) { return torch::arange(n, dtype); };
  expect_exact(state.at("float32"), arange(12, torch::kFloat).reshape({3, 4}));
  expect_exact(state.at("float64"), arange(6, torch::kDouble).reshape({2, 3}) / 3);
  expect_exact(state.at("float16"),
               torch::tensor({0.5, -2.0, 65504.0, std::ldexp(1.0, -14), std::ldexp(1.0, -24)})
                   .to(torch::kHalf));
  expect_exact(
      state.at("bfloat16"),
      torch::tensor({1.0, -3.5, std::ldexp(1.0, 100), std::ldexp(1.0, -100)}).to(torch::kBFloat16));
  const int64_t max64 = std::numeric_limits<int64_t>::max();
  expect_exact(state.at("int64"), torch::tensor({int64_t{-1}, int64_t{0}, int64_t{1} << 40,
                                                 -(int64_t{1} << 62), max64}));
  expect_exact(state.at("int32"), torch::tensor({std::numeric_limits<int32_t>::min(), 7,
                                                 std::numeric_limits<int32_t>::max()})
                                      .to(torch::kInt));
  expect_exact(state.at("int16"), torch::tensor({-32768, 32767}).to(torch::kShort));
  expect_exact(state.at("int8"), torch::tensor({-128, 127}).to(torch::kChar));
  expect_exact(state.at("uint8"), torch::tensor({0, 255}).to(torch::kByte));
  expect_exact(state.at("bool"), torch::tensor({true, false, true}));
}

TEST_F(StateDictFormats, ViewsComeBackContiguousWithTheirValues) {
  const auto state = load_state_dict(file("formats.pth"));
  const torch::Tensor m = torch::arange(12, torch::kFloat).reshape({3, 4});
  expect_exact(state.at("transposed"), m.t().contiguous());
  expect_exact(state.at("slice"), m.slice(0, 1).slice(1, 0, 4, 2).contiguous());
  expect_exact(state.at("expanded"), torch::arange(3, torch::kFloat).expand({4, 3}).contiguous());
  expect_exact(state.at("channels_last"), torch::arange(24, torch::kFloat).reshape({1, 2, 3, 4}));
  expect_exact(state.at("scalar"), torch::tensor(3.25f));
  expect_exact(state.at("empty"), torch::zeros({0, 3}));
}

TEST_F(StateDictFormats, SharedStorageGivesIndependentTensors) {
  // float32 and transposed view one storage in the file; loaded, they must not alias.
  auto state = load_state_dict(file("formats.pth"));
  state.at("float32").add_(100);
  expect_exact(state.at("transposed"),
               torch::arange(12, torch::kFloat).reshape({3, 4}).t().contiguous());
}

TEST_F(StateDictFormats, ParametersLoadAsTensors) {
  const auto state = load_state_dict(file("formats.pth"));
  expect_exact(state.at("parameter"), torch::full({2, 2}, 1.5f));
  EXPECT_FALSE(state.at("parameter").requires_grad());
}

TEST_F(StateDictFormats, WantedFilterReturnsOnlyWantedKeys) {
  const auto all = load_state_dict(file("formats.pth"));
  EXPECT_EQ(all.size(), 17u);
  const auto some = load_state_dict(
      file("formats.pth"), [](const std::string& key) { return key == "slice" || key == "int8"; });
  ASSERT_EQ(some.size(), 2u);
  expect_exact(some.at("slice"), all.at("slice"));
  expect_exact(some.at("int8"), all.at("int8"));
  EXPECT_TRUE(load_state_dict(file("formats.pth"), only("no such key")).empty());
}

TEST_F(StateDictFormats, Protocol4FileLoadsTheSame) {
  const auto protocol2 = load_state_dict(file("formats.pth"));
  const auto protocol4 = load_state_dict(file("formats_protocol4.pth"));
  ASSERT_EQ(protocol4.size(), protocol2.size());
  for (const auto& [key, tensor] : protocol2) {
    SCOPED_TRACE(key);
    expect_exact(protocol4.at(key), tensor);
  }
}

// The pre-1.6 format (pickles in a row, then raw storages): every dtype,
// view, shared storage and parameter as the zip file has them.
TEST_F(StateDictFormats, LegacyFileLoadsTheSame) {
  const auto zip = load_state_dict(file("formats.pth"));
  const auto legacy = load_state_dict(file("formats_legacy.pth"));
  ASSERT_EQ(legacy.size(), zip.size());
  for (const auto& [key, tensor] : zip) {
    SCOPED_TRACE(key);
    expect_exact(legacy.at(key), tensor);
  }
  auto shared = load_state_dict(file("formats_legacy.pth"));
  shared.at("float32").add_(100);
  expect_exact(shared.at("transposed"), zip.at("transposed"));
  const auto some = load_state_dict(file("formats_legacy.pth"), only("slice"));
  ASSERT_EQ(some.size(), 1u);
  expect_exact(some.at("slice"), zip.at("slice"));
}

// ---------------------------------------------------------------------------
// torchvision's vgg19

namespace {

// torchvision's VGG-19 ("E") layout, rebuilt the way its make_layers numbers
// layers: conv + ReLU take two indices, a max pool one.
std::map<std::string, std::vector<int64_t>> torchvision_vgg19_shapes() {
  const int pool = 0;
  const std::vector<int> config = {64,  64,  pool, 128, 128,  pool, 256, 256, 256, 256, pool,
                                   512, 512, 512,  512, pool, 512,  512, 512, 512, pool};
  std::map<std::string, std::vector<int64_t>> shapes;
  int64_t index = 0, in = 3;
  for (int channels : config) {
    if (channels == pool) {
      index += 1;
      continue;
    }
    const std::string name = "features." + std::to_string(index);
    shapes[name + ".weight"] = {channels, in, 3, 3};
    shapes[name + ".bias"] = {channels};
    in = channels;
    index += 2;
  }
  struct Linear {
    int index;
    int64_t out, in;
  };
  for (const Linear& fc :
       {Linear{0, 4096, 512 * 7 * 7}, Linear{3, 4096, 4096}, Linear{6, 1000, 4096}}) {
    shapes["classifier." + std::to_string(fc.index) + ".weight"] = {fc.out, fc.in};
    shapes["classifier." + std::to_string(fc.index) + ".bias"] = {fc.out};
  }
  return shapes;
}

}  // namespace

TEST_F(StateDictVgg, KeysAndShapesMatchTorchvision) {
  const auto expected = torchvision_vgg19_shapes();
  ASSERT_EQ(expected.size(), 38u);
  const auto state = load_state_dict(file("vgg19.pth"));
  ASSERT_EQ(state.size(), expected.size());
  for (const auto& [key, shape] : expected) {
    ASSERT_TRUE(state.count(key)) << key;
    EXPECT_EQ(state.at(key).sizes(), torch::IntArrayRef(shape)) << key;
    EXPECT_EQ(state.at(key).scalar_type(), torch::kFloat) << key;
  }
  const auto features = load_state_dict(
      file("vgg19.pth"), [](const std::string& key) { return key.rfind("features.", 0) == 0; });
  EXPECT_EQ(features.size(), 32u);
}

class StateDictVggFormats : public StateDictVgg, public ::testing::WithParamInterface<const char*> {};

TEST_P(StateDictVggFormats, ValuesMatchWhatPythonSaved) {
  const auto state = load_state_dict(file(GetParam()));
  const auto reference = read_reference(file("vgg19_reference.pth"));
  const auto sums = reference.at("sums").toGenericDict();
  ASSERT_EQ(sums.size(), state.size());
  for (const auto& entry : sums) {
    const std::string& key = entry.key().toStringRef();
    ASSERT_TRUE(state.count(key)) << key;
    const torch::Tensor values = state.at(key).to(torch::kDouble);
    // Only the summation order differs from Python's float64 sum, so the
    // rounding error scales with the sum of magnitudes.
    const double magnitude = values.abs().sum().item<double>();
    EXPECT_NEAR(values.sum().item<double>(), entry.value().toDouble(), 1e-12 * (1 + magnitude))
        << key;
  }
  for (const auto& entry : reference.at("copies").toGenericDict()) {
    SCOPED_TRACE(entry.key().toStringRef());
    expect_exact(state.at(entry.key().toStringRef()), entry.value().toTensor());
  }
}

TEST_P(StateDictVggFormats, EncoderMatchesTorchvisionRelu4_1) {
  const auto reference = read_reference(file("vgg19_reference.pth"));
  atelier::models::Encoder encoder(atelier::models::EncoderOptions{64, file(GetParam())});
  ASSERT_TRUE(encoder->pretrained());
  torch::NoGradGuard no_grad;
  const torch::Tensor output = encoder->forward(reference.at("input").toTensor());
  const torch::Tensor expected = reference.at("relu4_1").toTensor();
  ASSERT_EQ(output.sizes(), expected.sizes());
  EXPECT_LT((output - expected).abs().max().item<double>(), 1e-4);
}

// torchvision's download (vgg19-dcbb9e9d.pth) is in the legacy format.
INSTANTIATE_TEST_SUITE_P(ZipAndLegacy, StateDictVggFormats, ::testing::Values("vgg19.pth", "vgg19_legacy.pth"),
                         [](const auto& info) {
                           return std::string(std::string(info.param).find("legacy") == std::string::npos ? "zip"
                                                                                                       : "legacy");
                         });
