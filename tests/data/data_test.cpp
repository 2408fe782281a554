// Tests for data/: listing, decoding, augmentation and the prefetching loader.
// Every test writes tiny images into its own temporary folder.
#include "data/data.h"
#include "tests/support/image_files.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using atelier::data::AugmentOptions;
using atelier::data::ContentStyleBatch;
using atelier::data::Cursor;
using atelier::data::DataError;
using atelier::data::LoaderOptions;
using atelier::data::PrefetchLoader;

// Calls `f`, expects a DataError and returns its message.
template <typename F>
std::string data_error_of(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a DataError";
  return "";
}

cv::Mat noise_image(int rows, int cols, uint64_t seed) {
  cv::Mat image(rows, cols, CV_8UC3);
  cv::RNG rng(seed);
  rng.fill(image, cv::RNG::UNIFORM, 0, 256);
  return image;
}

// Uniform images whose red channel encodes `id`, so a sample names its file
// whatever crop or flip it got.
cv::Mat id_image(int id) { return cv::Mat(40, 40, CV_8UC3, cv::Scalar(0, 100, 20 + 20 * id)); }

int id_of(const torch::Tensor& sample) {
  const auto red = std::lround((sample[0][0][0].item<float>() + 1.0f) * 127.5f);
  return static_cast<int>((red - 20) / 20);
}

// The file's pixels as our functions should see them: float [3, H, W] in [-1, 1].
torch::Tensor as_unit_chw(const torch::Tensor& rgb) {
  return rgb.permute({2, 0, 1}).to(torch::kFloat).div(127.5).sub(1.0);
}

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = fs::temp_directory_path() / ("atelier-data-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string write_image(const std::string& name, const cv::Mat& bgr) const {
    fs::create_directories(fs::path(path(name)).parent_path());
    atelier::testing_support::write_bgr(path(name), bgr);
    return path(name);
  }

  std::string write_bytes(const std::string& name, const std::vector<uchar>& bytes) const {
    fs::create_directories(fs::path(path(name)).parent_path());
    std::ofstream out(path(name), std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return path(name);
  }

  std::string write_random_bytes(const std::string& name) const {
    std::mt19937 generator(1234);
    std::vector<uchar> bytes(2000);
    for (uchar& b : bytes) b = static_cast<uchar>(generator() & 0xFF);
    bytes[0] = 0x42;  // never a JPEG/PNG/BMP signature
    return write_bytes(name, bytes);
  }

  // `count` noise images of the given size in folder `name`.
  std::vector<std::string> write_noise_folder(const std::string& name, int count, int rows, int cols) const {
    for (int i = 0; i < count; ++i) {
      write_image(name + "/" + std::to_string(i) + ".png", noise_image(rows, cols, 100 + i));
    }
    return atelier::data::list_images({path(name)});
  }

  fs::path dir_;
};

LoaderOptions small_options(std::vector<std::string> content, std::vector<std::string> style) {
  LoaderOptions options;
  options.content = std::move(content);
  options.style = std::move(style);
  options.augment.load_size = 24;
  options.augment.crop_size = 16;
  options.batch_size = 2;
  options.workers = 2;
  options.prefetch = 3;
  options.seed = 7;
  return options;
}

std::vector<ContentStyleBatch> take(PrefetchLoader& loader, int count) {
  std::vector<ContentStyleBatch> batches;
  for (int i = 0; i < count; ++i) batches.push_back(loader.next());
  return batches;
}

void expect_same_batch(const ContentStyleBatch& a, const ContentStyleBatch& b) {
  EXPECT_TRUE(a.start == b.start) << "start (" << a.start.epoch << ", " << a.start.index << ") vs ("
                                  << b.start.epoch << ", " << b.start.index << ")";
  EXPECT_TRUE(torch::equal(a.content, b.content));
  EXPECT_TRUE(torch::equal(a.style, b.style));
}

// ---------------------------------------------------------------------------
// list_images

