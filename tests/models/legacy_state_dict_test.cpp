// load_state_dict on the legacy (pre-1.6) torch.save format: hand-written
// files (every truncation, refusals, seeded random corruption) and, through
// the binary, training with torchvision's VGG-19 saved that way.
#include <gtest/gtest.h>

#include <random>

#include "tests/models/state_dict_helpers.h"
#include "tests/support/pattern_images.h"

// ---------------------------------------------------------------------------
// Hand-written legacy (pre-1.6) files

namespace {

// The legacy persistent id has a sixth field, view_metadata (None).
std::string legacy_tensor(const std::string& key, const std::string& numel, const std::string& size) {
  return global("torch._utils", "_rebuild_tensor_v2") + "((" + str("storage") + global("torch", "FloatStorage") +
         str(key) + str("cpu") + numel + "NtQ" + int1(0) + size + "\x85" + int1(1) + "\x85\x89}tR";
}

std::string int64_le(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// torch.save's legacy layout: the magic number, protocol version 1001 and
// sys_info pickles, `dict_pickle`, the storage keys, then per key its
// element count and its float32 bytes.
std::string legacy_bytes(const std::string& dict_pickle, const std::vector<std::pair<std::string, std::vector<float>>>& storages,
                         bool little_endian = true) {
  std::string s = kProto2 + std::string("\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 13);
  s += kProto2 + "M\xe9\x03.";
  s += kProto2 + "}(" + str("protocol_version") + "M\xe9\x03" + str("little_endian") +
       (little_endian ? "\x88" : "\x89") + "u.";
  s += dict_pickle + kProto2 + "](";
  for (const auto& storage : storages) s += str(storage.first);
  s += "e.";
  for (const auto& [key, values] : storages) s += int64_le(values.size()) + floats(values);
  return s;
}

// Two tensors over two storages: w = [1, 2, 3], v = [0.5] * 4.
std::string good_legacy() {
  return legacy_bytes(dict({{"w", legacy_tensor("0", int1(3), int1(3))}, {"v", legacy_tensor("1", int1(4), int1(4))}}),
                      {{"0", {1, 2, 3}}, {"1", {0.5f, 0.5f, 0.5f, 0.5f}}});
}

}  // namespace

class LegacyStateDictFiles : public StateDictFiles {
 protected:
  std::string write(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path;
  }
};

TEST_F(LegacyStateDictFiles, HandWrittenFileLoads) {
  const auto state = load_state_dict(write("legacy.pth", good_legacy()));
  ASSERT_EQ(state.size(), 2u);
  expect_exact(state.at("w"), torch::tensor({1.0f, 2.0f, 3.0f}));
  expect_exact(state.at("v"), torch::full({4}, 0.5f));
}

// Cut anywhere, the file is refused with its path; never loaded, never a crash.
TEST_F(LegacyStateDictFiles, TruncatedAtEveryLengthIsRefused) {
  const std::string bytes = good_legacy();
  for (size_t keep = 1; keep < bytes.size(); ++keep) {
    const std::string path = write("cut.pth", bytes.substr(0, keep));
    const std::string error = load_error(path);
    ASSERT_NE(error.find(path), std::string::npos) << keep << " bytes: " << error;
  }
}

TEST_F(LegacyStateDictFiles, APickleWithoutTheMagicNumberIsRefused) {
  const std::string path = write("plain.pkl", kProto2 + "}.");
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path + ": a pickle, but not one torch.save wrote"), std::string::npos) << error;
}

TEST_F(LegacyStateDictFiles, ArbitraryGlobalsAreRefused) {
  const std::string evil = kProto2 + global("os", "system") + "(" + str("echo pwned") + "tR.";
  const std::string path = write("evil.pth", legacy_bytes(evil, {}));
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path + ": the pickled dict (legacy format, from byte "), std::string::npos) << error;
  EXPECT_NE(error.find("'os.system'"), std::string::npos) << error;
}

TEST_F(LegacyStateDictFiles, StorageCountsAndLengthsAreChecked) {
  const auto one = [](const std::vector<float>& values) {
    return legacy_bytes(dict({{"w", legacy_tensor("0", int1(3), int1(3))}}), {{"0", values}});
  };
  const std::string fewer = write("fewer.pth", one({1, 2}));
  EXPECT_NE(load_error(fewer).find("storage '0' holds 2 elements, its persistent id says 3"), std::string::npos)
      << load_error(fewer);
  // A count that would need more bytes than the file has: refused before any allocation.
  std::string huge = one({1, 2, 3});
  const size_t count_at = huge.size() - 12 - 8;
  huge.replace(count_at, 8, int64_le(uint64_t{1} << 61));
  const std::string lying = write("lying.pth", huge);
  EXPECT_NE(load_error(lying).find("storage '0' holds 2305843009213693952 elements"), std::string::npos)
      << load_error(lying);
  const std::string extra = write("extra.pth", one({1, 2, 3}) + "more");
  EXPECT_NE(load_error(extra).find("4 bytes follow the last storage"), std::string::npos) << load_error(extra);
  const std::string unused = write(
      "unused.pth", legacy_bytes(dict({{"w", legacy_tensor("0", int1(3), int1(3))}}), {{"0", {1, 2, 3}}, {"9", {1}}}));
  EXPECT_NE(load_error(unused).find("storage '9' is listed but no tensor uses it"), std::string::npos)
      << load_error(unused);
  const std::string missing =
      write("missing.pth", legacy_bytes(dict({{"w", legacy_tensor("0", int1(3), int1(3))}}), {}));
  EXPECT_NE(load_error(missing).find("no storage '0' follows the pickles"), std::string::npos) << load_error(missing);
  const std::string big = write(
      "big.pth", legacy_bytes(dict({{"w", legacy_tensor("0", int1(3), int1(3))}}), {{"0", {1, 2, 3}}}, false));
  EXPECT_NE(load_error(big).find("big-endian"), std::string::npos) << load_error(big);
}

