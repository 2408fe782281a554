// Checkpoint costs, each as a ratio against a baseline measured in the same
// run (issue 5's targets):
//   stall      the step that checkpoints (async) vs a plain step   (<= 1.2)
//   window     a block of steps with a save (until written) vs without
//   write      the coordinator writing N MiB vs dd of N MiB, fsynced (>= 0.8)
//   resume     restore + first step vs a plain step (reported)
// Prints one line per measurement: "<name> ours_ms=... base_ms=... ratio=...".
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "trainer/adain_gan.h"
#include "trainer/checkpointing.h"

namespace fs = std::filesystem;
using namespace atelier;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

void report(const char* name, double ours, double base, double ratio, const char* meaning) {
  std::printf("%-7s ours_ms=%.2f base_ms=%.2f ratio=%.3f  (%s)\n", name, ours, base, ratio, meaning);
}

struct Model {
  trainer::Config config;
  std::unique_ptr<trainer::AdaINGAN> gan;
  torch::Tensor content, style;
};

Model make_model(int64_t width, int64_t size, int64_t batch) {
  Model m;
  m.config.model.generator.encoder.width = m.config.model.generator.decoder.width = width;
  m.config.model.discriminator.width = width;
  torch::manual_seed(0);
  m.gan = std::make_unique<trainer::AdaINGAN>(m.config);
  m.content = torch::rand({batch, 3, size, size}) * 2 - 1;
  m.style = torch::rand({batch, 3, size, size}) * 2 - 1;
  return m;
}

// Blocks of `every` steps without a save and with one (on the block's first
// step), interleaved. The snapshot copies tensors in the step; serialising
// and writing run on the writer thread, on the cores training uses, so the
// steps after a save pay too: "window" times a block with a save, up to the
// save's end (finish()), against a block without one.
void bench_stall(Model& m, const fs::path& dir, int rounds, int every) {
  auto comm = comm::make_communicator(comm::detect_environment(), {});
  checkpoint::CheckpointCoordinator coordinator(dir / "stall", comm, {true, checkpoint::WhenBusy::Wait, 2, 0, "", 60});
  const trainer::RunConfigText text{"bench: 1\n", trainer::config_hash("bench: 1\n"), "random VGG"};
  std::vector<double> plain, saving, block_plain, block_saving;
  int step = 0;
  for (int r = 0; r < rounds; ++r) {
    auto block = Clock::now();
    for (int i = 0; i < every; ++i) {
      const auto t0 = Clock::now();
      m.gan->step(m.content, m.style, 1.0);
      plain.push_back(ms_since(t0));
      ++step;
    }
    block_plain.push_back(ms_since(block));
    block = Clock::now();
    for (int i = 0; i < every; ++i) {
      const auto t0 = Clock::now();
      m.gan->step(m.content, m.style, 1.0);
      ++step;
      if (i == 0) {
        coordinator.save(trainer::checkpoint_request(*m.gan, {step, {}}, {{0, 1, 0}}, text, 1.0));
        saving.push_back(ms_since(t0));
      }
    }
    coordinator.finish();
    block_saving.push_back(ms_since(block));
  }
  report("stall", median(saving), median(plain), median(saving) / median(plain),
         "step with an async save / plain step, target <= 1.2");
  report("window", median(block_saving), median(block_plain), median(block_saving) / median(block_plain),
         "steps of a block with a save, until it is written / the same block without");
}

// Virtual machines like these back guest memory lazily: the first touch of
// a page the guest has not used yet (or gave back) costs the host a fault,
// ~9 us per 4 KiB here, which made a 256 MiB write 6x slower whenever it
// drew never-used pages (strace: the write() itself, 0.6 s vs 0.05 s).
// Whoever runs first in a round gets the recycled pages. Touching 4 x N MiB
// of memory and page cache once, up front, gives dd and the coordinator
// the same recycled memory to draw from.
void warm_memory(const fs::path& dir, int64_t mib) {
  const size_t bytes = static_cast<size_t>(mib) << 20;
  for (int i = 0; i < 4; ++i) {
    std::string scratch(bytes, static_cast<char>(i));
    std::ofstream(dir / ("warm-" + std::to_string(i)), std::ios::binary).write(scratch.data(), static_cast<std::streamsize>(scratch.size()));
  }
  for (int i = 0; i < 4; ++i) fs::remove(dir / ("warm-" + std::to_string(i)));
}