TEST_F(DataTest, ListImagesRecursesFiltersByExtensionSortsAndDeduplicates) {
  write_image("root/b.png", noise_image(8, 8, 1));
  write_image("root/A.JPG", noise_image(8, 8, 2));
  write_image("root/sub/c.jpeg", noise_image(8, 8, 3));
  write_image("root/sub/deeper/d.png", noise_image(8, 8, 4));
  write_bytes("root/sub/deeper/old.bmp", {'B', 'M'});  // not read since imgcodecs went
  write_image("root/sub/f.Png", noise_image(8, 8, 5));
  write_bytes("root/notes.txt", {'h', 'i'});
  write_bytes("root/sub/e.gif", {'G', 'I', 'F'});

  const auto images =
      atelier::data::list_images({path("root"), path("root/b.png"), path("root/./sub/c.jpeg")});
  const std::vector<std::string> expected = {path("root/A.JPG"), path("root/b.png"), path("root/sub/c.jpeg"),
                                             path("root/sub/deeper/d.png"), path("root/sub/f.Png")};
  EXPECT_EQ(images, expected);
}

TEST_F(DataTest, ListImagesNamesAMissingFolder) {
  const std::string message = data_error_of([&] { atelier::data::list_images({path("nowhere")}); });
  EXPECT_NE(message.find(path("nowhere")), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
}

TEST_F(DataTest, ListImagesNamesAFolderWithoutImages) {
  write_bytes("empty/readme.txt", {'x'});
  const std::string message = data_error_of([&] { atelier::data::list_images({path("empty")}); });
  EXPECT_NE(message.find(path("empty")), std::string::npos) << message;
  EXPECT_NE(message.find("contains no images"), std::string::npos) << message;
}

TEST_F(DataTest, ListImagesRejectsASingleFileWithoutImageExtension) {
  const std::string notes = write_bytes("notes.txt", {'x'});
  const std::string message = data_error_of([&] { atelier::data::list_images({notes}); });
  EXPECT_NE(message.find(notes), std::string::npos) << message;
  const std::string image = write_image("one.png", noise_image(8, 8, 1));
  EXPECT_EQ(atelier::data::list_images({image}), std::vector<std::string>{image});
}

// ---------------------------------------------------------------------------
// decode_image

TEST_F(DataTest, DecodeImageReturnsRgbUint8HeightWidthChannels) {
  cv::Mat bgr(40, 50, CV_8UC3, cv::Scalar(0, 0, 0));
  bgr.at<cv::Vec3b>(3, 7) = cv::Vec3b(10, 20, 30);  // B, G, R
  const torch::Tensor rgb = atelier::data::decode_image(write_image("pixel.png", bgr));
  EXPECT_EQ(rgb.sizes(), (std::vector<int64_t>{40, 50, 3}));
  EXPECT_EQ(rgb.scalar_type(), torch::kUInt8);
  EXPECT_EQ(rgb[3][7][0].item<int>(), 30);
  EXPECT_EQ(rgb[3][7][1].item<int>(), 20);
  EXPECT_EQ(rgb[3][7][2].item<int>(), 10);
  EXPECT_EQ(rgb.sum().item<int64_t>(), 60);
}

TEST_F(DataTest, DecodeImageRejectsRandomBytesNamingTheFile) {
  const std::string file = write_random_bytes("x.jpg");
  const std::string message = data_error_of([&] { atelier::data::decode_image(file); });
  EXPECT_NE(message.find(file), std::string::npos) << message;
}

// libjpeg decodes a cut-off file into a grey-padded image with only a
// warning, so this needs a check of our own; baseline and progressive files
// differ in where the last scan starts.
TEST_F(DataTest, DecodeImageRejectsATruncatedJpeg) {
  for (const int progressive : {0, 1}) {
    std::vector<uchar> jpeg = atelier::testing_support::encode_bgr(".jpg", noise_image(64, 64, 5), 95, progressive != 0);
    std::vector<uchar> padded = jpeg;
    padded.insert(padded.end(), {0, 0, 0, 0});  // bytes after the end marker are harmless
    const std::string whole = write_bytes("whole.jpg", padded);
    EXPECT_EQ(atelier::data::decode_image(whole).size(0), 64) << "progressive " << progressive;

    jpeg.resize(jpeg.size() * 3 / 4);
    const std::string cut = write_bytes("cut.jpg", jpeg);
    const std::string message = data_error_of([&] { atelier::data::decode_image(cut); });
    EXPECT_NE(message.find(cut), std::string::npos) << message;
  }
}

TEST_F(DataTest, DecodeImageRejectsATruncatedPng) {
  std::vector<uchar> png = atelier::testing_support::encode_bgr(".png", noise_image(64, 64, 6));
  png.resize(png.size() / 2);
  const std::string cut = write_bytes("cut.png", png);
  const std::string message = data_error_of([&] { atelier::data::decode_image(cut); });
  EXPECT_NE(message.find(cut), std::string::npos) << message;
}

TEST_F(DataTest, DecodeImageRejectsAMissingFile) {
  const std::string message = data_error_of([&] { atelier::data::decode_image(path("gone.png")); });
  EXPECT_NE(message.find(path("gone.png")), std::string::npos) << message;
}

// ---------------------------------------------------------------------------
// augment

TEST_F(DataTest, AugmentReturnsFloatCropInUnitRange) {
  const torch::Tensor rgb = atelier::data::decode_image(write_image("noise.png", noise_image(40, 60, 1)));
  const torch::Tensor out = atelier::data::augment(rgb, AugmentOptions{48, 32, true}, 3);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  EXPECT_GE(out.min().item<float>(), -1.0f);
  EXPECT_LE(out.max().item<float>(), 1.0f);

  // Black and white map exactly onto the ends of the range.
  torch::Tensor extremes = torch::zeros({32, 32, 3}, torch::kUInt8);
  extremes.slice(0, 0, 16).fill_(255);
  const torch::Tensor scaled = atelier::data::augment(extremes, AugmentOptions{32, 32, false}, 0);
  EXPECT_EQ(scaled.min().item<float>(), -1.0f);
  EXPECT_EQ(scaled.max().item<float>(), 1.0f);
}

TEST_F(DataTest, AugmentGrowsImagesSmallerThanLoadSize) {
  const torch::Tensor rgb = atelier::data::decode_image(write_image("small.png", noise_image(20, 30, 2)));
  const torch::Tensor out = atelier::data::augment(rgb, AugmentOptions{40, 32, true}, 1);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 32, 32}));
}

