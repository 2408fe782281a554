// TurboJPEG decoding for training (data/jpeg.h): the scale it picks, how
// close a scaled decode comes to a full decode and resize, agreement with
// OpenCV where both decode at full size (colour, greyscale, EXIF rotations),
// and the reasons a JPEG is refused. The comparisons with OpenCV's imdecode
// run wherever imgcodecs is installed (ATELIER_TEST_IMGCODECS) and skip,
// saying so, where it is not.
#include "data/codec.h"
#include "data/jpeg.h"
#include "data/pixels.h"

#include <gtest/gtest.h>
#include <opencv2/imgproc.hpp>
#ifdef ATELIER_TEST_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif
#include <turbojpeg.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using atelier::data::detail::JpegScale;
namespace detail = atelier::data::detail;

const fs::path kPhotos = "/usr/share/doc/opencv-doc/examples/data";

std::vector<uchar> file_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  EXPECT_TRUE(in) << file;
  return std::vector<uchar>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<uchar> encode_jpeg(const cv::Mat& image, int quality = 95) {
  return detail::encode_jpeg(image, quality, false);
}

// RGB (CV_8UC3) as OpenCV's imdecode(IMREAD_COLOR) decodes `bytes`, the
// reference the codecs must match; an empty Mat where imgcodecs is absent.
cv::Mat opencv_decode(const std::vector<uchar>& bytes) {
#ifdef ATELIER_TEST_IMGCODECS
  cv::Mat image = cv::imdecode(bytes, cv::IMREAD_COLOR);
  if (!image.empty()) cv::cvtColor(image, image, cv::COLOR_BGR2RGB);
  return image;
#else
  (void)bytes;
  return {};
#endif
}

#ifdef ATELIER_TEST_IMGCODECS
#define REQUIRE_IMGCODECS()
#else
#define REQUIRE_IMGCODECS() GTEST_SKIP() << "OpenCV's imgcodecs is not installed: no reference decoder"
#endif

// A smooth but asymmetric colour picture, so a wrong flip or rotation shows.
cv::Mat gradient_image(int rows, int cols) {
  cv::Mat bgr(rows, cols, CV_8UC3);
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x)
      bgr.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uchar>(40 + x * 150 / cols), static_cast<uchar>(y * 200 / rows),
                                          static_cast<uchar>((x + 2 * y) % 256));
  return bgr;
}

std::string why_of_decode(const std::vector<uchar>& bytes, int64_t min_shorter, cv::Mat& out) {
  std::string why;
  out = detail::decode_for_training(bytes, min_shorter, why);
  return why;
}

// `jpeg` with an EXIF APP1 segment right after its SOI whose first IFD
// holds only the orientation tag, in either byte order.
std::vector<uchar> with_orientation(const std::vector<uchar>& jpeg, int orientation, bool big_endian) {
  const auto o = static_cast<uchar>(orientation);
  const std::vector<uchar> tiff =
      big_endian ? std::vector<uchar>{'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, o, 0, 0,
                                      0, 0, 0, 0}
                 : std::vector<uchar>{'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, o, 0, 0, 0,
                                      0, 0, 0, 0};
  const size_t length = 2 + 6 + tiff.size();
  // SOI, then the APP1 marker, its length, the EXIF signature and the TIFF block.
  std::vector<uchar> out = {0xFF, 0xD8, 0xFF, 0xE1, static_cast<uchar>(length >> 8),
                            static_cast<uchar>(length & 0xFF), 'E', 'x', 'i', 'f', 0, 0};
  out.insert(out.end(), tiff.begin(), tiff.end());
  out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
  return out;
}