// N MiB through the coordinator (one rank, inline write) against dd.
void bench_write(const fs::path& dir, int64_t mib, int rounds) {
  auto comm = comm::make_communicator(comm::detect_environment(), {});
  checkpoint::CheckpointCoordinator coordinator(dir / "write", comm, {false, checkpoint::WhenBusy::Wait, 1, 0, "", 60});
  std::string payload(static_cast<size_t>(mib) << 20, '\0');
  std::mt19937_64 rng(1);
  for (size_t i = 0; i + 8 <= payload.size(); i += 8) *reinterpret_cast<uint64_t*>(&payload[i]) = rng();
  warm_memory(dir, mib);
  std::vector<double> ours, with_cleanup, dd;
  const auto dd_file = dir / "dd.bin";
  const std::string dd_cmd = "dd if=/dev/zero of=" + dd_file.string() + " bs=1M count=" + std::to_string(mib) +
                             " conv=fsync status=none";
  for (int r = 0; r < rounds; ++r) {
    auto t0 = Clock::now();
    if (std::system(dd_cmd.c_str()) != 0) throw std::runtime_error("dd failed");
    dd.push_back(ms_since(t0));
    fs::remove(dd_file);
    checkpoint::SaveRequest request;
    request.info = {r + 1, 0, 1, "bench"};
    request.shared = {{"payload.bin", payload, {}}};
    t0 = Clock::now();
    coordinator.save(std::move(request));
    const auto outcome = coordinator.finish();
    if (!outcome->committed) throw std::runtime_error("checkpoint failed");
    with_cleanup.push_back(ms_since(t0));
    ours.push_back(outcome->seconds * 1000);
  }
  report("write", median(ours), median(dd), median(dd) / median(ours),
         "dd time / time until the checkpoint is committed = relative throughput, target >= 0.8");
  report("write+", median(with_cleanup), median(dd), median(dd) / median(with_cleanup),
         "the same until finish() returns: + deleting the previous checkpoint, freeing the buffers");
}

// A fresh process's view: build the model, restore, take the first step.
void bench_resume(Model& m, const fs::path& dir, int rounds) {
  const auto ckpt = checkpoint::latest(dir / "stall");
  if (!ckpt) throw std::runtime_error("no checkpoint to resume from");
  std::vector<double> resume, plain;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = Clock::now();
    m.gan->step(m.content, m.style, 1.0);
    plain.push_back(ms_since(t0));
    t0 = Clock::now();
    trainer::AdaINGAN fresh(m.config);
    trainer::restore_checkpoint(*ckpt, fresh, 0, 1, trainer::config_hash("bench: 1\n"), 0);
    fresh.step(m.content, m.style, 1.0);
    resume.push_back(ms_since(t0));
  }
  report("resume", median(resume), median(plain), median(resume) / median(plain), "build + restore + first step / plain step");
}

}  // namespace

int main(int argc, char** argv) {
  int64_t width = 32, size = 64, batch = 4, threads = 2, mib = 256;
  int rounds = 5, every = 3;
  std::string dir = "bench-checkpoints";
  CLI::App app{"Checkpoint stall, write throughput and resume time"};
  app.add_option("--width", width, "network width (32 = the demo)");
  app.add_option("--size", size, "image size");
  app.add_option("--batch", batch, "batch size");
  app.add_option("--threads", threads, "intra-op threads");
  app.add_option("--mib", mib, "MiB written by the write benchmark");
  app.add_option("--rounds", rounds, "measurements per benchmark (median reported)");
  app.add_option("--every", every, "stall: a checkpoint every N steps");
  app.add_option("--dir", dir, "scratch directory on the filesystem to measure");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(static_cast<int>(threads));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto model = make_model(width, size, batch);
  for (int i = 0; i < 2; ++i) model.gan->step(model.content, model.style, 1.0);  // warm-up
  bench_stall(model, dir, rounds, every);
  bench_resume(model, dir, rounds);
  bench_write(dir, mib, rounds);
  fs::remove_all(dir);
  return 0;
}
