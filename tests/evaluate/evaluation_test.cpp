// Evaluating a (tiny, untrained) generator on folders of pattern images:
// what each number measures, independence of batching, the distance's name,
// and errors that name the folder or file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "data/data.h"
#include "evaluate/evaluate.h"
#include "tests/support/pattern_images.h"

namespace atelier::evaluate {
namespace {
namespace fs = std::filesystem;

class Evaluation : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-eval-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 3, 1);
    testing_support::write_pattern_images(root / "style", 2, 2);
    torch::manual_seed(0);
    models::GeneratorOptions options;
    options.encoder.width = options.decoder.width = 4;
    generator = models::AdaINGenerator(options);
    comm = comm::make_communicator(comm::Environment{}, {});
  }
  void TearDown() override { fs::remove_all(root); }

  EvalSetOptions set_options(int64_t pairs = 0) const {
    return {{(root / "content").string()}, {(root / "style").string()}, pairs, 32};
  }
  EvalResult run(const EvalSet& set, int64_t batch = 4, const std::string& loss_network = "random_vgg") {
    return evaluate(generator, set, *comm, {batch, loss_network});
  }

  fs::path root;
  models::AdaINGenerator generator{nullptr};
  std::shared_ptr<comm::Communicator> comm;
};

// Bad files first in sort order (random bytes named .jpg, a truncated JPEG,
// text named .png): left out and counted, the rest evaluated; a folder of
// nothing but bad files is refused naming it.
TEST_F(Evaluation, UnreadableFilesAreLeftOutAndCounted) {
  const auto bad = root / "bad";
  fs::create_directories(bad);
  const auto good = atelier::testing_support::encode_bgr(".jpg", atelier::testing_support::read_bgr(root / "content" / "img0.png"));
  std::ofstream(bad / "0-truncated.jpg", std::ios::binary)
      .write(reinterpret_cast<const char*>(good.data()), static_cast<std::streamsize>(good.size() / 3));
  std::ofstream(bad / "0-random.jpg", std::ios::binary) << std::string("\x13\x37 random bytes \xff\x00", 18);
  std::ofstream(bad / "0-text.png") << "this is not a PNG\n";
  const EvalSetOptions bad_only{{bad.string()}, {(root / "style").string()}, 0, 32};
  try {
    load_eval_set(bad_only, 0, 1);
    ADD_FAILURE() << "a folder without one readable image must be refused";
  } catch (const EvalError& e) {
    EXPECT_NE(std::string(e.what()).find("content images: none of the 3 image files in '" + bad.string() + "'"),
              std::string::npos) << e.what();
  }
  fs::copy(root / "content", bad);
  const EvalSetOptions mixed{{bad.string()}, {(root / "style").string()}, 0, 32};
  const auto set = load_eval_set(mixed, 0, 1);
  EXPECT_EQ(set.skipped_files, 3);
  EXPECT_EQ(set.total_pairs, 3 * 2);  // the three readable contents x two styles
  EXPECT_TRUE(torch::equal(set.content, load_eval_set(set_options(), 0, 1).content));
}

TEST_F(Evaluation, EveryPairOfTheFoldersIsMeasuredWithPlausibleNumbers) {
  const auto result = run(load_eval_set(set_options(), 0, 1));
  EXPECT_EQ(result.pairs, 6);
  EXPECT_EQ(result.style_images, 2);
  EXPECT_EQ(result.distance_name, "random-VGG FD");
  EXPECT_TRUE(result.distances_skipped.empty()) << result.distances_skipped;
  const double s = metric(result, "ssim_rgb");
  EXPECT_TRUE(s > -1 && s < 1) << s;
  EXPECT_TRUE(std::isfinite(metric(result, "psnr_y")));
  for (const char* layer : {"relu1_1", "relu2_1", "relu3_1", "relu4_1"}) {
    EXPECT_GT(metric(result, std::string("style_gram_") + layer), 0) << layer;
    EXPECT_GT(metric(result, std::string("style_meanstd_") + layer), 0) << layer;
  }
  EXPECT_GT(metric(result, "random_vgg_fd"), 0);
  EXPECT_TRUE(std::isfinite(metric(result, "random_vgg_kid")));
  EXPECT_THROW(metric(result, "vgg_fid"), EvalError);
}

