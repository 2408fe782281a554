// The shipped SqueezeNet 1.1: its reference input gives its reference
// logits, a photograph gets its class, every layer matches torchvision's
// squeezenet1_1 loaded from the same files, and a missing or corrupt weight
// file is refused naming it. Plus the .npy reader's refusals.
#include <gtest/gtest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "data/data.h"
#include "models/models.h"

namespace {

namespace fs = std::filesystem;
using atelier::models::ModelError;
using atelier::models::SqueezeNet;

// The message `f` fails with ("" when it does not fail).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

fs::path fixtures() {
  const char* dir = std::getenv("ATELIER_PY_FIXTURES");
  return fs::path(dir == nullptr ? "" : dir) / "squeezenet";
}

float max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<float>(); }

// A private copy of the shipped directory to damage.
class SqueezeNetFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "atelier-squeezenet-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    fs::copy(atelier::models::default_squeezenet_dir(), dir_, fs::copy_options::recursive);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

}  // namespace

TEST(SqueezeNet, ShippedInputGivesShippedLogits) {
  const auto dir = fs::path(atelier::models::default_squeezenet_dir());
  SqueezeNet net(dir.string(), /*classifier=*/true);
  const auto input = atelier::models::load_npy((dir / "test/input_0.npy").string());
  const auto expected = atelier::models::load_npy((dir / "test/output_0.npy").string());
  torch::NoGradGuard no_grad;
  const auto logits = net->logits(input);
  ASSERT_EQ(logits.sizes(), expected.sizes());
  EXPECT_LT(max_abs_diff(logits, expected), 1e-3);
  EXPECT_EQ(logits.argmax(1).item<int64_t>(), expected.argmax(1).item<int64_t>());
}

// The top-k ImageNet classes of a photograph, through torchvision's eval
// transform (shorter side to 256, centre crop 224).
std::vector<int64_t> top_classes(SqueezeNet& net, const std::string& photo, int64_t k) {
  const auto rgb = atelier::data::decode_image(photo);
  cv::Mat image(static_cast<int>(rgb.size(0)), static_cast<int>(rgb.size(1)), CV_8UC3, rgb.data_ptr());
  const double scale = 256.0 / std::min(image.rows, image.cols);
  cv::Mat resized;
  cv::resize(image, resized, cv::Size(), scale, scale, cv::INTER_AREA);
  const cv::Mat crop = resized(cv::Rect((resized.cols - 224) / 2, (resized.rows - 224) / 2, 224, 224)).clone();
  const auto images =
      torch::from_blob(crop.data, {1, 224, 224, 3}, torch::kUInt8).permute({0, 3, 1, 2}).to(torch::kFloat).div(127.5).sub(1.0);
  torch::NoGradGuard no_grad;
  const auto top = std::get<1>(net->logits(net->input(images)).topk(k, 1));
  return std::vector<int64_t>(top.data_ptr<int64_t>(), top.data_ptr<int64_t>() + k);
}

TEST(SqueezeNet, PhotographsGetTheirClasses) {
  const fs::path photos = "/usr/share/doc/opencv-doc/examples/data";
  if (!fs::exists(photos / "butterfly.jpg")) GTEST_SKIP() << photos << " is missing (Debian's opencv-doc)";
  SqueezeNet net(atelier::models::default_squeezenet_dir(), /*classifier=*/true);
  // ImageNet 321-326 are butterflies; 321 'admiral' and 323 'monarch' are
  // within 0.01 of each other on this photo (torchvision's PIL resize puts
  // the monarch first), so both must be the top two.
  auto top = top_classes(net, (photos / "butterfly.jpg").string(), 2);
  EXPECT_EQ(std::min(top[0], top[1]), 321);
  EXPECT_EQ(std::max(top[0], top[1]), 323);
  top = top_classes(net, (photos / "orange.jpg").string(), 1);
  EXPECT_TRUE(top[0] == 950 || top[0] == 951) << top[0] << ": ImageNet 950 is 'orange', 951 'lemon'";
}

TEST(SqueezeNet, EveryLayerMatchesTorchvision) {
  const auto dir = fixtures();
  ASSERT_TRUE(fs::exists(dir / "logits.npy")) << "fixture missing: " << dir;
  SqueezeNet net(atelier::models::default_squeezenet_dir(), /*classifier=*/true);
  const auto images = atelier::models::load_npy((dir / "input.npy").string());
  std::vector<int64_t> all(13);
  std::iota(all.begin(), all.end(), 0);
  torch::NoGradGuard no_grad;
  const auto features = net->features_at(net->input(images), all);
  ASSERT_EQ(features.size(), 13u);
  for (int64_t i = 0; i < 13; ++i) {
    const auto expected = atelier::models::load_npy((dir / ("features_" + std::to_string(i) + ".npy")).string());
    ASSERT_EQ(features[i].sizes(), expected.sizes()) << "features." << i;
    EXPECT_LT(max_abs_diff(features[i], expected), 1e-4 * (1 + expected.abs().max().item<float>())) << "features." << i;
  }
  const auto logits = atelier::models::load_npy((dir / "logits.npy").string());
  EXPECT_LT(max_abs_diff(net->logits(net->input(images)), logits), 1e-3);
}