TEST_F(DataTest, AugmentIsDeterministicForASeed) {
  const torch::Tensor rgb = atelier::data::decode_image(write_image("noise.png", noise_image(48, 64, 2)));
  const AugmentOptions options{40, 24, true};
  EXPECT_TRUE(
      torch::equal(atelier::data::augment(rgb, options, 11), atelier::data::augment(rgb, options, 11)));
}

TEST_F(DataTest, AugmentSeedsChooseDifferentCrops) {
  const torch::Tensor rgb = atelier::data::decode_image(write_image("noise.png", noise_image(48, 64, 3)));
  const AugmentOptions options{48, 24, false};
  std::vector<torch::Tensor> distinct;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    const torch::Tensor out = atelier::data::augment(rgb, options, seed);
    bool seen = false;
    for (const auto& other : distinct) seen = seen || torch::equal(out, other);
    if (!seen) distinct.push_back(out);
  }
  EXPECT_GE(distinct.size(), 6u);
}

TEST_F(DataTest, AugmentFlipMirrorsTheWholeImage) {
  // Crop size == load size == image size: the crop is the image itself, so
  // the only possible outputs are the image and its mirror.
  const torch::Tensor rgb = atelier::data::decode_image(write_image("noise.png", noise_image(32, 32, 4)));
  const torch::Tensor straight = as_unit_chw(rgb);
  const torch::Tensor mirrored = straight.flip({2});
  int flipped = 0;
  for (uint64_t seed = 0; seed < 32; ++seed) {
    const torch::Tensor out = atelier::data::augment(rgb, AugmentOptions{32, 32, true}, seed);
    const bool is_straight = torch::equal(out, straight);
    const bool is_mirrored = torch::equal(out, mirrored);
    EXPECT_TRUE(is_straight != is_mirrored) << "seed " << seed;
    flipped += is_mirrored ? 1 : 0;
    EXPECT_TRUE(torch::equal(atelier::data::augment(rgb, AugmentOptions{32, 32, false}, seed), straight));
  }
  EXPECT_GT(flipped, 4);
  EXPECT_LT(flipped, 28);
}