bool same_pixels(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

// ---------------------------------------------------------------------------
// The scale

TEST(JpegScale, PicksTheCheapestFactorThatStillCoversTheLoadSize) {
  const auto scale = [](int w, int h, int64_t target) {
    const JpegScale s = detail::jpeg_scale_for(w, h, target);
    return std::to_string(s.num) + "/" + std::to_string(s.denom);
  };
  EXPECT_EQ(scale(640, 480, 240), "1/2");     // exactly the target is enough
  EXPECT_EQ(scale(480, 640, 240), "1/2");     // the shorter side counts, whichever it is
  EXPECT_EQ(scale(640, 480, 241), "1/1");     // 5/8 (300) would cover but decodes slower than 1/1
  EXPECT_EQ(scale(640, 480, 286), "1/1");
  EXPECT_EQ(scale(1282, 1110, 286), "1/2");   // 1/4 leaves 278; 3/8 covers but costs more than 1/2
  EXPECT_EQ(scale(640, 480, 100), "1/4");
  EXPECT_EQ(scale(8000, 6000, 286), "1/8");
  EXPECT_EQ(scale(601, 601, 76), "1/8");      // sides round up: 601/8 -> 76
  EXPECT_EQ(scale(640, 480, 1000), "1/1");    // never enlarged: the resize grows it
  EXPECT_EQ(scale(640, 480, 0), "1/1");
}

// Against every factor TurboJPEG offers: the pick is 1/1 or a 1/N (the
// factors with SIMD or trivial IDCTs), covers the target, and no smaller
// 1/N covers it.
TEST(JpegScale, NoCheaperFactorCoversTheTarget) {
  int count = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&count);
  ASSERT_NE(factors, nullptr);
  std::mt19937 rng(5);
  for (int trial = 0; trial < 2000; ++trial) {
    const int w = static_cast<int>(rng() % 3000 + 1), h = static_cast<int>(rng() % 3000 + 1);
    const int64_t target = static_cast<int64_t>(rng() % 700 + 1);
    const JpegScale chosen = detail::jpeg_scale_for(w, h, target);
    const int shorter = std::min(w, h);
    ASSERT_EQ(chosen.num, 1);
    ASSERT_TRUE(chosen.denom == 1 || chosen.denom == 2 || chosen.denom == 4 || chosen.denom == 8) << chosen.denom;
    if (shorter >= target) {
      ASSERT_GE(chosen.scaled(shorter), target) << w << "x" << h << " -> " << target;
    }
    for (int i = 0; i < count; ++i) {
      const JpegScale f{factors[i].num, factors[i].denom};
      if (f.num != 1 || f.denom <= chosen.denom) continue;  // not a cheaper 1/N
      EXPECT_LT(f.scaled(shorter), target) << w << "x" << h << " -> " << target << ": 1/" << f.denom
                                           << " would do, picked 1/" << chosen.denom;
    }
  }
}

// ---------------------------------------------------------------------------
// Pixels

TEST(JpegDecode, DecodesAtTheChosenScale) {
  const auto bytes = file_bytes(kPhotos / "building.jpg");  // 868 x 600
  cv::Mat image;
  ASSERT_EQ(why_of_decode(bytes, 150, image), "");
  EXPECT_EQ(image.size(), cv::Size(217, 150));  // 1/4
  EXPECT_EQ(image.type(), CV_8UC3);
  ASSERT_EQ(why_of_decode(bytes, 151, image), "");
  EXPECT_EQ(image.size(), cv::Size(434, 300));  // 1/2
}

// Blurs away the finest detail (a Gaussian of sigma 1 pixel), then PSNR.
double blurred_psnr(const cv::Mat& a, const cv::Mat& b) {
  cv::Mat x, y;
  cv::GaussianBlur(a, x, cv::Size(0, 0), 1.0);
  cv::GaussianBlur(b, y, cv::Size(0, 0), 1.0);
  return cv::PSNR(x, y);
}

// What training sees (scaled decode, then the training resize to the load
// size) against a full decode area-resized to the same size: close, not
// equal. A reduced IDCT keeps a little more of the finest detail than area
// averaging does, so the comparison blurs both by one pixel first; measured,
// these cases score 33-54 dB against the bound of 30. As a control that the
// comparison can tell, the reference shifted by one pixel scores 21-35 dB
// against itself and must stay at least 3 dB below ours.
TEST(JpegDecode, ScaledDecodeThenResizeIsCloseToFullDecodeThenResize) {
  for (const char* name : {"baboon.jpg", "fruits.jpg", "building.jpg", "starry_night.jpg", "aloeL.jpg",
                           "butterfly.jpg", "left01.jpg", "messi5.jpg"}) {
    const auto bytes = file_bytes(kPhotos / name);
    std::string why;
    const cv::Mat full = detail::decode_rgb(bytes, why);
    ASSERT_FALSE(full.empty()) << name << ": " << why;
    for (const int64_t load : {286, 128, 64}) {
      cv::Mat scaled;
      ASSERT_EQ(why_of_decode(bytes, load, scaled), "") << name;
      const cv::Mat reference = detail::resize_shorter_side(full, load, detail::Shrink::kArea);
      // The scaled image's sides are rounded up, so its resize can differ by
      // a pixel in the longer side; compare at the reference's size.
      cv::Mat ours = detail::resize_shorter_side(scaled, load, detail::Shrink::kTraining);
      if (ours.size() != reference.size()) cv::resize(scaled, ours, reference.size(), 0, 0, cv::INTER_LINEAR);
      if (ours.channels() == 1) cv::cvtColor(ours, ours, cv::COLOR_GRAY2RGB);
      const double psnr = blurred_psnr(ours, reference);
      EXPECT_GT(psnr, 30.0) << name << " at load size " << load;
      const cv::Rect inner(1, 1, reference.cols - 2, reference.rows - 2);
      const cv::Rect shifted(2, 1, reference.cols - 2, reference.rows - 2);
      EXPECT_LT(blurred_psnr(reference(shifted).clone(), reference(inner).clone()), psnr - 3.0) << name;
    }
  }
}

