// Reducer overhead at world size 1: the AdaIN-GAN generator's and
// discriminator's backward pass with a GradientReducer over their
// parameters (gradient hooks, bucket copies, one all-reduce per bucket,
// gradients written back) against the same backward without one. At world
// size 1 nothing crosses a wire, so the ratio is what the reducer's own work
// costs a step: on a GPU with NCCL through the TCP rendezvous (as
// scripts/gpu-check.sh runs it), on a CPU with MPI as a singleton (or no
// communicator at all where the build has no MPI). Rounds interleave both.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <torch/cuda.h>

#include "comm/comm.h"
#include "trainer/adain_gan.h"

using namespace atelier;

namespace {

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

std::shared_ptr<comm::Communicator> world_of_one(const torch::Device& device, const std::string& backend) {
  comm::Environment env;
  comm::CommOptions options;
  options.device = device;
  options.backend = backend;
  options.timeout_s = 120;
  if (backend == "nccl") {  // torchrun-style variables: the rendezvous hands out NCCL's id
    env.launcher = comm::Launcher::Torchrun;
    env.master_addr = "127.0.0.1";
    env.master_port = 29000 + static_cast<int>(std::random_device{}() % 2000);
  }
  return comm::make_communicator(env, options);
}

}  // namespace

int main(int argc, char** argv) {
  std::string device_name = "cpu", backend = "auto";
  int64_t size = 128, width = 32, batch = 4, steps = 10, rounds = 3, threads = 2;
  double bucket_mb = 25;
  CLI::App app{"GradientReducer overhead at world size 1"};
  app.add_option("--device", device_name, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--backend", backend, "auto (nccl on a GPU, mpi on a CPU), mpi or nccl")->capture_default_str();
  app.add_option("--size", size, "image size")->capture_default_str();
  app.add_option("--width", width, "network width")->capture_default_str();
  app.add_option("--batch", batch, "batch size")->capture_default_str();
  app.add_option("--steps", steps, "timed backward passes per round and side")->capture_default_str();
  app.add_option("--rounds", rounds, "interleaved rounds")->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads")->capture_default_str();
  app.add_option("--bucket-mb", bucket_mb, "reducer bucket size (dist.bucket_mb)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const torch::Device device = comm::choose_device(device_name, comm::Environment{}, comm::device_facts()).device;
  torch::set_num_threads(static_cast<int>(threads));
  if (backend == "auto") backend = device.is_cuda() ? "nccl" : "mpi";
  const auto built = comm::compiled_backends();
  if (std::find(built.begin(), built.end(), backend) == built.end()) {
    std::printf("reducer backend=%s: not in this build (%zu backends built)\n", backend.c_str(), built.size());
    return 1;
  }
  const auto communicator = world_of_one(device, backend);

  trainer::Config config;
  config.model.generator.encoder.width = width;
  config.model.generator.decoder.width = width;
  config.model.discriminator.width = width;
  torch::manual_seed(0);
  trainer::AdaINGAN model(config, nullptr, device);
  std::vector<torch::Tensor> parameters = model.generator->trainable_parameters();
  for (const auto& p : model.discriminator->parameters()) parameters.push_back(p);
  comm::ReducerOptions reducer_options;
  reducer_options.bucket_mb = bucket_mb;
  comm::GradientReducer reducer(communicator, parameters, reducer_options);
  const auto content = (torch::rand({batch, 3, size, size}) * 2 - 1).to(device);
  const auto style = (torch::rand({batch, 3, size, size}) * 2 - 1).to(device);

  // One backward of both networks; the forward is outside the timing.
  const auto backward_ms = [&](bool reduce) {
    for (auto& p : parameters) p.mutable_grad() = torch::Tensor();
    const auto fake = model.generator->forward(content, style);
    const auto loss = fake.square().mean() + model.discriminator->forward(fake).mean();
    if (device.is_cuda()) torch::cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    if (reduce) reducer.prepare();
    loss.backward();
    if (reduce) reducer.finalize();
    if (device.is_cuda()) torch::cuda::synchronize();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int i = 0; i < 2; ++i) backward_ms(true), backward_ms(false);  // warm-up
  std::vector<double> with, without;
  for (int64_t r = 0; r < rounds; ++r) {
    for (int64_t i = 0; i < steps; ++i) {
      with.push_back(backward_ms(true));
      without.push_back(backward_ms(false));
    }
    std::printf("round %lld: with reducer %.2f ms, without %.2f ms per backward\n", static_cast<long long>(r + 1),
                median({with.end() - steps, with.end()}), median({without.end() - steps, without.end()}));
  }
  const double a = median(with), b = median(without);
  std::printf("reducer device=%s backend=%s buckets=%lld size=%lld batch=%lld with_ms=%.2f without_ms=%.2f "
              "ratio=%.3f\n",
              device.str().c_str(), communicator->backend().c_str(), static_cast<long long>(reducer.bucket_count()),
              static_cast<long long>(size), static_cast<long long>(batch), a, b, a / b);
  return 0;
}