TEST_F(DataTest, AugmentRejectsCropLargerThanLoadOrEmpty) {
  const torch::Tensor rgb = torch::zeros({32, 32, 3}, torch::kUInt8);
  data_error_of([&] { atelier::data::augment(rgb, AugmentOptions{32, 64, true}, 0); });
  data_error_of([&] { atelier::data::augment(rgb, AugmentOptions{32, 0, true}, 0); });
  data_error_of([&] { atelier::data::augment(torch::zeros({32, 32}, torch::kUInt8), AugmentOptions{}, 0); });
}

// ---------------------------------------------------------------------------
// load_centered

// Pixel (y, x) holds R = 4x, G = 5y, B = 7, so a crop's offset is visible.
cv::Mat coordinate_image(int rows, int cols) {
  cv::Mat bgr(rows, cols, CV_8UC3);
  for (int y = 0; y < rows; ++y) {
    for (int x = 0; x < cols; ++x) {
      bgr.at<cv::Vec3b>(y, x) = cv::Vec3b(7, static_cast<uchar>(5 * y), static_cast<uchar>(4 * x));
    }
  }
  return bgr;
}

TEST_F(DataTest, LoadCenteredTakesTheCentreSquare) {
  const std::string wide = write_image("wide.png", coordinate_image(40, 60));
  const torch::Tensor expected_wide = as_unit_chw(atelier::data::decode_image(wide)).slice(2, 10, 50);
  EXPECT_TRUE(torch::allclose(atelier::data::load_centered(wide, 40), expected_wide, 0, 1e-6));

  const std::string tall = write_image("tall.png", coordinate_image(50, 40));
  const torch::Tensor expected_tall = as_unit_chw(atelier::data::decode_image(tall)).slice(1, 5, 45);
  EXPECT_TRUE(torch::allclose(atelier::data::load_centered(tall, 40), expected_tall, 0, 1e-6));

  const torch::Tensor shrunk = atelier::data::load_centered(wide, 20);
  EXPECT_EQ(shrunk.sizes(), (std::vector<int64_t>{3, 20, 20}));
}

// ---------------------------------------------------------------------------
// PrefetchLoader

TEST_F(DataTest, LoaderBatchesDoNotDependOnWorkerCount) {
  LoaderOptions options =
      small_options(write_noise_folder("content", 5, 40, 48), write_noise_folder("style", 3, 48, 40));
  options.workers = 1;
  options.prefetch = 1;
  PrefetchLoader one(options);
  options.workers = 3;
  options.prefetch = 5;
  PrefetchLoader three(options);
  for (int i = 0; i < 7; ++i) expect_same_batch(one.next(), three.next());
}