TEST(SqueezeNet, FeaturesStopAtTheLastIndexAsked) {
  SqueezeNet net(atelier::models::default_squeezenet_dir());
  torch::NoGradGuard no_grad;
  const auto x = net->input(torch::zeros({1, 3, 32, 32}));
  const auto taps = net->features_at(x, {1, 4});
  ASSERT_EQ(taps.size(), 2u);
  EXPECT_EQ(taps[0].sizes(), torch::IntArrayRef({1, 64, 15, 15}));
  EXPECT_EQ(taps[1].sizes(), torch::IntArrayRef({1, 128, 7, 7}));
  EXPECT_NE(error_of([&] { net->features_at(x, {4, 1}); }), "");
  EXPECT_NE(error_of([&] { net->logits(x); }).find("without its classifier"), std::string::npos);
  for (const auto& p : net->parameters()) EXPECT_FALSE(p.requires_grad());
}

TEST_F(SqueezeNetFiles, ACorruptWeightFileIsRefusedByName) {
  const auto file = dir_ / "weights/squeezenet0_conv7_weight.npy";
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x7f');
  }
  const auto message = error_of([&] { SqueezeNet(dir_.string()); });
  EXPECT_NE(message.find(file.string()), std::string::npos) << message;
  EXPECT_NE(message.find("corrupt"), std::string::npos) << message;
}

TEST_F(SqueezeNetFiles, AMissingWeightFileOrChecksumListIsRefusedByName) {
  const auto file = dir_ / "weights/squeezenet0_conv12_bias.npy";
  fs::remove(file);
  auto message = error_of([&] { SqueezeNet(dir_.string()); });
  EXPECT_NE(message.find(file.string()), std::string::npos) << message;
  EXPECT_NE(message.find("missing"), std::string::npos) << message;

  fs::remove(dir_ / "SHA256SUMS");
  message = error_of([&] { SqueezeNet(dir_.string()); });
  EXPECT_NE(message.find((dir_ / "SHA256SUMS").string()), std::string::npos) << message;

  message = error_of([&] { SqueezeNet((dir_ / "nowhere").string()); });
  EXPECT_NE(message.find("nowhere' does not exist"), std::string::npos) << message;
}

TEST_F(SqueezeNetFiles, AFileOfTheWrongShapeIsRefusedEvenWithItsChecksumUpdated) {
  // conv0's bias (64 floats) written over conv1's bias (16), checksum list fixed up.
  fs::copy_file(dir_ / "weights/squeezenet0_conv0_bias.npy", dir_ / "weights/squeezenet0_conv1_bias.npy",
                fs::copy_options::overwrite_existing);
  ASSERT_EQ(std::system(("cd '" + dir_.string() + "' && sha256sum weights/*.npy > SHA256SUMS").c_str()), 0);
  const auto message = error_of([&] { SqueezeNet(dir_.string()); });
  EXPECT_NE(message.find("squeezenet0_conv1_bias.npy' holds Float [64], expected Float [16]"), std::string::npos)
      << message;
}

TEST(Npy, MalformedFilesAreRefusedWithTheReason) {
  using atelier::models::parse_npy;
  const std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  auto file = [](const std::string& dict, const std::string& data) {
    std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
    bytes += static_cast<char>(dict.size() & 0xff);
    bytes += static_cast<char>(dict.size() >> 8);
    return bytes + dict + data;
  };
  const auto good = parse_npy(file(header, std::string(24, '\0')), "good");
  EXPECT_EQ(good.sizes(), torch::IntArrayRef({2, 3}));
  EXPECT_EQ(good.scalar_type(), torch::kFloat32);
  const auto scalar = parse_npy(file("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", std::string(8, '\0')), "s");
  EXPECT_EQ(scalar.dim(), 0);

  auto refusal = [](const std::string& bytes) { return error_of([&] { parse_npy(bytes, "x.npy"); }); };
  EXPECT_NE(refusal("PK\x03\x04 not numpy").find("no \\x93NUMPY magic"), std::string::npos);
  EXPECT_NE(refusal(file(header, std::string(20, '\0'))).find("holds 20 data bytes, its header says 24"),
            std::string::npos);
  EXPECT_NE(refusal(file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", std::string(8, '\0')))
                .find("dtype '>f4' is not supported"),
            std::string::npos);
  EXPECT_NE(refusal(file("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", std::string(8, '\0')))
                .find("Fortran"),
            std::string::npos);
  EXPECT_NE(refusal(file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", "")).find("shape"),
            std::string::npos);
  EXPECT_NE(refusal(file("{'descr': '<f4'}", "")).find("lacks"), std::string::npos);
  EXPECT_NE(refusal(file("{'descr': '<f4', 'fortran_order': False, 'shape': (4000000, 4000000, 4000000), }", ""))
                .find("implausibly large"),
            std::string::npos);
  EXPECT_NE(refusal(std::string("\x93NUMPY\x01\x00\xff\x7f", 10)).find("truncated header"), std::string::npos);
}
