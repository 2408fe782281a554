// A tiny trained AdaIN-GAN (or CycleGAN) run (width 4, 32 px crops, 2 steps) in a
// temporary directory, for the tests of commands that use a checkpoint.
#pragma once


#include <cmath>
#include <filesystem>
#include <random>
#include <string>

#include "checkpoint/checkpoint.h"
#include "launcher/launcher.h"
#include "models/models.h"
#include "tests/support/image_files.h"
#include "trainer/trainer.h"

namespace atelier::launcher {

// Writes an RGB image of smooth colour patterns (BGR on disk, as OpenCV writes).
inline void write_pattern_image(const std::filesystem::path& path, int width, int height, int seed) {
  std::filesystem::create_directories(path.parent_path());
  cv::Mat img(height, width, CV_8UC3);
  const int a = seed % 7 + 1, b = seed % 5 + 1;
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x)
      img.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uchar>((x * a * 5) % 256), static_cast<uchar>((y * b * 7) % 256),
                                          static_cast<uchar>(((x + y) * (a + b)) % 256));
  atelier::testing_support::write_bgr(path, img);
}

class TinyCheckpoint {
 public:
  // family "cyclegan": ResNet generators of width 4 with one block.
  // encoder "squeezenet1_1": the shipped SqueezeNet as (AdaIN's) encoder and
  // loss network, with a held-out evaluation at step 2.
  explicit TinyCheckpoint(const std::string& family = "adain", const std::string& encoder = "vgg19") {
    root = std::filesystem::temp_directory_path() / ("atelier-ckpt-" + std::to_string(std::random_device{}()));
    for (int i = 0; i < 3; ++i) write_pattern_image(root / "content" / ("c" + std::to_string(i) + ".png"), 48, 40, i);
    for (int i = 0; i < 2; ++i) write_pattern_image(root / "style" / ("s" + std::to_string(i) + ".png"), 40, 40, 10 + i);
    config.run = {"tiny", (root / "runs").string(), "warn"};
    config.model.generator.encoder.width = 4;
    config.model.generator.decoder.width = 4;
    config.model.discriminator.width = 4;
    config.data.content = {(root / "content").string()};
    config.data.style = {(root / "style").string()};
    config.data.augment = {40, 32, true};
    config.data.workers = 1;
    config.train.steps = 2;
    config.train.batch_size = 2;
    config.train.threads = 1;
    config.train.sample_every = 2;
    config.train.sample_count = 1;
    config.checkpoint.every_steps = 2;
    if (family == "cyclegan") {
      config.model.family = family;
      config.model.resnet = {4, 1};
      config.loss.adversarial = models::Adversarial::LSGAN;
    }
    if (encoder != "vgg19") {
      config.model.generator.encoder.network = encoder;
      config.eval.every_steps = 2;
      config.eval.content = config.data.content;
      config.eval.style = config.data.style;
      config.eval.pairs = 3;
    }
    trainer::train(config, dump_config(config), /*resume=*/false);
    run_dir = root / "runs" / "tiny";
  }
  ~TinyCheckpoint() {
    std::error_code ignored;  // destructors never throw
    std::filesystem::remove_all(root, ignored);
  }
  TinyCheckpoint(const TinyCheckpoint&) = delete;
  TinyCheckpoint& operator=(const TinyCheckpoint&) = delete;

  // The trained checkpoint (runs/tiny/checkpoints/step-2).
  std::filesystem::path trained() const { return run_dir / "checkpoints" / "step-2"; }

  // A checkpoint directory like trained() whose decoder is re-drawn with
  // variance-preserving weights (Kaiming normal, zero biases). Two training
  // steps at width 4 leave a decoder whose output moves by less than a tenth
  // of an 8-bit level between styles, so PNGs could not tell two styles (or
  // a dropped one) apart; this one moves by tens of levels.
  std::filesystem::path sensitive() const {
    models::AdaINGenerator generator(config.model.generator);
    torch::load(generator, (trained() / "generator.pt").string());
    torch::manual_seed(0);
    {
      torch::NoGradGuard no_grad;
      for (auto& item : generator->decoder->named_parameters()) {
        auto& tensor = item.value();
        if (tensor.dim() == 4) tensor.normal_(0.0, std::sqrt(2.0 / static_cast<double>(tensor[0].numel())));
        else tensor.zero_();
      }
    }
    return checkpoint::save(root / "sensitive" / "checkpoints", {1, 0, 1, "test"}, [&](const std::filesystem::path& dir) {
      torch::save(generator, (dir / "generator.pt").string());
      std::filesystem::copy_file(trained() / "config.yaml", dir / "config.yaml");
    });
  }

  std::filesystem::path root;     // temporary directory holding everything
  std::filesystem::path run_dir;  // runs/tiny, with checkpoints/step-2
  trainer::Config config;         // what it was trained with
};

}  // namespace atelier::launcher
