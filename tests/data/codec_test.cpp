// Image files without OpenCV's imgcodecs (data/codec.h): PNG through libpng,
// JPEG encoding through TurboJPEG. Round trips always run; the comparisons
// with OpenCV's imdecode/imencode (the pixels atelier had before) run
// wherever imgcodecs is installed and skip, saying so, where it is not.
#include "data/codec.h"
#include "data/data.h"
#include "data/pixels.h"

#include <gtest/gtest.h>
#include <opencv2/imgproc.hpp>
#include <png.h>
#include <torch/torch.h>
#include <zlib.h>
#ifdef ATELIER_TEST_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace detail = atelier::data::detail;
using atelier::data::DataError;

#ifdef ATELIER_TEST_IMGCODECS
#define REQUIRE_IMGCODECS()
#else
#define REQUIRE_IMGCODECS() GTEST_SKIP() << "OpenCV's imgcodecs is not installed: no reference codec"
#endif

cv::Mat noise(int rows, int cols, int type, uint64_t seed) {
  cv::Mat image(rows, cols, type);
  cv::RNG rng(seed);
  if (CV_MAT_DEPTH(type) == CV_16U) {
    rng.fill(image, cv::RNG::UNIFORM, 0, 65536);
  } else {
    rng.fill(image, cv::RNG::UNIFORM, 0, 256);
  }
  return image;
}

bool same_pixels(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

cv::Mat decode_png(const std::vector<uchar>& bytes, std::string& why) { return detail::decode_png(bytes, why); }

#ifdef ATELIER_TEST_IMGCODECS
cv::Mat opencv_decode_rgb(const std::vector<uchar>& bytes) {
  cv::Mat image = cv::imdecode(bytes, cv::IMREAD_COLOR);
  if (!image.empty()) cv::cvtColor(image, image, cv::COLOR_BGR2RGB);
  return image;
}

std::vector<uchar> opencv_encode(const std::string& ext, const cv::Mat& image, std::vector<int> params = {}) {
  std::vector<uchar> bytes;
  EXPECT_TRUE(cv::imencode(ext, image, bytes, params));
  return bytes;
}
#endif

// A big-endian 32-bit number into `out`.
void put_u32(std::vector<uchar>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uchar>(value >> shift));
}

// A PNG signature and an IHDR chunk with a correct CRC, and nothing else.
std::vector<uchar> png_header(uint32_t width, uint32_t height) {
  std::vector<uchar> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  put_u32(out, 13);
  const size_t type_at = out.size();
  out.insert(out.end(), {'I', 'H', 'D', 'R'});
  put_u32(out, width);
  put_u32(out, height);
  out.insert(out.end(), {8, 2, 0, 0, 0});  // 8-bit RGB, deflate, no filter method, no interlace
  put_u32(out, static_cast<uint32_t>(crc32(0, &out[type_at], 17)));
  return out;
}

TEST(PngCodec, RoundTripIsLosslessForRgbAndGrey) {
  const cv::Mat rgb = noise(37, 53, CV_8UC3, 1);
  std::string why;
  EXPECT_TRUE(same_pixels(decode_png(detail::encode_png(rgb), why), rgb)) << why;

  const cv::Mat grey = noise(20, 9, CV_8UC1, 2);
  cv::Mat expanded;
  cv::cvtColor(grey, expanded, cv::COLOR_GRAY2RGB);
  EXPECT_TRUE(same_pixels(decode_png(detail::encode_png(grey), why), expanded)) << why;
}

// A row stride wider than the pixels (a Mat view) encodes only the pixels.
TEST(PngCodec, EncodesAViewWithItsOwnStride) {
  const cv::Mat big = noise(30, 40, CV_8UC3, 3);
  const cv::Mat view = big(cv::Rect(5, 4, 17, 11));
  std::string why;
  EXPECT_TRUE(same_pixels(decode_png(detail::encode_png(view), why), view.clone())) << why;
}

