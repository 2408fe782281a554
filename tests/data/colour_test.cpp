// Whole-image I/O and colour preservation (data/colour.cpp), against
// expectations that can be checked by hand.
#include <gtest/gtest.h>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <random>

#include "data/data.h"
#include "tests/support/image_files.h"

namespace atelier::data {
namespace {
namespace fs = std::filesystem;

class ColourFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("atelier-colour-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
};

// An image on the 8-bit grid (k / 127.5 - 1), so PNG round trips are exact.
torch::Tensor grid_image(int64_t height, int64_t width, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, 256, {3, height, width}).to(torch::kFloat) / 127.5 - 1.0;
}

// YCrCb (BT.601, OpenCV's float convention) of a [3, H, W] image in [-1, 1].
torch::Tensor ycrcb(const torch::Tensor& image) {
  const auto rgb = (image + 1.0) * 0.5;
  const auto r = rgb[0], g = rgb[1], b = rgb[2];
  const auto y = 0.299 * r + 0.587 * g + 0.114 * b;
  return torch::stack({y, (r - y) * 0.713 + 0.5, (b - y) * 0.564 + 0.5});
}

TEST_F(ColourFiles, LoadImageKeepsSizeAndPixelsWithoutCrop) {
  cv::Mat bgr(13, 21, CV_8UC3, cv::Scalar(0, 0, 0));
  bgr.at<cv::Vec3b>(2, 5) = cv::Vec3b(255, 0, 0);  // blue in BGR
  bgr.at<cv::Vec3b>(12, 20) = cv::Vec3b(0, 0, 255);  // red
  const auto path = (dir / "odd.png").string();
  atelier::testing_support::write_bgr(path, bgr);
  const auto image = load_image(path);
  ASSERT_EQ(image.sizes(), (std::vector<int64_t>{3, 13, 21}));
  EXPECT_FLOAT_EQ(image[2][2][5].item<float>(), 1.0f);   // B of the blue pixel
  EXPECT_FLOAT_EQ(image[0][2][5].item<float>(), -1.0f);  // its R
  EXPECT_FLOAT_EQ(image[0][12][20].item<float>(), 1.0f);  // R of the red pixel
  EXPECT_FLOAT_EQ(image[1][0][0].item<float>(), -1.0f);
  // Shorter side scaled, aspect kept, nothing cropped.
  EXPECT_EQ(load_image(path, 26).sizes(), (std::vector<int64_t>{3, 26, 42}));
}

TEST_F(ColourFiles, SaveThenLoadPngIsExact) {
  const auto image = grid_image(11, 17, 1);
  const auto path = (dir / "x.PNG").string();
  save_image(path, image);
  EXPECT_TRUE(torch::equal(load_image(path), image));
  // JPEG is lossy but close, and chosen by the extension.
  const auto smooth = torch::linspace(-1, 1, 32).view({1, 1, 32}).expand({3, 24, 32}).contiguous();
  save_image((dir / "y.jpeg").string(), smooth);
  const auto back = load_image((dir / "y.jpeg").string());
  EXPECT_LT((back - smooth).abs().max().item<float>(), 0.05f);
}

TEST_F(ColourFiles, ErrorsNameThePath) {
  const auto image = grid_image(4, 4, 2);
  for (const auto& bad : {(dir / "x.gif").string(), (dir / "no-such-dir" / "x.png").string()}) {
    try {
      save_image(bad, image);
      ADD_FAILURE() << "wrote " << bad;
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  const auto missing = (dir / "missing.jpg").string();
  try {
    load_image(missing);
    ADD_FAILURE() << "loaded " << missing;
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  EXPECT_THROW(save_image((dir / "z.png").string(), torch::zeros({4, 4})), DataError);
}

TEST(TransferLuminance, KeepsStylisedLuminanceAndContentChroma) {
  // Mid-range colours so that the recombined pixels stay inside the RGB cube
  // (clamping would otherwise move Y, Cr and Cb).
  torch::manual_seed(3);
  const auto content = torch::rand({3, 6, 7}) * 0.5 - 0.25;
  const auto stylised = torch::rand({3, 6, 7}) * 0.5 - 0.25;
  const auto out = transfer_luminance(stylised, content);
  ASSERT_EQ(out.sizes(), content.sizes());
  const auto got = ycrcb(out), want_content = ycrcb(content), want_stylised = ycrcb(stylised);
  EXPECT_LT((got[0] - want_stylised[0]).abs().max().item<float>(), 2e-3f);
  EXPECT_LT((got.slice(0, 1) - want_content.slice(0, 1)).abs().max().item<float>(), 2e-3f);
}

TEST(TransferLuminance, GreyStylisedOnGreyContentIsTheStylised) {
  // Grey has Cr = Cb = 0.5: the content adds no colour, so nothing changes.
  const auto stylised = torch::linspace(-0.9, 0.9, 20).view({1, 4, 5}).expand({3, 4, 5}).contiguous();
  const auto content = torch::full({3, 4, 5}, 0.3);
  EXPECT_TRUE(torch::allclose(transfer_luminance(stylised, content), stylised, 1e-4, 1e-4));
  EXPECT_THROW(transfer_luminance(stylised, torch::zeros({3, 4, 6})), DataError);
}

TEST(MatchHistogram, ImageMatchedToItselfIsUnchanged) {
  const auto image = grid_image(9, 13, 4);
  EXPECT_TRUE(torch::equal(match_histogram(image, image), image));
}

TEST(MatchHistogram, ConstantReferenceGivesThatConstant) {
  const auto image = grid_image(8, 8, 5);
  auto reference = torch::empty({3, 5, 3});
  reference[0].fill_(10 / 127.5 - 1);
  reference[1].fill_(128 / 127.5 - 1);
  reference[2].fill_(1.0);
  const auto out = match_histogram(image, reference);
  for (int c = 0; c < 3; ++c) {
    // Within float rounding: the levels are k / 127.5 - 1 computed in float.
    EXPECT_TRUE(torch::allclose(out[c], torch::full({8, 8}, reference[c][0][0].item<float>()), 0.0, 1e-6))
        << "channel " << c;
  }
}

TEST(MatchHistogram, PermutedReferenceMatchesExactly) {
  // Same multiset of values in another order: identical histograms, so the
  // image keeps its own values.
  const auto image = grid_image(6, 10, 6);
  const auto flat = image.reshape({3, -1});
  const auto permuted = flat.index_select(1, torch::randperm(60)).reshape({3, 5, 12});
  EXPECT_TRUE(torch::equal(match_histogram(image, permuted), image));
}

TEST(MatchHistogram, MapsByRankOntoTheReferenceLevels) {
  // Four distinct source levels, each a quarter of the pixels, onto four
  // distinct reference levels: the i-th smallest goes to the i-th smallest.
  const std::vector<float> source_levels = {10, 20, 30, 40}, reference_levels = {200, 5, 90, 250};
  auto image = torch::empty({3, 2, 2}), reference = torch::empty({3, 4, 2});
  for (int64_t i = 0; i < 4; ++i) {
    image.select(1, i / 2).select(1, i % 2).fill_(source_levels[static_cast<size_t>(i)] / 127.5 - 1);
    reference.select(1, i).fill_(reference_levels[static_cast<size_t>(i)] / 127.5 - 1);
  }
  const auto out = (match_histogram(image, reference) + 1.0) * 127.5;
  const std::vector<float> want = {5, 90, 200, 250};
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(out[0][i / 2][i % 2].item<float>(), want[static_cast<size_t>(i)], 1e-3) << "pixel " << i;
  }
}

}  // namespace
}  // namespace atelier::data
