// `atelier stylize` end to end on a tiny trained checkpoint: files and
// folders, any image size, style mixing, colour preservation, and errors
// that name what is wrong. Expected images are computed here with the same
// generator and data/ functions, then compared at 8-bit precision.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "data/data.h"
#include "tests/launcher/run_atelier.h"
#include "tests/launcher/tiny_checkpoint.h"
#include "models/models.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

// One 8-bit level, plus slack for float differences between batch shapes.
constexpr float kLevel = 1.0f / 127.5f;

class Stylize : public ::testing::Test {
 protected:
  void SetUp() override {
    images = tiny.root / "in";
    write_pattern_image(images / "odd.png", 37, 29, 3);    // not a multiple of 8
    write_pattern_image(images / "even.png", 40, 32, 4);   // a multiple of 8
    write_pattern_image(images / "sub" / "odd2.png", 37, 29, 5);
    write_pattern_image(tiny.root / "style-a.png", 40, 40, 6);
    write_pattern_image(tiny.root / "style-b.png", 24, 56, 7);
    checkpoint = tiny.sensitive();
    generator = models::AdaINGenerator(tiny.config.model.generator);
    torch::load(generator, (checkpoint / "generator.pt").string());
  }

  std::string style(const char* name) const { return (tiny.root / name).string(); }
  // The generator's output for `content` (its sides multiples of 8), as a
  // reference for what the command wrote.
  torch::Tensor expected(const fs::path& content, const std::vector<torch::Tensor>& styles,
                         const std::vector<double>& weights, double alpha = 1.0) {
    torch::NoGradGuard no_grad;
    const auto image = data::load_image(content.string()).unsqueeze(0);
    return generator->stylize_mixed(image, styles, weights, alpha).image[0];
  }
  torch::Tensor load(const std::string& name) const { return data::load_image(name).unsqueeze(0); }
  Ran stylize(const std::string& args) const {
    return run_atelier("stylize --checkpoint " + checkpoint.string() + " " + args);
  }

  TinyCheckpoint tiny;
  fs::path checkpoint;  // tiny.sensitive(): outputs that tell styles apart
  fs::path images;
  models::AdaINGenerator generator{nullptr};
};

float max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<float>(); }

TEST_F(Stylize, TrainedRunStylizesOneFileAtItsOwnSize) {
  // The run directory as --checkpoint: its newest checkpoint, the trained one.
  const auto out = (tiny.root / "out" / "odd.png").string();
  const auto ran = run_atelier("stylize --checkpoint " + tiny.run_dir.string() + " --content " +
                               (images / "odd.png").string() + " --style " + style("style-a.png") + " --out " + out);
  ASSERT_EQ(ran.status, 0) << ran.output;
  EXPECT_EQ(data::load_image(out).sizes(), (std::vector<int64_t>{3, 29, 37}));
}

TEST_F(Stylize, OneFileMatchesTheGeneratorAndKeepsOddSizes) {
  const auto out = (tiny.root / "out" / "even.png").string();
  auto ran = stylize("--content " + (images / "even.png").string() + " --style " + style("style-a.png") +
                     " --alpha 0.7 --out " + out);
  ASSERT_EQ(ran.status, 0) << ran.output;
  const auto want = expected(images / "even.png", {load(style("style-a.png"))}, {1.0}, 0.7);
  EXPECT_LT(max_diff(data::load_image(out), want), 1.01f * kLevel);
  EXPECT_GT(max_diff(want, expected(images / "even.png", {load(style("style-a.png"))}, {1.0}, 1.0)), 4 * kLevel);

  const auto odd = (tiny.root / "odd-out.jpg").string();
  ran = stylize("--content " + (images / "odd.png").string() + " --style " + style("style-a.png") + " --out " + odd);
  ASSERT_EQ(ran.status, 0) << ran.output;
  EXPECT_EQ(data::load_image(odd).sizes(), (std::vector<int64_t>{3, 29, 37}));
}

