// Loading the shipped SqueezeNet 1.1 as an encoder (every file read,
// SHA-256-checked against SHA256SUMS, parsed, shape-checked and copied)
// against only reading the same files' bytes, taking turns so both see the
// same machine. Prints the medians and their ratio (verified / read).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "models/models.h"

namespace {

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

template <typename Work>
double milliseconds(Work work) {
  const auto t0 = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Reads the bytes of the files the encoder loads (all but the classifier,
// conv25): the I/O floor of a load.
size_t read_all(const std::filesystem::path& dir) {
  size_t bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir / "weights")) {
    if (entry.path().filename().string().find("conv25") != std::string::npos) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    bytes += data.size();
  }
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("SqueezeNet 1.1 load time: verified load vs reading the bytes");
  int repeats = 20;
  app.add_option("--repeats", repeats, "loads of each kind")->check(CLI::Range(3, 1000));
  CLI11_PARSE(app, argc, argv);
  const std::filesystem::path dir = atelier::models::default_squeezenet_dir();
  atelier::models::EncoderOptions options;
  options.network = "squeezenet1_1";
  options.style_layers = {"relu1", "fire2", "fire3", "fire8"};  // every feature convolution
  std::vector<double> verified, read;
  size_t bytes = 0;
  for (int i = 0; i < repeats; ++i) {
    verified.push_back(milliseconds([&] { atelier::models::Encoder encoder(options); }));
    read.push_back(milliseconds([&] { bytes = read_all(dir); }));
  }
  const double v = median(verified), r = median(read);
  std::printf("SqueezeNet 1.1 encoder (25 convs, %zu weight bytes): verified load %.2f ms, "
              "reading the bytes %.2f ms, ratio %.2f (median of %d)\n",
              bytes, v, r, v / r, repeats);
  return 0;
}