// One pair, recomputed here from the generator and models/' own losses: the
// numbers are what their names say, with the training loss's definitions.
TEST_F(Evaluation, OnePairsNumbersAreTheLossesAndScoresOfItsOutput) {
  const auto content = data::load_centered((root / "content" / "img1.png").string(), 32).unsqueeze(0);
  const auto style = data::load_centered((root / "style" / "img0.png").string(), 32).unsqueeze(0);
  const auto set = slice_eval_set(content, style, {0}, 0, 1);
  const auto result = run(set);
  torch::NoGradGuard no_grad;
  generator->eval();
  const auto out = generator->stylize(content, style);
  const auto f_out = generator->encoder->forward_features(out.image);
  const auto f_style = generator->encoder->forward_features(style);
  EXPECT_NEAR(metric(result, "ssim_rgb"), ssim(out.image, content).item<double>(), 1e-6);
  EXPECT_NEAR(metric(result, "psnr_rgb"), psnr(out.image, content).item<double>(), 1e-5);
  EXPECT_NEAR(metric(result, "content_loss_adain"), models::content_loss(f_out[3], out.target).item<double>(), 1e-6);
  EXPECT_NEAR(metric(result, "content_loss"),
              models::content_loss(f_out[3], generator->encoder->forward(content)).item<double>(), 1e-6);
  const char* layers[] = {"relu1_1", "relu2_1", "relu3_1", "relu4_1"};
  for (int l = 0; l < 4; ++l) {
    const double gram = models::style_loss({f_out[l]}, {f_style[l]}, models::StyleStatistics::Gram).item<double>();
    const double meanstd = models::style_loss({f_out[l]}, {f_style[l]}, models::StyleStatistics::MeanStd).item<double>();
    EXPECT_NEAR(metric(result, std::string("style_gram_") + layers[l]), gram, 1e-6 * (1 + gram)) << layers[l];
    EXPECT_NEAR(metric(result, std::string("style_meanstd_") + layers[l]), meanstd, 1e-6 * (1 + meanstd)) << layers[l];
  }
  EXPECT_EQ(result.pairs, 1);
  EXPECT_FALSE(result.distances_skipped.empty());  // one pair has no distribution
}

TEST_F(Evaluation, BatchSizeDoesNotChangeTheNumbers) {
  const auto set = load_eval_set(set_options(5), 0, 1);
  const auto one = run(set, 1), four = run(set, 4);
  ASSERT_EQ(one.metrics.size(), four.metrics.size());
  for (size_t m = 0; m < one.metrics.size(); ++m)
    EXPECT_NEAR(one.metrics[m].value, four.metrics[m].value, 1e-5 * (1 + std::abs(one.metrics[m].value)))
        << one.metrics[m].key;
}

TEST_F(Evaluation, ImageNetWeightsNameTheDistanceVggFidAndModeIsRestored) {
  generator->train();
  const auto result = run(load_eval_set(set_options(), 0, 1), 4, "vgg");
  EXPECT_TRUE(generator->is_training());
  EXPECT_EQ(result.distance_name, "VGG-FID");
  EXPECT_GT(metric(result, "vgg_fid"), 0);
  EXPECT_TRUE(std::isfinite(metric(result, "vgg_kid")));
  EXPECT_THROW(metric(result, "random_vgg_fd"), EvalError);
}

TEST_F(Evaluation, RanksSplitThePairsIntoContiguousBlocks) {
  const auto whole = load_eval_set(set_options(5), 0, 1);
  const auto first = load_eval_set(set_options(5), 0, 2), second = load_eval_set(set_options(5), 1, 2);
  EXPECT_EQ(first.slots, 3);
  EXPECT_EQ(first.content.size(0), 3);
  EXPECT_EQ(second.content.size(0), 2);
  EXPECT_TRUE(torch::equal(torch::cat({first.content, second.content}), whole.content));
  EXPECT_TRUE(torch::equal(torch::cat({first.style, second.style}), whole.style));
  EXPECT_EQ(load_eval_set(set_options(1), 1, 2).content.size(0), 0);  // nothing left for rank 1
}

TEST_F(Evaluation, EmptyOrMissingFoldersAreNamed) {
  fs::create_directories(root / "empty");
  auto options = set_options();
  options.content = {(root / "empty").string()};
  try {
    load_eval_set(options, 0, 1);
    FAIL() << "an empty content folder was accepted";
  } catch (const EvalError& e) {
    EXPECT_NE(std::string(e.what()).find("content"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find((root / "empty").string()), std::string::npos) << e.what();
  }
  options = set_options();
  options.style = {(root / "missing").string()};
  try {
    load_eval_set(options, 0, 1);
    FAIL() << "a missing style folder was accepted";
  } catch (const EvalError& e) {
    EXPECT_NE(std::string(e.what()).find("style"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find((root / "missing").string()), std::string::npos) << e.what();
  }
}

TEST_F(Evaluation, BadSizesAndTooManyPairsAreRefused) {
  auto options = set_options();
  options.size = 12;
  EXPECT_THROW(load_eval_set(options, 0, 1), EvalError);
  EXPECT_THROW(load_eval_set(set_options(7), 0, 1), EvalError);  // 3 x 2 = 6 pairs exist
}

}  // namespace
}  // namespace atelier::evaluate
