// Loader benchmark: images/s of the loader service (one LoaderServer with N
// workers, a ServiceLoader over loopback, both in this process) against the
// in-process folder loader (PrefetchLoader with N workers), on the same
// JPEG photographs, same batches, same cores, interleaved rounds.
// Prints one line per round and the median ratio service / folder.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <unistd.h>
#include <vector>

#include "data/data.h"

namespace fs = std::filesystem;
using namespace atelier;

namespace {

double images_per_second(data::BatchSource& source, int64_t batches, int64_t batch_size) {
  source.next();  // warm-up: the first batch pays for start-up
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < batches; ++i) source.next();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(batches * batch_size) / s;
}

// The photographs (JPEG only, like the usual pipeline's input) copied to
// root/images and sharded into root/shards; returns how many.
int64_t copy_and_shard(const fs::path& images, const fs::path& root) {
  fs::create_directories(root / "images");
  int64_t count = 0;
  for (const auto& entry : fs::directory_iterator(images))
    if (entry.path().extension() == ".jpg" && fs::file_size(entry.path()) > 0) {
      fs::copy_file(entry.path(), root / "images" / entry.path().filename());
      ++count;
    }
  data::write_shards({(root / "images").string(), (root / "shards").string(), int64_t{64} << 20});
  return count;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string images = "/usr/share/doc/opencv-doc/examples/data";
  int64_t crop = 256, load = 256, batch = 8, batches = 12, workers = 2, rounds = 3, prefetch = 4;
  CLI::App app{"Loader service vs in-process loader (images/s)"};
  app.add_option("--images", images, "folder of JPEG photographs (top level only)")->capture_default_str();
  app.add_option("--crop", crop, "training crop size")->capture_default_str();
  app.add_option("--load", load, "shorter side after resizing")->capture_default_str();
  app.add_option("--batch", batch, "batch size")->capture_default_str();
  app.add_option("--batches", batches, "timed batches per measurement")->capture_default_str();
  app.add_option("--workers", workers, "decode threads, both loaders")->capture_default_str();
  app.add_option("--prefetch", prefetch, "batches ahead, both loaders")->capture_default_str();
  app.add_option("--rounds", rounds, "interleaved rounds")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const fs::path root = fs::temp_directory_path() / ("atelier-loader-bench-" + std::to_string(::getpid()));
  const int64_t count = copy_and_shard(images, root);

  data::LoaderOptions folder;
  folder.content = folder.style = data::list_images({(root / "images").string()});
  folder.augment = {load, crop, true};
  folder.batch_size = batch;
  folder.workers = workers;
  folder.prefetch = prefetch;

  data::ServerOptions server_options;
  server_options.content = server_options.style = (root / "shards").string();
  server_options.host = "127.0.0.1";
  server_options.token = "bench-token";
  server_options.workers = workers;
  server_options.queue_batches = prefetch;
  data::LoaderServer server(server_options);

  data::ServiceOptions service;
  service.servers = {"127.0.0.1:" + std::to_string(server.port())};
  service.token = server_options.token;
  service.augment = folder.augment;
  service.batch_size = batch;
  service.prefetch = prefetch;

  std::printf("%lld JPEGs, crop %lld (load %lld), batch %lld, %lld workers, content+style per sample\n",
              static_cast<long long>(count), static_cast<long long>(crop), static_cast<long long>(load),
              static_cast<long long>(batch), static_cast<long long>(workers));
  std::vector<double> ratios, folder_rates, service_rates;
  for (int64_t r = 0; r < rounds; ++r) {
    double f = 0, s = 0;
    {
      data::PrefetchLoader loader(folder);
      f = images_per_second(loader, batches, batch);
    }
    {
      data::ServiceLoader loader(service);
      s = images_per_second(loader, batches, batch);
    }
    folder_rates.push_back(f);
    service_rates.push_back(s);
    ratios.push_back(s / f);
    std::printf("round %lld: folder %.1f images/s, service %.1f images/s, ratio %.2f\n", static_cast<long long>(r),
                f, s, s / f);
  }
  std::printf("median: folder %.1f images/s, service %.1f images/s, ratio service/folder %.2f\n",
              median(folder_rates), median(service_rates), median(ratios));
  server.stop();
  fs::remove_all(root);
  return 0;
}