// The training resize: bilinear while shrinking by less than 2x (where
// decode_for_training leaves JPEGs), area averaging from 2x on, bilinear
// when growing; inference and evaluation keep area averaging throughout.
TEST(TrainingResize, IsBilinearBelowTwiceSmallerAndAreaFromThere) {
  cv::Mat image(90, 120, CV_8UC3);
  cv::RNG(9).fill(image, cv::RNG::UNIFORM, 0, 256);
  const auto with = [&](int64_t size, int interpolation) {
    cv::Mat out;
    cv::resize(image, out, cv::Size(static_cast<int>(size * 4 / 3), static_cast<int>(size)), 0, 0, interpolation);
    return out;
  };
  const auto training = [&](int64_t size) { return detail::resize_shorter_side(image, size, detail::Shrink::kTraining); };
  EXPECT_TRUE(same_pixels(training(60), with(60, cv::INTER_LINEAR)));   // 1.5x smaller
  EXPECT_FALSE(same_pixels(training(60), with(60, cv::INTER_AREA)));
  EXPECT_TRUE(same_pixels(training(45), with(45, cv::INTER_AREA)));     // 2x smaller
  EXPECT_TRUE(same_pixels(training(30), with(30, cv::INTER_AREA)));     // 3x smaller
  EXPECT_TRUE(same_pixels(training(120), with(120, cv::INTER_LINEAR))); // larger
  EXPECT_TRUE(same_pixels(detail::resize_shorter_side(image, 60), with(60, cv::INTER_AREA)));
}

// At scale 1/1 TurboJPEG and OpenCV run the same libjpeg-turbo with the same
// settings (accurate integer DCT, smooth chroma upsampling): same pixels.
TEST(JpegDecode, FullScaleDecodeEqualsOpenCV) {
  REQUIRE_IMGCODECS();
  for (const auto& bytes : {encode_jpeg(gradient_image(61, 83)), file_bytes(kPhotos / "fruits.jpg"),
                            file_bytes(kPhotos / "Blender_Suzanne1.jpg")}) {  // the last is progressive
    const cv::Mat expected = opencv_decode(bytes);
    ASSERT_FALSE(expected.empty());
    cv::Mat ours;
    ASSERT_EQ(why_of_decode(bytes, 100000, ours), "");
    EXPECT_TRUE(same_pixels(ours, expected));
    std::string why;
    EXPECT_TRUE(same_pixels(detail::decode_rgb(bytes, why), expected)) << why;
  }
}

// A greyscale JPEG decodes to one channel; OpenCV's three are copies of it,
// and the crop built from the one channel has the same bytes as the crop
// built from OpenCV's three (cv::resize treats channels independently).
TEST(JpegDecode, GreyscaleJpegGivesTheSameCropFromOneChannel) {
  REQUIRE_IMGCODECS();
  const auto bytes = file_bytes(kPhotos / "left01.jpg");  // 640 x 480, greyscale
  std::string why;
  const cv::Mat opencv = opencv_decode(bytes);
  EXPECT_TRUE(same_pixels(detail::decode_rgb(bytes, why), opencv)) << why;
  cv::Mat grey;
  ASSERT_EQ(why_of_decode(bytes, 100000, grey), "");
  ASSERT_EQ(grey.type(), CV_8UC1);
  cv::Mat expanded;
  cv::cvtColor(grey, expanded, cv::COLOR_GRAY2RGB);
  EXPECT_TRUE(same_pixels(expanded, opencv));

  ASSERT_EQ(why_of_decode(bytes, 286, grey), "");
  cv::cvtColor(grey, expanded, cv::COLOR_GRAY2RGB);
  const atelier::data::AugmentOptions augment{286, 256, true};
  std::vector<uint8_t> from_grey(256 * 256 * 3), from_rgb(256 * 256 * 3);
  for (uint64_t seed = 0; seed < 4; ++seed) {
    detail::augment_into_bytes(grey, augment, seed, from_grey.data());
    detail::augment_into_bytes(expanded, augment, seed, from_rgb.data());
    EXPECT_EQ(from_grey, from_rgb) << "seed " << seed;
  }
}

