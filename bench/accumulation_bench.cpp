// Gradient accumulation's overhead (train.global_batch): one rank's step of
// a global batch of B images as k micro-batches of B/k against the same
// step as one batch of B, the same work per step. Two models take turns
// step by step, so both see the same machine; the ratio of the medians is
// accumulated / whole (1.00: free). Prints one line per family.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "trainer/gan_model.h"

namespace {

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

template <typename Step>
double milliseconds(Step step) {
  const auto t0 = std::chrono::steady_clock::now();
  step();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string family = "adain";
  int64_t width = 32, blocks = 6, size = 64, batch = 8, micro = 2, threads = 2, steps = 20, warmup = 3;
  CLI::App app{"gradient accumulation overhead: k micro-batches vs one batch of the same images"};
  app.add_option("--family", family, "model family")->check(CLI::IsMember({"adain", "cyclegan"}));
  app.add_option("--width", width, "network width");
  app.add_option("--blocks", blocks, "cyclegan: residual blocks");
  app.add_option("--size", size, "image size");
  app.add_option("--batch", batch, "images per step (the global batch of one rank)");
  app.add_option("--micro", micro, "micro-batches the accumulating model splits it into");
  app.add_option("--threads", threads, "intra-op threads");
  app.add_option("--steps", steps, "timed steps of each model")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed steps of each model first");
  CLI11_PARSE(app, argc, argv);
  if (micro < 1 || batch % micro != 0) {
    std::fprintf(stderr, "--batch %lld is not a multiple of --micro %lld\n", static_cast<long long>(batch),
                 static_cast<long long>(micro));
    return 2;
  }

  torch::set_num_threads(static_cast<int>(threads));
  atelier::trainer::Config config;
  config.model.family = family;
  config.model.generator.encoder.width = config.model.generator.decoder.width = width;
  config.model.resnet = {width, blocks};
  config.model.discriminator.width = width;
  if (family == "cyclegan") config.loss.adversarial = atelier::models::Adversarial::LSGAN;
  torch::manual_seed(0);
  const auto whole = atelier::trainer::make_model(config, nullptr);
  torch::manual_seed(0);
  const auto accumulating = atelier::trainer::make_model(config, nullptr);
  const auto a = torch::rand({batch, 3, size, size}) * 2 - 1;
  const auto b = torch::rand({batch, 3, size, size}) * 2 - 1;
  std::vector<atelier::trainer::MicroBatch> parts;
  const auto parts_a = a.chunk(micro), parts_b = b.chunk(micro);
  for (int64_t j = 0; j < micro; ++j) parts.push_back({parts_a[j].contiguous(), parts_b[j].contiguous()});

  for (int64_t i = 0; i < warmup; ++i) {
    whole->step(a, b, 1.0);
    accumulating->step(parts, 1.0);
  }
  std::vector<double> whole_ms, micro_ms;
  for (int64_t i = 0; i < steps; ++i) {
    // Alternating which goes first keeps a slow moment from always hitting the same one.
    if (i % 2 == 0) whole_ms.push_back(milliseconds([&] { whole->step(a, b, 1.0); }));
    micro_ms.push_back(milliseconds([&] { accumulating->step(parts, 1.0); }));
    if (i % 2 == 1) whole_ms.push_back(milliseconds([&] { whole->step(a, b, 1.0); }));
  }
  const double w = median(whole_ms), m = median(micro_ms);
  std::printf("accumulation family=%s batch=%lld micro=%lld size=%lld width=%lld whole_ms=%.1f micro_ms=%.1f "
              "ratio=%.3f\n",
              family.c_str(), static_cast<long long>(batch), static_cast<long long>(micro),
              static_cast<long long>(size), static_cast<long long>(width), w, m, m / w);
  return 0;
}