// Seeded random corruption (1-4 bytes overwritten): every mutant either
// loads or is refused with a ModelError naming the file.
TEST_F(LegacyStateDictFiles, CorruptedBytesAreRefusedNeverACrash) {
  const std::string bytes = good_legacy();
  std::mt19937 random(20261207);
  int refused = 0;
  for (int mutant = 0; mutant < 3000; ++mutant) {
    std::string corrupt = bytes;
    const int changes = 1 + static_cast<int>(random() % 4);
    for (int c = 0; c < changes; ++c) corrupt[random() % corrupt.size()] = static_cast<char>(random() & 0xff);
    const std::string path = write("mutant.pth", corrupt);
    try {
      load_state_dict(path);
    } catch (const ModelError& e) {
      ASSERT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      ++refused;
    }
  }
  EXPECT_GT(refused, 1000) << "most corruptions must be noticed";
}

// ---------------------------------------------------------------------------
// Through the binary: torchvision's VGG-19 in the legacy format, as the
// download vgg19-dcbb9e9d.pth is, as model.vgg_weights.

class VggTraining : public StateDictVgg, public ::testing::WithParamInterface<std::pair<const char*, const char*>> {};

// Trained from the file (the log names layout and format), then evaluated,
// stylized and explained from the checkpoint alone: its config.yaml names
// the layout, so the encoder is rebuilt without the file.
TEST_P(VggTraining, TrainsWithItSaysWhatItReadAndStylizesFromTheCheckpoint) {
  const auto [weights, said] = GetParam();
  const fs::path root = make_temp_dir();
  atelier::testing_support::write_pattern_images(root / "content", 2, 1);
  atelier::testing_support::write_pattern_images(root / "style", 2, 2);
  std::string sets;
  for (const std::string& set :
       {"run.dir=" + (root / "runs").string(), std::string("run.name=vgg"), std::string("run.log_level=info"),
        "data.content=" + (root / "content").string(), "data.style=" + (root / "style").string(),
        std::string("data.load_size=40"), std::string("data.crop_size=32"), std::string("data.workers=1"),
        std::string("model.encoder=vgg19"), std::string("model.encoder_width=64"), std::string("model.decoder_width=64"),
        std::string("model.disc_width=4"), "model.vgg_weights=" + file(weights), std::string("train.steps=1"),
        std::string("train.batch_size=1"), std::string("train.sample_count=1")})
    sets += " --set '" + set + "'";
  // AdaIN's encoder goes with AdaIN's decoder: the pretrained AdaIN model.
  const bool adain = std::string(weights).find("normalised") != std::string::npos;
  if (adain) sets += " --set 'model.decoder_weights=" + file("decoder_legacy.pth") + "'";
  const auto [status, output] = run_command(std::string(ATELIER_BINARY) + " train" + sets);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("model.vgg_weights: " + std::string(said) + ", legacy format (" + file(weights) + ")"),
            std::string::npos)
      << output;
  EXPECT_EQ(output.find("fixed random VGG"), std::string::npos) << output;
  if (adain) {
    EXPECT_NE(output.find("model.decoder_weights: AdaIN decoder, legacy format (" + file("decoder_legacy.pth") +
                          "), linear output"),
              std::string::npos)
        << output;
  }
  const auto [evaluated, report] =
      run_command(std::string(ATELIER_BINARY) + " evaluate --checkpoint " + (root / "runs" / "vgg").string() +
                  " --content " + (root / "content").string() + " --style " + (root / "style").string() +
                  " --pairs 1 --out " + (root / "report.json").string());
  EXPECT_EQ(evaluated, 0) << report;
  const auto [stylized, stylize_output] = run_command(
      std::string(ATELIER_BINARY) + " stylize --checkpoint " + (root / "runs" / "vgg").string() + " --content " +
      (root / "content" / fs::directory_iterator(root / "content")->path().filename()).string() + " --style " +
      (root / "style" / fs::directory_iterator(root / "style")->path().filename()).string() + " --out " +
      (root / "out.png").string());
  EXPECT_EQ(stylized, 0) << stylize_output;
  EXPECT_TRUE(fs::exists(root / "out.png"));
  // The explainer rebuilds the encoder in the checkpoint's layout too.
  const auto [explained, explain_output] = run_command(
      std::string(ATELIER_BINARY) + " explain --checkpoint " + (root / "runs" / "vgg").string() + " --content " +
      (root / "content" / fs::directory_iterator(root / "content")->path().filename()).string() + " --style " +
      (root / "style" / fs::directory_iterator(root / "style")->path().filename()).string() + " --out " +
      (root / "explained").string() + " --size 32 --methods features style_layers");
  EXPECT_EQ(explained, 0) << explain_output;
  EXPECT_TRUE(fs::exists(root / "explained" / "report.html")) << explain_output;
  fs::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(TorchvisionAndAdain, VggTraining,
                         ::testing::Values(std::make_pair("vgg19_legacy.pth", "torchvision VGG-19"),
                                           std::make_pair("vgg_normalised_legacy.pth", "AdaIN normalised VGG")),
                         [](const auto& info) {
                           return std::string(std::string(info.param.first).find("vgg19") == 0 ? "torchvision"
                                                                                                 : "adain");
                         });
