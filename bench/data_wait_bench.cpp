// Data wait: the AdaIN-GAN step fed by the in-process loader, as `atelier
// train` feeds it (on a GPU: pinned batches, non-blocking copies), against
// the same step on one batch already on the device. Rounds interleave the
// two so drift hits both; prints each round, then the median step times,
// their ratio (fed / resident: 1.0 means the loader hides completely
// behind the step) and the loader's own wait per step. Run on a CPU here
// and by scripts/gpu-check.sh on a GPU.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
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
  write_images(root / "content", 24, size * 5 / 4, 1);
  write_images(root / "style", 8, size * 5 / 4, 2);
  data::LoaderOptions options;
  options.content = data::list_images({(root / "content").string()});
  options.style = data::list_images({(root / "style").string()});
  options.augment = {size * 5 / 4, size, true};
  options.batch_size = batch;
  options.workers = workers;
  options.pin_memory = device.is_cuda();
  data::PrefetchLoader loader(options);

  trainer::Config config;
  config.model.generator.encoder.width = width;
  config.model.generator.decoder.width = width;
  config.model.discriminator.width = width;
  torch::manual_seed(0);
  const auto model = trainer::make_model(config, nullptr, device);
  const auto first = loader.next();
  const auto a = first.content.to(device), b = first.style.to(device);
  for (int i = 0; i < 2; ++i) model->step(a, b, 1.0);  // warm-up (cuDNN plans, allocator)

  std::vector<double> fed_ms, resident_ms;
  const double waited_before = loader.wait_seconds();
  for (int64_t r = 0; r < rounds; ++r) {
    for (int64_t i = 0; i < steps; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      const auto batch_now = loader.next();
      model->step(batch_now.content.to(device, /*non_blocking=*/true), batch_now.style.to(device, true), 1.0);
      sync(device);
      fed_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      t0 = std::chrono::steady_clock::now();
      model->step(a, b, 1.0);
      sync(device);
      resident_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("round %lld: fed %.2f ms, resident %.2f ms per step\n", static_cast<long long>(r + 1),
                median({fed_ms.end() - steps, fed_ms.end()}), median({resident_ms.end() - steps, resident_ms.end()}));
  }
  const double fed = median(fed_ms), resident = median(resident_ms);
  const double wait_ms = 1000 * (loader.wait_seconds() - waited_before) / static_cast<double>(rounds * steps);
  std::printf("data_wait device=%s size=%lld batch=%lld workers=%lld fed_ms=%.2f resident_ms=%.2f ratio=%.3f "
              "loader_wait_ms=%.2f pinned=%d\n",
              device.str().c_str(), static_cast<long long>(size), static_cast<long long>(batch),
              static_cast<long long>(workers), fed, resident, fed / resident, wait_ms, options.pin_memory ? 1 : 0);
  fs::remove_all(root);
  return 0;
}