TEST_F(Stylize, FolderInGivesFolderOutNamedAfterEachImage) {
  const auto out = tiny.root / "folder-out";
  const auto ran = stylize("--content " + images.string() + " --style " + style("style-b.png") +
                           " --batch 2 --out " + out.string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  EXPECT_NE(ran.output.find("stylized 3/3 images"), std::string::npos) << ran.output;
  EXPECT_EQ(data::load_image((out / "odd.png").string()).sizes(), (std::vector<int64_t>{3, 29, 37}));
  EXPECT_EQ(data::load_image((out / "sub" / "odd2.png").string()).sizes(), (std::vector<int64_t>{3, 29, 37}));
  // Batched with another image of its shape or alone, the result is the same.
  const auto want = expected(images / "even.png", {load(style("style-b.png"))}, {1.0});
  EXPECT_LT(max_diff(data::load_image((out / "even.png").string()), want), 1.01f * kLevel);
  const auto single = (tiny.root / "single.png").string();
  ASSERT_EQ(stylize("--content " + (images / "odd.png").string() + " --style " + style("style-b.png") +
                    " --out " + single).status, 0);
  EXPECT_LT(max_diff(data::load_image(single), data::load_image((out / "odd.png").string())), 1.01f * kLevel);
}

// Unreadable files first in sort order: each skipped with a warning naming
// it, counted, the rest stylized (exit 0); a folder of nothing else fails
// naming the folder.
TEST_F(Stylize, AFolderWithUnreadableFilesSkipsAndCountsThem) {
  const auto mixed = tiny.root / "mixed";
  fs::create_directories(mixed);
  std::ofstream(mixed / "0-random.jpg", std::ios::binary) << std::string("\x13\x37 random bytes \xff\x00", 18);
  std::ofstream(mixed / "0-text.png") << "this is not a PNG\n";
  const auto none = stylize("--content " + mixed.string() + " --style " + style("style-b.png") + " --out " +
                            (tiny.root / "none-out").string());
  EXPECT_EQ(none.status, 1) << none.output;
  EXPECT_NE(none.output.find("none of the 2 content images in '" + mixed.string() + "'"), std::string::npos)
      << none.output;
  fs::copy_file(images / "even.png", mixed / "even.png");
  const auto out = tiny.root / "mixed-out";
  const auto ran = stylize("--content " + mixed.string() + " --style " + style("style-b.png") + " --out " + out.string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  for (const char* name : {"0-random.jpg", "0-text.png"})
    EXPECT_NE(ran.output.find("cannot decode image '" + (mixed / name).string() + "'"), std::string::npos) << ran.output;
  EXPECT_NE(ran.output.find("skipped 2 of 3 content images"), std::string::npos) << ran.output;
  EXPECT_TRUE(fs::exists(out / "even.png"));
}

TEST_F(Stylize, MixesStylesWithTheirWeights) {
  const auto content = (images / "even.png").string();
  const auto out = (tiny.root / "mix.png").string();
  const auto ran = stylize("--content " + content + " --style " + style("style-a.png") + " --style " +
                           style("style-b.png") + " --weights 0.25,0.75 --out " + out);
  ASSERT_EQ(ran.status, 0) << ran.output;
  const auto a = load(style("style-a.png")), b = load(style("style-b.png"));
  EXPECT_LT(max_diff(data::load_image(out), expected(content, {a, b}, {0.25, 0.75})), 1.01f * kLevel);
  // The mix is not either style alone.
  EXPECT_GT(max_diff(data::load_image(out), expected(content, {a}, {1.0})), 4 * kLevel);
  EXPECT_GT(max_diff(data::load_image(out), expected(content, {b}, {1.0})), 4 * kLevel);
}

TEST_F(Stylize, PreservesColourByLuminanceOrHistogram) {
  const auto content = (images / "even.png").string();
  const auto base = "--content " + content + " --style " + style("style-a.png") + " --preserve-color ";
  const auto luminance = (tiny.root / "lum.png").string(), histogram = (tiny.root / "hist.png").string();
  auto ran = stylize(base + "luminance --out " + luminance);
  ASSERT_EQ(ran.status, 0) << ran.output;
  const auto plain = expected(content, {load(style("style-a.png"))}, {1.0});
  const auto want_luminance = data::transfer_luminance(plain, data::load_image(content));
  EXPECT_LT(max_diff(data::load_image(luminance), want_luminance), 1.01f * kLevel);
  EXPECT_GT(max_diff(want_luminance, plain), 4 * kLevel);  // the mode did change something

  ran = stylize(base + "histogram --out " + histogram);
  ASSERT_EQ(ran.status, 0) << ran.output;
  const auto matched = data::match_histogram(data::load_image(style("style-a.png")), data::load_image(content));
  const auto want_histogram = expected(content, {matched.unsqueeze(0)}, {1.0});
  EXPECT_LT(max_diff(data::load_image(histogram), want_histogram), 1.01f * kLevel);
  EXPECT_GT(max_diff(want_histogram, plain), 4 * kLevel);
}

TEST_F(Stylize, BadOptionsAreUsageErrorsNamingTheOption) {
  const auto base = "--content " + (images / "even.png").string() + " --style " + style("style-a.png");
  const auto out = " --out " + (tiny.root / "x.png").string();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {base + " --style " + style("style-b.png") + " --weights 1" + out, "--weights"},
      {base + " --weights 0.6,0.6 --style " + style("style-b.png") + out, "sum to"},
      {base + " --alpha 1.5" + out, "--alpha"},
      {base + " --preserve-color sepia" + out, "sepia"},
      {base + " --out " + (tiny.root / "x.txt").string(), "x.txt"},
  };
  for (const auto& [args, fragment] : cases) {
    const auto ran = stylize(args);
    EXPECT_EQ(ran.status, 2) << args << "\n" << ran.output;
    EXPECT_NE(ran.output.find(fragment), std::string::npos) << ran.output;
  }
  EXPECT_FALSE(fs::exists(tiny.root / "x.png"));
}

TEST_F(Stylize, UnusableInputsAreRuntimeErrorsNamingThem) {
  const auto broken = tiny.root / "broken.png";
  std::ofstream(broken) << "not an image";
  const auto out = " --out " + (tiny.root / "x.png").string();
  auto ran = stylize("--content " + broken.string() + " --style " + style("style-a.png") + out);
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find(broken.string()), std::string::npos) << ran.output;

  ran = stylize("--content " + (images / "even.png").string() + " --style " + broken.string() + out);
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find(broken.string()), std::string::npos) << ran.output;

  const auto missing = (tiny.root / "no-such-run").string();
  ran = run_atelier("stylize --checkpoint " + missing + " --content " + (images / "even.png").string() +
                    " --style " + style("style-a.png") + out);
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find(missing), std::string::npos) << ran.output;

  // In a folder, a bad image is skipped with a warning and counted, the
  // others are written: as train and evaluate do, not a failure.
  fs::copy_file(broken, images / "broken.png");
  ran = stylize("--content " + images.string() + " --style " + style("style-a.png") + " --out " +
                (tiny.root / "partial").string());
  EXPECT_EQ(ran.status, 0) << ran.output;
  EXPECT_NE(ran.output.find("skipped 1 of 4 content images"), std::string::npos) << ran.output;
  EXPECT_NE(ran.output.find((images / "broken.png").string()), std::string::npos) << ran.output;
  EXPECT_TRUE(fs::exists(tiny.root / "partial" / "even.png"));
}

}  // namespace
}  // namespace atelier::launcher