// pin_memory (a GPU run's loader): where LibTorch can pin, the batches are
// page-locked and hold the same pixels; where it cannot (a CPU-only
// LibTorch, no GPU), the loader refuses at once, saying which.
TEST_F(DataTest, PinnedBatchesArePageLockedOrRefusedNamingWhy) {
  LoaderOptions options =
      small_options(write_noise_folder("content", 5, 40, 48), write_noise_folder("style", 3, 48, 40));
  PrefetchLoader pageable(options);
  options.pin_memory = true;
  if (!torch::cuda::is_available()) {
    try {
      PrefetchLoader pinned(options);
      FAIL() << "pinned batches without a GPU were accepted";
    } catch (const DataError& e) {
      const std::string why = torch::hasCUDA() ? "LibTorch sees no GPU" : "this LibTorch build has no CUDA";
      EXPECT_EQ(std::string(e.what()), "pinned batches (pin_memory) need a GPU: " + why);
    }
    return;
  }
  PrefetchLoader pinned(options);
  for (int i = 0; i < 3; ++i) {
    const auto batch = pinned.next();
    EXPECT_TRUE(batch.content.is_pinned() && batch.style.is_pinned());
    expect_same_batch(pageable.next(), batch);
  }
}

TEST_F(DataTest, LoaderResumedAtCursorYieldsTheRemainingBatches) {
  const LoaderOptions options =
      small_options(write_noise_folder("content", 5, 40, 48), write_noise_folder("style", 3, 48, 40));
  PrefetchLoader uninterrupted(options);
  const auto full = take(uninterrupted, 9);

  Cursor resume_at;
  {
    PrefetchLoader interrupted(options);
    take(interrupted, 4);
    resume_at = interrupted.cursor();
  }
  EXPECT_TRUE(resume_at == (Cursor{1, 3}));  // 8 samples of 5 per epoch

  PrefetchLoader resumed(options, resume_at);
  for (int i = 4; i < 9; ++i) expect_same_batch(resumed.next(), full[static_cast<size_t>(i)]);
}

TEST_F(DataTest, LoaderSkipsACorruptFileOnceAndNeverUsesIt) {
  for (int id = 0; id < 4; ++id) write_image("content/" + std::to_string(id) + ".png", id_image(id));
  write_random_bytes("content/2b-corrupt.jpg");
  const auto content = atelier::data::list_images({path("content")});
  ASSERT_EQ(content.size(), 5u);
  PrefetchLoader loader(small_options(content, write_noise_folder("style", 2, 40, 40)));

  for (int b = 0; b < 10; ++b) {  // four epochs of five samples
    const ContentStyleBatch batch = loader.next();
    for (int64_t i = 0; i < batch.content.size(0); ++i) {
      const torch::Tensor sample = batch.content[i];
      EXPECT_TRUE(torch::equal(sample.amin({1, 2}), sample.amax({1, 2}))) << "not one of the uniform images";
      const int id = id_of(sample);
      EXPECT_TRUE(id >= 0 && id < 4) << "sample came from file id " << id;
    }
  }
  EXPECT_EQ(loader.skipped_files(), 1);
}

TEST_F(DataTest, LoaderReportsWhenNoImageIsReadable) {
  const std::string bad = write_random_bytes("content/bad.png");
  PrefetchLoader loader(small_options({bad}, write_noise_folder("style", 1, 40, 40)));
  const std::string message = data_error_of([&] { loader.next(); });
  EXPECT_NE(message.find("no readable images"), std::string::npos) << message;
  data_error_of([&] { loader.next(); });  // the failure is sticky, not skipped over
}

TEST_F(DataTest, LoaderRanksSplitTheGlobalBatchDisjointly) {
  LoaderOptions options =
      small_options(write_noise_folder("content", 8, 40, 48), write_noise_folder("style", 3, 48, 40));
  options.batch_size = 4;
  PrefetchLoader whole(options);
  options.batch_size = 2;
  options.world_size = 2;
  options.rank = 0;
  PrefetchLoader rank0(options);
  options.rank = 1;
  PrefetchLoader rank1(options);

  for (int b = 0; b < 5; ++b) {
    const ContentStyleBatch global = whole.next();
    const ContentStyleBatch first = rank0.next();
    const ContentStyleBatch second = rank1.next();
    EXPECT_TRUE(torch::equal(first.content, global.content.slice(0, 0, 2)));
    EXPECT_TRUE(torch::equal(second.content, global.content.slice(0, 2, 4)));
    EXPECT_TRUE(torch::equal(first.style, global.style.slice(0, 0, 2)));
    EXPECT_TRUE(torch::equal(second.style, global.style.slice(0, 2, 4)));
    EXPECT_TRUE(first.start == global.start && second.start == global.start);
    for (int i = 0; i < 2; ++i) {
      for (int j = 0; j < 2; ++j) EXPECT_FALSE(torch::equal(first.content[i], second.content[j]));
    }
  }
  EXPECT_TRUE(rank0.cursor() == whole.cursor() && rank1.cursor() == whole.cursor());
}

