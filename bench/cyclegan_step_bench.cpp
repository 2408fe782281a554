// C++ side of the CycleGAN step benchmark: the trainer's own step
// (trainer/cycle_gan.cpp) on random images, timed like bench/cyclegan_step.py.
// Prints one line: "cpp median_ms=<ms> steps=<n>".
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "trainer/gan_model.h"

int main(int argc, char** argv) {
  int64_t width = 16, blocks = 6, size = 64, batch = 1, threads = 2, steps = 10, warmup = 2;
  std::string precision = "fp32";
  bool channels_last = false;
  CLI::App app{"CycleGAN training step benchmark (C++)"};
  app.add_option("--width", width, "generator and discriminator width (the paper: 64)");
  app.add_option("--blocks", blocks, "residual blocks (the paper: 6 at 128 px, 9 at 256 px)");
  app.add_option("--size", size, "image size");
  app.add_option("--batch", batch, "batch size (the paper: 1)");
  app.add_option("--threads", threads, "intra-op threads");
  app.add_option("--steps", steps, "timed steps");
  app.add_option("--warmup", warmup, "untimed steps first");
  app.add_option("--precision", precision, "fp32, or bf16 (autocast)")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_flag("--channels-last", channels_last, "weights and images in NHWC memory order");
  CLI11_PARSE(app, argc, argv);

  torch::set_num_threads(static_cast<int>(threads));
  torch::manual_seed(0);
  atelier::trainer::Config config;
  config.model.family = "cyclegan";
  config.model.resnet = {width, blocks};
  config.model.discriminator.width = width;
  config.loss.adversarial = atelier::models::Adversarial::LSGAN;
  config.train.precision = precision == "bf16" ? atelier::trainer::Precision::BF16 : atelier::trainer::Precision::FP32;
  config.train.channels_last = channels_last;
  const auto model = atelier::trainer::make_model(config, nullptr);
  auto& gan = *model;
  const auto a = torch::rand({batch, 3, size, size}) * 2 - 1;
  const auto b = torch::rand({batch, 3, size, size}) * 2 - 1;

  for (int64_t i = 0; i < warmup; ++i) gan.step(a, b, 1.0);
  std::vector<double> ms;
  for (int64_t i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    gan.step(a, b, 1.0);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<long>(ms.size() / 2), ms.end());
  std::printf("cpp median_ms=%.3f steps=%lld\n", ms[ms.size() / 2], static_cast<long long>(steps));
  return 0;
}