TEST(JpegDecode, ExifOrientationIsAppliedLikeOpenCV) {
  REQUIRE_IMGCODECS();
  const auto plain = encode_jpeg(gradient_image(24, 40));
  EXPECT_EQ(detail::exif_orientation(plain), 1);
  for (const bool big_endian : {false, true}) {
    for (int orientation = 1; orientation <= 8; ++orientation) {
      const auto bytes = with_orientation(plain, orientation, big_endian);
      EXPECT_EQ(detail::exif_orientation(bytes), orientation);
      const cv::Mat expected = opencv_decode(bytes);
      cv::Mat ours;
      ASSERT_EQ(why_of_decode(bytes, 100000, ours), "");
      EXPECT_EQ(ours.size(), orientation >= 5 ? cv::Size(24, 40) : cv::Size(40, 24)) << orientation;
      EXPECT_TRUE(same_pixels(ours, expected)) << "orientation " << orientation << (big_endian ? " (MM)" : " (II)");
    }
  }
}

// ---------------------------------------------------------------------------
// Other formats and errors

TEST(JpegDecode, PngDecodesAtFullSizeLikeOpenCV) {
  REQUIRE_IMGCODECS();
  const std::vector<uchar> png = detail::encode_png(gradient_image(30, 50));
  cv::Mat ours;
  ASSERT_EQ(why_of_decode(png, 10, ours), "");
  EXPECT_TRUE(same_pixels(ours, opencv_decode(png)));  // full size: only JPEGs are scaled
}

// libjpeg turns CMYK only into CMYK; the decoder converts it as OpenCV did.
TEST(JpegDecode, CmykJpegDecodesLikeOpenCV) {
  REQUIRE_IMGCODECS();
  const int width = 32, height = 24;
  std::vector<uchar> cmyk(static_cast<size_t>(width * height * 4));
  for (size_t i = 0; i < cmyk.size(); ++i) cmyk[i] = static_cast<uchar>((i * 7) % 256);
  tjhandle compressor = tjInitCompress();
  ASSERT_NE(compressor, nullptr);
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(compressor, cmyk.data(), width, 0, height, TJPF_CMYK, &jpeg, &size, TJSAMP_444, 90, 0), 0)
      << tjGetErrorStr2(compressor);
  const std::vector<uchar> bytes(jpeg, jpeg + size);
  tjFree(jpeg);
  tjDestroy(compressor);

  const cv::Mat expected = opencv_decode(bytes);
  ASSERT_FALSE(expected.empty());
  cv::Mat ours;
  ASSERT_EQ(why_of_decode(bytes, 100000, ours), "");
  EXPECT_TRUE(same_pixels(ours, expected));
  ASSERT_EQ(why_of_decode(bytes, 8, ours), "");  // CMYK JPEGs are scaled too now
  EXPECT_EQ(ours.size(), cv::Size(16, 12));
  std::string why;
  EXPECT_TRUE(same_pixels(detail::decode_rgb(bytes, why), expected)) << why;
}

TEST(JpegDecode, CorruptJpegIsRefusedWithTurboJpegsReason) {
  // A JPEG signature, an end-of-image marker after a start-of-scan, and
  // nothing a decoder can use in between.
  std::vector<uchar> bytes = {0xFF, 0xD8, 0xFF, 0xDA};
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) bytes.push_back(static_cast<uchar>(rng() % 0xFF));
  bytes.insert(bytes.end(), {0xFF, 0xD9});
  cv::Mat out;
  const std::string why = why_of_decode(bytes, 64, out);
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(why.empty());
  std::string full_why;
  EXPECT_TRUE(detail::decode_rgb(bytes, full_why).empty());
  EXPECT_EQ(full_why, why);
}

// libjpeg-turbo 2.1.5 fails the next header read on a handle whose header
// read failed; the decoder must not carry one corrupt file's failure over
// to the good files after it.
TEST(JpegDecode, AGoodJpegAfterACorruptOneStillDecodes) {
  const std::vector<uchar> corrupt = {0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 3, 0xFF, 0xD9};
  const auto good = encode_jpeg(gradient_image(24, 32));
  for (int i = 0; i < 3; ++i) {
    cv::Mat out;
    EXPECT_NE(why_of_decode(corrupt, 8, out), "");
    EXPECT_EQ(why_of_decode(good, 8, out), "") << "after corrupt file " << i;
    std::string why;
    EXPECT_TRUE(detail::decode_rgb(corrupt, why).empty());
    EXPECT_FALSE(detail::decode_rgb(good, why).empty()) << why;
  }
}

TEST(JpegDecode, TruncatedJpegIsRefusedNotPaddedWithGrey) {
  auto bytes = file_bytes(kPhotos / "fruits.jpg");
  bytes.resize(bytes.size() / 2);
  cv::Mat out;
  const std::string why = why_of_decode(bytes, 64, out);
  EXPECT_TRUE(out.empty());
  EXPECT_NE(why.find("truncated JPEG"), std::string::npos) << why;
}

}  // namespace