TEST_F(DataTest, LoaderEpochRollsOverAfterEveryContentImageOnce) {
  for (int id = 0; id < 6; ++id) write_image("content/" + std::to_string(id) + ".png", id_image(id));
  LoaderOptions options =
      small_options(atelier::data::list_images({path("content")}), write_noise_folder("style", 1, 40, 40));
  options.augment = AugmentOptions{8, 8, true};
  PrefetchLoader loader(options);

  EXPECT_TRUE(loader.cursor() == (Cursor{0, 0}));
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::multiset<int> ids;
    for (int64_t b = 0; b < 3; ++b) {
      const ContentStyleBatch batch = loader.next();
      EXPECT_TRUE(batch.start == (Cursor{epoch, 2 * b}));
      for (int64_t i = 0; i < 2; ++i) ids.insert(id_of(batch.content[i]));
      if (b < 2) {
        EXPECT_TRUE(loader.cursor() == (Cursor{epoch, 2 * b + 2}));
      }
    }
    EXPECT_EQ(ids, (std::multiset<int>{0, 1, 2, 3, 4, 5})) << "epoch " << epoch;
    EXPECT_TRUE(loader.cursor() == (Cursor{epoch + 1, 0}));
  }
}

TEST_F(DataTest, LoaderDestructorReturnsPromptlyWithPrefetchedBatches) {
  LoaderOptions options =
      small_options(write_noise_folder("content", 6, 64, 64), write_noise_folder("style", 2, 64, 64));
  options.workers = 3;
  options.prefetch = 4;
  const auto begin = std::chrono::steady_clock::now();
  {
    PrefetchLoader loader(options);
    loader.next();
    // Let the workers fill the window and block on it.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_GE(loader.wait_seconds(), 0.0);
  }
  { PrefetchLoader never_consumed(options); }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  EXPECT_LT(seconds, 3.0);
}

TEST_F(DataTest, LoaderRejectsInvalidOptionsNamingThem) {
  const LoaderOptions valid =
      small_options(write_noise_folder("content", 2, 40, 40), write_noise_folder("style", 1, 40, 40));
  const auto message_for = [&](auto change) {
    LoaderOptions options = valid;
    change(options);
    return data_error_of([&] { PrefetchLoader loader(options); });
  };
  EXPECT_NE(message_for([](LoaderOptions& o) { o.batch_size = 0; }).find("batch_size"), std::string::npos);
  EXPECT_NE(message_for([](LoaderOptions& o) { o.workers = 0; }).find("workers"), std::string::npos);
  EXPECT_NE(message_for([](LoaderOptions& o) { o.prefetch = 0; }).find("prefetch"), std::string::npos);
  EXPECT_NE(message_for([](LoaderOptions& o) { o.rank = o.world_size = 2; }).find("rank"), std::string::npos);
  EXPECT_NE(message_for([](LoaderOptions& o) { o.content.clear(); }).find("content"), std::string::npos);
  EXPECT_NE(message_for([](LoaderOptions& o) { o.style.clear(); }).find("style"), std::string::npos);
  EXPECT_NE(message_for([](LoaderOptions& o) { o.augment.crop_size = 99; }).find("crop_size"),
            std::string::npos);
  const std::string cursor = data_error_of([&] { PrefetchLoader loader(valid, Cursor{0, 5}); });
  EXPECT_NE(cursor.find("start cursor"), std::string::npos) << cursor;
}

}  // namespace
