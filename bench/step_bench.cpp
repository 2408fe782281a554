// C++ side of the training-step benchmarks: the trainer's own step of one
// model family (trainer/adain_gan.cpp, trainer/cycle_gan.cpp) on random
// images, timed like bench/adain_step.py and bench/cyclegan_step.py, whose
// defaults it takes for options left out. Run by bench/compare_step.sh.
// Prints one line: "cpp median_ms=<ms> steps=<n>".
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/cuda.h>

#include "comm/comm.h"
#include "trainer/gan_model.h"

namespace {

struct Options {
  int64_t width, blocks, size, batch, threads, steps, warmup;
};

// The Python benches' defaults.
Options defaults_of(const std::string& family) {
  if (family == "cyclegan") return {16, 6, 64, 1, 2, 10, 2};
  return {32, 0, 64, 4, 2, 20, 3};
}

atelier::trainer::Config config_of(const std::string& family, const Options& o) {
  atelier::trainer::Config config;
  config.model.family = family;
  config.model.generator.encoder.width = o.width;
  config.model.generator.decoder.width = o.width;
  config.model.resnet = {o.width, o.blocks};
  config.model.discriminator.width = o.width;
  if (family == "cyclegan") config.loss.adversarial = atelier::models::Adversarial::LSGAN;
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  std::string family = "adain", precision = "fp32", device_name = "cpu";
  bool channels_last = false;
  Options given{};
  CLI::App app{"training step benchmark (C++)"};
  app.add_option("--family", family, "model family")->check(CLI::IsMember({"adain", "cyclegan"}));
  app.add_option("--width", given.width, "network width (cyclegan: the paper's 64)");
  app.add_option("--blocks", given.blocks, "cyclegan: residual blocks (the paper: 6 at 128 px, 9 at 256 px)");
  app.add_option("--size", given.size, "image size");
  app.add_option("--batch", given.batch, "batch size");
  app.add_option("--threads", given.threads, "intra-op threads");
  app.add_option("--steps", given.steps, "timed steps")->check(CLI::PositiveNumber);
  app.add_option("--warmup", given.warmup, "untimed steps first");
  app.add_option("--precision", precision, "fp32, or bf16 (autocast)")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_flag("--channels-last", channels_last, "weights and images in NHWC memory order");
  app.add_option("--device", device_name, "cpu, cuda or cuda:N")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const torch::Device device =
      atelier::comm::choose_device(device_name, atelier::comm::Environment{}, atelier::comm::device_facts()).device;
  Options o = defaults_of(family);
  for (auto [name, from, to] : {std::tuple{"--width", &given.width, &o.width}, {"--blocks", &given.blocks, &o.blocks},
                                {"--size", &given.size, &o.size}, {"--batch", &given.batch, &o.batch},
                                {"--threads", &given.threads, &o.threads}, {"--steps", &given.steps, &o.steps},
                                {"--warmup", &given.warmup, &o.warmup}})
    if (app.count(name) > 0) *to = *from;

  torch::set_num_threads(static_cast<int>(o.threads));
  torch::manual_seed(0);
  auto config = config_of(family, o);
  config.train.precision = precision == "bf16" ? atelier::trainer::Precision::BF16 : atelier::trainer::Precision::FP32;
  config.train.channels_last = channels_last;
  const auto model = atelier::trainer::make_model(config, nullptr, device);
  const auto a = (torch::rand({o.batch, 3, o.size, o.size}) * 2 - 1).to(device);
  const auto b = (torch::rand({o.batch, 3, o.size, o.size}) * 2 - 1).to(device);

  for (int64_t i = 0; i < o.warmup; ++i) model->step(a, b, 1.0);
  std::vector<double> ms;
  for (int64_t i = 0; i < o.steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model->step(a, b, 1.0);  // returns losses read with .item(): the device has finished
    if (device.is_cuda()) torch::cuda::synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<long>(ms.size() / 2), ms.end());
  std::printf("cpp median_ms=%.3f steps=%lld\n", ms[ms.size() / 2], static_cast<long long>(o.steps));
  return 0;
}
