// Evaluation throughput against the training step of the same model, both
// measured in this run: `atelier evaluate`'s work (evaluate::evaluate over a
// set of random pairs: stylise, 3 encoder passes, SSIM/PSNR, per-layer style
// losses, FD and KID) in pairs/s, against trainer/adain_gan.cpp's step (one
// D and one G update) in pairs/s, interleaved round by round.
// Prints one line per round and the medians:
//   "train_ms_per_step=<ms> train_pairs_per_s=<x> eval_pairs_per_s=<y> ratio=<median of the rounds' y/x>"
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "evaluate/evaluate.h"
#include "trainer/adain_gan.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t width = 32, size = 64, batch = 4, threads = 2, steps = 3, pairs = 32, styles = 8, rounds = 3;
  CLI::App app{"evaluation throughput vs the AdaIN-GAN training step"};
  app.add_option("--width", width, "encoder/decoder/discriminator width");
  app.add_option("--size", size, "image size");
  app.add_option("--batch", batch, "training batch and evaluation batch");
  app.add_option("--threads", threads, "intra-op threads");
  app.add_option("--steps", steps, "training steps per round");
  app.add_option("--pairs", pairs, "evaluation pairs per round");
  app.add_option("--styles", styles, "distinct style images among the pairs");
  app.add_option("--rounds", rounds, "interleaved rounds (train, then evaluate)");
  CLI11_PARSE(app, argc, argv);

  torch::set_num_threads(static_cast<int>(threads));
  torch::manual_seed(0);
  atelier::trainer::Config config;
  config.model.generator.encoder.width = config.model.generator.decoder.width = width;
  config.model.discriminator.width = width;
  atelier::trainer::AdaINGAN gan(config);
  const auto content = torch::rand({batch, 3, size, size}) * 2 - 1;
  const auto style = torch::rand({batch, 3, size, size}) * 2 - 1;
  const auto eval_content = torch::rand({pairs, 3, size, size}) * 2 - 1;
  const auto style_images = torch::rand({styles, 3, size, size}) * 2 - 1;
  std::vector<int64_t> style_of_pair;
  for (int64_t i = 0; i < pairs; ++i) style_of_pair.push_back(i % styles);
  const auto eval_style = style_images.index_select(0, torch::tensor(style_of_pair, torch::kLong));
  const auto set = atelier::evaluate::slice_eval_set(eval_content, eval_style, style_of_pair, 0, 1);
  auto local = atelier::comm::make_communicator(atelier::comm::Environment{}, {});
  const atelier::evaluate::EvalOptions options{batch, "random_vgg"};

  gan.step(content, style, 1.0);  // warm-up: allocator, oneDNN primitives
  atelier::evaluate::evaluate(gan.generator, set, *local, options);
  std::vector<double> train_rates, eval_rates, ratios, step_ms;
  for (int64_t r = 0; r < rounds; ++r) {
    auto start = Clock::now();
    for (int64_t i = 0; i < steps; ++i) gan.step(content, style, 1.0);
    const double train_s = seconds_since(start);
    start = Clock::now();
    atelier::evaluate::evaluate(gan.generator, set, *local, options);
    const double eval_s = seconds_since(start);
    step_ms.push_back(1000 * train_s / static_cast<double>(steps));
    train_rates.push_back(static_cast<double>(steps * batch) / train_s);
    eval_rates.push_back(static_cast<double>(pairs) / eval_s);
    ratios.push_back(eval_rates.back() / train_rates.back());
    std::printf("round %lld: train %.2f pairs/s, eval %.2f pairs/s, ratio %.2f\n", static_cast<long long>(r),
                train_rates.back(), eval_rates.back(), ratios.back());
  }
  const double train = median(train_rates), eval = median(eval_rates);
  std::printf("width=%lld size=%lld batch=%lld pairs=%lld threads=%lld\n", static_cast<long long>(width),
              static_cast<long long>(size), static_cast<long long>(batch), static_cast<long long>(pairs),
              static_cast<long long>(threads));
  // The ratio is the median of the rounds' ratios: each round measures both
  // sides back to back, so load that comes and goes cancels within a round.
  std::printf("train_ms_per_step=%.1f train_pairs_per_s=%.2f eval_pairs_per_s=%.2f ratio=%.2f\n", median(step_ms),
              train, eval, median(ratios));
  return 0;
}
