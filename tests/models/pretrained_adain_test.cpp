// AdaIN's pretrained model straight from its two files, through the binary:
// `atelier stylize --vgg-weights vgg_normalised.pth --decoder-weights
// decoder.pth` without a checkpoint gives the image Python's AdaIN gives
// from the same files (both torch.save formats), `atelier evaluate` measures
// it, and wrong combinations are refused naming the option or the file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "data/data.h"
#include "tests/models/state_dict_helpers.h"

namespace {

// [3, H, W] of 8-bit values (RGB) to a PNG file, and back.
void write_png(const torch::Tensor& rgb, const std::string& path) {
  const auto hwc = rgb.permute({1, 2, 0}).to(torch::kUInt8).contiguous();
  atelier::data::write_image_file(path, hwc);
}

torch::Tensor read_png(const std::string& path) {
  if (!fs::exists(path)) return {};
  return atelier::data::decode_image(path).permute({2, 0, 1}).to(torch::kFloat);
}

const std::string kBinary = ATELIER_BINARY;

}  // namespace

class PretrainedAdain : public StateDictVgg {
 protected:
  void SetUp() override {
    StateDictVgg::SetUp();
    root_ = make_temp_dir();
    const auto reference = read_reference(file("vgg19_reference.pth"));
    write_png(reference.at("stylize_content").toTensor(), (root_ / "content.png").string());
    write_png(reference.at("stylize_style").toTensor(), (root_ / "style.png").string());
    expected_ = reference.at("stylize_output").toTensor();
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string images() const {
    return " --content " + (root_ / "content.png").string() + " --style " + (root_ / "style.png").string();
  }

  fs::path root_;
  torch::Tensor expected_;  // Python's output in [0, 1]
};

class PretrainedAdainFormats : public PretrainedAdain,
                               public ::testing::WithParamInterface<std::pair<const char*, const char*>> {};

TEST_P(PretrainedAdainFormats, StylizeWithoutACheckpointGivesPythonsImage) {
  const auto [vgg, decoder] = GetParam();
  const auto out = (root_ / "out.png").string();
  const auto [status, output] = run_command(kBinary + " stylize --vgg-weights " + file(vgg) + " --decoder-weights " +
                                            file(decoder) + images() + " --out " + out + " --threads 1");
  ASSERT_EQ(status, 0) << output;
  EXPECT_NE(output.find("AdaIN's pretrained model: AdaIN normalised VGG"), std::string::npos) << output;
  const auto image = read_png(out);
  ASSERT_TRUE(image.defined()) << out;
  ASSERT_EQ(image.sizes(), expected_.sizes());
  // 8-bit rounding of the same float image: at most one level apart.
  const auto levels = (image - (expected_ * 255).round()).abs();
  EXPECT_LE(levels.max().item<float>(), 1.0f);
  EXPECT_LT(levels.mean().item<float>(), 0.05f);
  // And the image is not flat: the comparison saw many levels.
  EXPECT_GT(image.std().item<float>(), 20.0f);
}

INSTANTIATE_TEST_SUITE_P(ZipAndLegacy, PretrainedAdainFormats,
                         ::testing::Values(std::make_pair("vgg_normalised.pth", "decoder.pth"),
                                           std::make_pair("vgg_normalised_legacy.pth", "decoder_legacy.pth")),
                         [](const auto& info) {
                           return std::string(std::string(info.param.first).find("legacy") == std::string::npos
                                                  ? "zip"
                                                  : "legacy");
                         });

TEST_F(PretrainedAdain, EvaluateMeasuresItAndSaysWhatItMeasured) {
  const auto report_path = (root_ / "eval.json").string();
  const auto [status, output] =
      run_command(kBinary + " evaluate --vgg-weights " + file("vgg_normalised.pth") + " --decoder-weights " +
                  file("decoder.pth") + images() + " --size 32 --threads 1 --out " + report_path);
  ASSERT_EQ(status, 0) << output;
  EXPECT_NE(output.find("evaluated AdaIN's pretrained model"), std::string::npos) << output;
  std::ifstream in(report_path);
  const auto report = nlohmann::json::parse(in);
  EXPECT_TRUE(report["checkpoint"].is_null());
  EXPECT_EQ(report["weights"]["vgg"], file("vgg_normalised.pth"));
  EXPECT_EQ(report["weights"]["decoder"], file("decoder.pth"));
  EXPECT_EQ(report["model"], "adain");
  EXPECT_EQ(report["loss_network"]["weights"], "imagenet");
  EXPECT_EQ(report["pairs"], 1);
  EXPECT_TRUE(report["metrics"].contains("ssim_rgb")) << report.dump(2);
}

// Usage errors exit 2 naming the option; a file that is not what its option
// needs exits 1 naming the file.
TEST_F(PretrainedAdain, RefusesIncompleteOrMixedSourcesAndWrongFiles) {
  const auto out = " --out " + (root_ / "out.png").string();
  struct Case {
    std::string args;
    int exit_code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {" --vgg-weights " + file("vgg_normalised.pth") + images() + out, 2, "--decoder-weights"},
      {" --decoder-weights " + file("decoder.pth") + images() + out, 2, "--vgg-weights"},
      {images() + out, 2, "--checkpoint"},
      {" --checkpoint " + root_.string() + " --vgg-weights " + file("vgg_normalised.pth") + " --decoder-weights " +
           file("decoder.pth") + images() + out,
       2, "one or the other"},
      {" --vgg-weights " + file("vgg_normalised.pth") + " --decoder-weights " + file("vgg_normalised.pth") +
           images() + out,
       1, file("vgg_normalised.pth")},
      {" --vgg-weights " + file("decoder.pth") + " --decoder-weights " + file("decoder.pth") + images() + out, 1,
       file("decoder.pth")},
      {" --vgg-weights " + file("vgg_normalised.pth") + " --decoder-weights " + file("decoder.pth") +
           " --content " + (root_ / "content.png").string() + out,
       2, "--style"},
  };
  for (const auto& c : cases) {
    const auto [status, output] = run_command(kBinary + " stylize" + c.args);
    ASSERT_TRUE(WIFEXITED(status)) << c.args;
    EXPECT_EQ(WEXITSTATUS(status), c.exit_code) << c.args << "\n" << output;
    EXPECT_NE(output.find(c.says), std::string::npos) << c.args << "\n" << output;
  }
  EXPECT_FALSE(fs::exists(root_ / "out.png"));
}