// Every PNG layout OpenCV wrote or read: grey 8/16-bit, colour 16-bit,
// alpha 8/16-bit, and a palette (written with libpng's colour-map API).
TEST(PngCodec, DecodesEveryLayoutLikeOpenCV) {
  REQUIRE_IMGCODECS();
#ifdef ATELIER_TEST_IMGCODECS
  std::vector<std::pair<std::string, std::vector<uchar>>> files = {
      {"grey 8-bit", opencv_encode(".png", noise(13, 17, CV_8UC1, 4))},
      {"grey 16-bit", opencv_encode(".png", noise(13, 17, CV_16UC1, 5))},
      {"colour 16-bit", opencv_encode(".png", noise(13, 17, CV_16UC3, 6))},
      {"colour + alpha", opencv_encode(".png", noise(13, 17, CV_8UC4, 7))},
      {"colour + alpha 16-bit", opencv_encode(".png", noise(13, 17, CV_16UC4, 8))},
      {"most compressed", opencv_encode(".png", noise(13, 17, CV_8UC3, 9), {cv::IMWRITE_PNG_COMPRESSION, 9})},
  };
  // A 16-colour palette image.
  cv::Mat indices = noise(11, 19, CV_8UC1, 10) / 16;
  std::vector<uchar> palette(16 * 3);
  for (size_t i = 0; i < palette.size(); ++i) palette[i] = static_cast<uchar>(i * 37 % 256);
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = 19;
  image.height = 11;
  image.format = PNG_FORMAT_RGB_COLORMAP;
  image.colormap_entries = 16;
  png_alloc_size_t size = 0;
  ASSERT_TRUE(png_image_write_to_memory(&image, nullptr, &size, 0, indices.data, 0, palette.data()));
  std::vector<uchar> bytes(size);
  ASSERT_TRUE(png_image_write_to_memory(&image, bytes.data(), &size, 0, indices.data, 0, palette.data()));
  bytes.resize(size);
  files.emplace_back("palette", bytes);

  for (const auto& [name, png] : files) {
    std::string why;
    const cv::Mat ours = decode_png(png, why);
    ASSERT_FALSE(ours.empty()) << name << ": " << why;
    EXPECT_TRUE(same_pixels(ours, opencv_decode_rgb(png))) << name;
  }
#endif
}

TEST(PngCodec, OpenCVReadsWhatWeWrite) {
  REQUIRE_IMGCODECS();
#ifdef ATELIER_TEST_IMGCODECS
  const cv::Mat rgb = noise(21, 34, CV_8UC3, 11);
  EXPECT_TRUE(same_pixels(opencv_decode_rgb(detail::encode_png(rgb)), rgb));
#endif
}

// Same library, same settings (quality, 4:2:0 chroma, accurate DCT): the
// JPEG we write decodes to the pixels OpenCV's JPEG of the same image did.
TEST(JpegCodec, EncodesTheSamePixelsAsOpenCV) {
  REQUIRE_IMGCODECS();
#ifdef ATELIER_TEST_IMGCODECS
  cv::Mat smooth;
  cv::GaussianBlur(noise(48, 64, CV_8UC3, 12), smooth, cv::Size(0, 0), 2.0);
  for (const int quality : {50, 95}) {
    cv::Mat bgr;
    cv::cvtColor(smooth, bgr, cv::COLOR_RGB2BGR);
    const cv::Mat theirs = opencv_decode_rgb(opencv_encode(".jpg", bgr, {cv::IMWRITE_JPEG_QUALITY, quality}));
    const cv::Mat ours = opencv_decode_rgb(detail::encode_jpeg(smooth, quality, false));
    EXPECT_TRUE(same_pixels(ours, theirs)) << "quality " << quality;
  }
  // Grey JPEGs stay one channel in the file.
  const cv::Mat grey = noise(16, 16, CV_8UC1, 13);
  EXPECT_TRUE(same_pixels(cv::imdecode(detail::encode_jpeg(grey, 90, false), cv::IMREAD_UNCHANGED),
                          cv::imdecode(opencv_encode(".jpg", grey, {cv::IMWRITE_JPEG_QUALITY, 90}),
                                       cv::IMREAD_UNCHANGED)));
#endif
}

// Without OpenCV: a JPEG round trip of a smooth image stays close, and a
// progressive JPEG decodes to the same pixels as a baseline one.
TEST(JpegCodec, RoundTripIsCloseAndProgressiveMatchesBaseline) {
  cv::Mat smooth;
  cv::GaussianBlur(noise(48, 64, CV_8UC3, 14), smooth, cv::Size(0, 0), 3.0);
  std::string why;
  const cv::Mat baseline = detail::decode_rgb(detail::encode_jpeg(smooth, 95, false), why);
  ASSERT_FALSE(baseline.empty()) << why;
  EXPECT_GT(cv::PSNR(baseline, smooth), 35.0);
  EXPECT_TRUE(same_pixels(detail::decode_rgb(detail::encode_jpeg(smooth, 95, true), why), baseline)) << why;
  // After a progressive image the next baseline one is baseline again:
  // the same bytes as before.
  EXPECT_EQ(detail::encode_jpeg(smooth, 95, false), detail::encode_jpeg(smooth, 95, false));
  const auto first = detail::encode_jpeg(smooth, 80, false);
  detail::encode_jpeg(smooth, 80, true);
  EXPECT_EQ(detail::encode_jpeg(smooth, 80, false), first);
  EXPECT_LT(cv::PSNR(detail::decode_rgb(detail::encode_jpeg(smooth, 5, false), why), smooth),
            cv::PSNR(baseline, smooth));  // quality is honoured
}

