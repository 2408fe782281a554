// Communication benchmarks, run under `mpirun -np 2` (bench/comm_bench.sh):
//   allreduce  bus bandwidth of Communicator::all_reduce against a plain
//              MPI_Allreduce on the same buffer, 1 KB .. 256 MB;
//   step       the data-parallel AdaIN-GAN step (GradientReducer for G and D)
//              against the same per-rank step with no communication.
// Both sides of each ratio run in the same job, interleaved round by round,
// so drift on a shared machine hits both. Rank 0 prints the tables.
#include <CLI/CLI.hpp>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "comm/comm.h"
#include "trainer/adain_gan.h"

namespace {

using Clock = std::chrono::steady_clock;
using atelier::comm::Communicator;

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// Seconds per call of `fn`, timed over `iterations` calls that start together
// on every rank (the barrier keeps one rank's lateness out of the other's time).
double seconds_per_call(const std::function<void()>& fn, int iterations) {
  MPI_Barrier(MPI_COMM_WORLD);
  const auto t0 = Clock::now();
  for (int i = 0; i < iterations; ++i) fn();
  double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  // The slowest rank's time is the collective's time.
  MPI_Allreduce(MPI_IN_PLACE, &elapsed, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return elapsed / iterations;
}

void bench_allreduce(Communicator& comm, int rounds, int64_t max_bytes) {
  const int n = comm.world_size();
  if (comm.rank() == 0)
    std::printf("| size | MPI_Allreduce GB/s | Communicator GB/s | ratio |\n|---|---|---|---|\n");
  for (int64_t bytes = 1024; bytes <= max_bytes; bytes *= 4) {
    auto tensor = torch::ones({bytes / 4});
    float* data = tensor.data_ptr<float>();
    const int count = static_cast<int>(tensor.numel());
    // ~64 MB of traffic per timing, at least 3 calls.
    const int iterations = static_cast<int>(std::max<int64_t>(3, std::min<int64_t>(2000, (64 << 20) / bytes)));
    std::vector<double> mpi, ours;
    for (int r = 0; r < rounds; ++r) {
      mpi.push_back(seconds_per_call(
          [&] { MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); }, iterations));
      ours.push_back(seconds_per_call([&] { comm.all_reduce(tensor, atelier::comm::ReduceOp::Sum); }, iterations));
    }
    // Bus bandwidth as nccl-tests defines it: what each link carries in a ring.
    const double bus = static_cast<double>(bytes) * 2.0 * (n - 1) / n / 1e9;
    if (comm.rank() == 0)
      std::printf("| %lld KB | %.2f | %.2f | **%.2f** |\n", static_cast<long long>(bytes / 1024), bus / median(mpi),
                  bus / median(ours), median(mpi) / median(ours));
  }
}

void bench_step(const std::shared_ptr<Communicator>& comm, int64_t width, int64_t size, int64_t batch, int rounds,
                int steps, double bucket_mb) {
  atelier::trainer::Config config;
  config.model.generator.encoder.width = config.model.generator.decoder.width = width;
  config.model.discriminator.width = width;
  config.dist.bucket_mb = bucket_mb;
  torch::manual_seed(0);
  atelier::trainer::AdaINGAN local(config);
  torch::manual_seed(0);
  atelier::trainer::AdaINGAN parallel(config, comm);
  parallel.sync_replicas();
  torch::manual_seed(comm->rank());
  const auto content = torch::rand({batch, 3, size, size}) * 2 - 1;
  const auto style = torch::rand({batch, 3, size, size}) * 2 - 1;
  local.step(content, style, 1.0);  // warm-up: allocations, oneDNN primitives
  parallel.step(content, style, 1.0);
  std::vector<double> alone, together;
  for (int r = 0; r < rounds; ++r) {
    alone.push_back(seconds_per_call([&] { local.step(content, style, 1.0); }, steps));
    together.push_back(seconds_per_call([&] { parallel.step(content, style, 1.0); }, steps));
  }
  if (comm->rank() == 0)
    std::printf("\n| ranks | size | width | batch/rank | no-comm ms | data-parallel ms | ratio |\n"
                "|---|---|---|---|---|---|---|\n| %d | %lld px | %lld | %lld | %.1f | %.1f | **%.3f** |\n",
                comm->world_size(), static_cast<long long>(size), static_cast<long long>(width),
                static_cast<long long>(batch), median(alone) * 1e3, median(together) * 1e3,
                median(together) / median(alone));
}

}  // namespace

int main(int argc, char** argv) {
  std::string what = "all";
  int rounds = 5, steps = 5;
  int64_t max_mb = 256, width = 32, size = 64, batch = 4, threads = 1;
  double bucket_mb = 25;
  CLI::App app{"comm benchmarks (run under mpirun -np 2)"};
  app.add_option("what", what, "allreduce | step | all")->check(CLI::IsMember({"allreduce", "step", "all"}));
  app.add_option("--rounds", rounds, "interleaved rounds; the median is reported");
  app.add_option("--max-mb", max_mb, "largest all-reduce buffer (MB)");
  app.add_option("--steps", steps, "training steps per round");
  app.add_option("--width", width, "network width");
  app.add_option("--size", size, "image size");
  app.add_option("--batch", batch, "images per rank");
  app.add_option("--threads", threads, "intra-op threads per rank");
  app.add_option("--bucket-mb", bucket_mb, "gradient bucket size (MiB)");
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(static_cast<int>(threads));
    const auto comm = atelier::comm::make_communicator(atelier::comm::detect_environment(), {"mpi", 600});
    if (what != "step") bench_allreduce(*comm, rounds, max_mb << 20);
    if (what != "allreduce") bench_step(comm, width, size, batch, rounds, steps, bucket_mb);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "comm_bench: %s\n", e.what());
    atelier::comm::abort_job(1);
    return 1;
  }
  return 0;
}
