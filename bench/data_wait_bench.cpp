// Data wait: the AdaIN-GAN step fed by the in-process loader against the
// same step on one batch already on the device. "fed": each batch copied
// when the step takes it (pinned, non-blocking); on a GPU also "ahead": as
// `atelier train` feeds it, through DeviceBatches, the next batch copied on
// a stream of its own while the step runs. Rounds interleave blocks of each
// side so drift hits all; prints each round, then the median step times, their
// ratios to resident (1.0: the loader hides completely behind the step) and
// the loaders' own wait per step. Run on a CPU here and by
// scripts/gpu-check.sh on a GPU.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <torch/cuda.h>
#include <unistd.h>

#include "comm/comm.h"
#include "data/data.h"
#include "trainer/gan_model.h"

namespace fs = std::filesystem;
using namespace atelier;

namespace {

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// `count` noise JPEGs of side x side under dir (photographs need no network here).
void write_images(const fs::path& dir, int count, int64_t side, int seed) {
  fs::create_directories(dir);
  torch::manual_seed(seed);
  for (int i = 0; i < count; ++i) {
    const auto pixels = (torch::rand({side, side, 3}) * 255).to(torch::kUInt8);
    data::write_image_file((dir / ("image-" + std::to_string(i) + ".jpg")).string(), pixels);
  }
}

// Noise images under root and the loader options that read them.
data::LoaderOptions loader_options(const fs::path& root, int64_t size, int64_t batch, int64_t workers, bool pin) {
  write_images(root / "content", 24, size * 5 / 4, 1);
  write_images(root / "style", 8, size * 5 / 4, 2);
  data::LoaderOptions options;
  options.content = data::list_images({(root / "content").string()});
  options.style = data::list_images({(root / "style").string()});
  options.augment = {size * 5 / 4, size, true};
  options.batch_size = batch;
  options.workers = workers;
  options.pin_memory = pin;
  return options;
}

void sync(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

}  // namespace

int main(int argc, char** argv) {
  std::string device_name = "cpu";
  int64_t size = 128, width = 32, batch = 4, steps = 10, rounds = 3, workers = 2, threads = 2;
  CLI::App app{"AdaIN-GAN step fed by the loader vs on a resident batch"};
  app.add_option("--device", device_name, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--size", size, "crop size (images are 5/4 of it)")->capture_default_str();
  app.add_option("--width", width, "network width")->capture_default_str();
  app.add_option("--batch", batch, "batch size")->capture_default_str();
  app.add_option("--steps", steps, "timed steps per round and side")->capture_default_str();
  app.add_option("--rounds", rounds, "interleaved rounds")->capture_default_str();
  app.add_option("--workers", workers, "loader decode threads")->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const torch::Device device =
      comm::choose_device(device_name, comm::Environment{}, comm::device_facts()).device;
  torch::set_num_threads(static_cast<int>(threads));

  const auto root = fs::temp_directory_path() / ("atelier-bench-data-wait-" + std::to_string(getpid()));
  const auto options = loader_options(root, size, batch, workers, device.is_cuda());
  data::PrefetchLoader loader(options);
  std::unique_ptr<data::BatchSource> ahead;
  if (device.is_cuda() && data::device_copies_built())
    ahead = std::make_unique<data::DeviceBatches>(std::make_unique<data::PrefetchLoader>(options), device);

  trainer::Config config;
  config.model.generator.encoder.width = width;
  config.model.generator.decoder.width = width;
  config.model.discriminator.width = width;
  torch::manual_seed(0);
  const auto model = trainer::make_model(config, nullptr, device);
  const auto first = loader.next();
  const auto a = first.content.to(device), b = first.style.to(device);
  for (int i = 0; i < 2; ++i) model->step(a, b, 1.0);  // warm-up (cuDNN plans, allocator)

  std::vector<double> fed_ms, ahead_ms, resident_ms;
  const double waited_before = loader.wait_seconds();
  if (ahead) ahead->next();  // its thread and stream started
  const double ahead_waited_before = ahead ? ahead->wait_seconds() : 0;
  // Each side takes `steps` consecutive steps a round, so its loader has one
  // step's time to get ahead, as in training.
  const auto block = [&](std::vector<double>& out, const std::function<void()>& step) {
    for (int64_t i = 0; i < steps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      step();
      sync(device);
      out.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  };
  for (int64_t r = 0; r < rounds; ++r) {
    block(fed_ms, [&] {
      const auto batch_now = loader.next();
      model->step(batch_now.content.to(device, /*non_blocking=*/true), batch_now.style.to(device, true), 1.0);
    });
    if (ahead)
      block(ahead_ms, [&] {
        const auto copied = ahead->next();
        model->step(copied.content, copied.style, 1.0);
      });
    block(resident_ms, [&] { model->step(a, b, 1.0); });
    std::printf("round %lld: fed %.2f ms, resident %.2f ms", static_cast<long long>(r + 1),
                median({fed_ms.end() - steps, fed_ms.end()}), median({resident_ms.end() - steps, resident_ms.end()}));
    if (ahead) std::printf(", ahead %.2f ms", median({ahead_ms.end() - steps, ahead_ms.end()}));
    std::printf(" per step\n");
  }
  const double fed = median(fed_ms), resident = median(resident_ms);
  const auto n = static_cast<double>(rounds * steps);
  const double wait_ms = 1000 * (loader.wait_seconds() - waited_before) / n;
  std::printf("data_wait device=%s size=%lld batch=%lld workers=%lld fed_ms=%.2f resident_ms=%.2f ratio=%.3f "
              "loader_wait_ms=%.2f pinned=%d",
              device.str().c_str(), static_cast<long long>(size), static_cast<long long>(batch),
              static_cast<long long>(workers), fed, resident, fed / resident, wait_ms, options.pin_memory ? 1 : 0);
  if (ahead)
    std::printf(" ahead_ms=%.2f ahead_ratio=%.3f ahead_wait_ms=%.2f", median(ahead_ms), median(ahead_ms) / resident,
                1000 * (ahead->wait_seconds() - ahead_waited_before) / n);
  std::printf("\n");
  fs::remove_all(root);
  return 0;
}