TEST(PngCodec, AForgedHugeHeaderIsRefusedBeforeAllocating) {
  std::string why;
  EXPECT_TRUE(decode_png(png_header(60000, 60000), why).empty());
  EXPECT_NE(why.find("too large (60000 x 60000)"), std::string::npos) << why;
  // Found by scripts/fuzz.sh: the largest sides overflowed a signed product.
  why.clear();
  EXPECT_TRUE(decode_png(png_header(0xFFFFFFFFu, 0xFFFFFFFFu), why).empty());
  EXPECT_NE(why.find("too large (4294967295 x 4294967295)"), std::string::npos) << why;
}

TEST(PngCodec, BrokenFilesAreRefusedWithAReason) {
  const std::vector<uchar> good = detail::encode_png(noise(20, 20, CV_8UC3, 15));
  std::string why;

  // Cut inside the image data.
  std::vector<uchar> cut(good.begin(), good.begin() + static_cast<long>(good.size() / 2));
  EXPECT_TRUE(decode_png(cut, why).empty());
  EXPECT_FALSE(why.empty());

  // The header alone: no image data at all.
  why.clear();
  EXPECT_TRUE(decode_png(png_header(4, 4), why).empty());
  EXPECT_FALSE(why.empty());

  // A flipped bit in the IHDR chunk fails its CRC.
  std::vector<uchar> flipped = good;
  flipped[18] ^= 0x01;
  why.clear();
  EXPECT_TRUE(decode_png(flipped, why).empty());
  EXPECT_NE(why.find("CRC"), std::string::npos) << why;

  // Random bytes after a PNG signature.
  std::vector<uchar> random(good.begin(), good.begin() + 8);
  std::mt19937 rng(16);
  for (int i = 0; i < 500; ++i) random.push_back(static_cast<uchar>(rng()));
  why.clear();
  EXPECT_TRUE(decode_png(random, why).empty());
  EXPECT_FALSE(why.empty());
}

TEST(ImageFiles, BmpIsRefusedNamingTheFormat) {
  std::vector<uchar> bmp = {'B', 'M'};
  bmp.resize(64, 0);
  std::string why;
  EXPECT_TRUE(detail::decode_rgb(bmp, why).empty());
  EXPECT_NE(why.find("BMP"), std::string::npos) << why;
}

TEST(ImageFiles, WriteAndDecodeThroughThePublicApi) {
  const fs::path dir = fs::temp_directory_path() / ("atelier-codec-" + std::to_string(std::random_device{}()));
  fs::create_directories(dir);
  const torch::Tensor rgb = torch::randint(0, 256, {9, 14, 3}, torch::kUInt8);
  atelier::data::write_image_file((dir / "a.png").string(), rgb);
  EXPECT_TRUE(torch::equal(atelier::data::decode_image((dir / "a.png").string()), rgb));
  atelier::data::write_image_file((dir / "b.JPG").string(), rgb);
  EXPECT_EQ(atelier::data::decode_image((dir / "b.JPG").string()).sizes(), rgb.sizes());

  const auto message = [](auto&& call) {
    try {
      call();
    } catch (const DataError& e) {
      return std::string(e.what());
    }
    return std::string("no DataError");
  };
  const std::string bmp = (dir / "c.bmp").string();
  EXPECT_NE(message([&] { atelier::data::write_image_file(bmp, rgb); }).find(bmp + "': unknown extension '.bmp'"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(bmp));
  EXPECT_NE(message([&] { atelier::data::encode_png(rgb.to(torch::kFloat)); }).find("uint8 [H, W, 3]"),
            std::string::npos);
  EXPECT_NE(message([&] { atelier::data::encode_jpeg(torch::zeros({4, 4, 4}, torch::kUInt8)); }).find("uint8"),
            std::string::npos);
  EXPECT_NE(message([&] { atelier::data::encode_jpeg(rgb, 0); }).find("quality"), std::string::npos);
  const std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  EXPECT_NE(message([&] { atelier::data::decode_image_bytes(text, "greeting.png"); })
                .find("cannot decode image 'greeting.png': not a JPEG or PNG image"),
            std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
