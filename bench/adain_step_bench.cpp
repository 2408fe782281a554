// C++ side of the AdaIN-GAN step benchmark: the trainer's own step
// (trainer/adain_gan.cpp) on random images, timed like bench/adain_step.py.
// Prints one line: "cpp median_ms=<ms> steps=<n>".
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "trainer/adain_gan.h"

int main(int argc, char** argv) {
  int64_t width = 32, size = 64, batch = 4, threads = 2, steps = 20, warmup = 3;
  CLI::App app{"AdaIN-GAN training step benchmark (C++)"};
  app.add_option("--width", width, "encoder/decoder/discriminator width");
  app.add_option("--size", size, "image size");
  app.add_option("--batch", batch, "batch size");
  app.add_option("--threads", threads, "intra-op threads");
  app.add_option("--steps", steps, "timed steps");
  app.add_option("--warmup", warmup, "untimed steps first");
  CLI11_PARSE(app, argc, argv);

  torch::set_num_threads(static_cast<int>(threads));
  if (std::getenv("FTZ")) at::globalContext().setFlushDenormal(true);
  torch::manual_seed(0);
  atelier::trainer::Config config;
  config.model.generator.encoder.width = width;
  config.model.generator.decoder.width = width;
  config.model.discriminator.width = width;
  atelier::trainer::AdaINGAN gan(config);
  const auto content = torch::rand({batch, 3, size, size}) * 2 - 1;
  const auto style = torch::rand({batch, 3, size, size}) * 2 - 1;

  for (int64_t i = 0; i < warmup; ++i) gan.step(content, style, 1.0);
  std::vector<double> ms;
  for (int64_t i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    gan.step(content, style, 1.0);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<long>(ms.size() / 2), ms.end());
  std::printf("cpp median_ms=%.3f steps=%lld\n", ms[ms.size() / 2], static_cast<long long>(steps));
  return 0;
}
