// Scaling model: predicts data-parallel efficiency of the AdaIN-GAN step at
// 8 .. 1024 GPUs from a step's compute time, its gradient bytes and the link
// bandwidths, for the bucketed ring all-reduce GradientReducer performs.
//
// All-reduce of B bytes over p ranks in a ring, bus bandwidth beta, per-hop
// latency alpha (the nccl-tests model): T = 2(p-1)/p * B/beta + 2(p-1) alpha.
// Across nodes it is hierarchical, as NCCL does it: a ring inside each node
// (NVLink), then a ring across the n nodes carrying 1/g of the data per GPU.
// Efficiency = compute / step time, with and without overlapping the
// all-reduce with backward (a bucket goes while earlier layers compute).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "trainer/adain_gan.h"

namespace {

struct Links {
  double intra_gbps = 450;   // NVLink bus bandwidth inside a node, GB/s
  double inter_gbps = 50;    // per-GPU bandwidth across nodes, GB/s
  double intra_alpha_us = 2;  // per-hop latency inside a node
  double inter_alpha_us = 8;  // per-hop latency across nodes
  int gpus_per_node = 8;
};

double ring_seconds(double bytes, int ranks, double gbps, double alpha_us) {
  if (ranks < 2) return 0;
  return 2.0 * (ranks - 1) / ranks * bytes / (gbps * 1e9) + 2.0 * (ranks - 1) * alpha_us * 1e-6;
}

// One bucket of `bytes` across `gpus` GPUs.
double allreduce_seconds(double bytes, int gpus, const Links& l) {
  const int g = std::min(gpus, l.gpus_per_node);
  const int nodes = (gpus + l.gpus_per_node - 1) / l.gpus_per_node;
  return ring_seconds(bytes, g, l.intra_gbps, l.intra_alpha_us) +
         ring_seconds(bytes / g, nodes, l.inter_gbps, l.inter_alpha_us);
}

// Measured on this machine: one AdaIN-GAN step (median of `steps`) and the
// bytes of the gradients the two reducers all-reduce (decoder + D, fp32).
std::pair<double, double> measure(int64_t width, int64_t size, int64_t batch, int steps) {
  atelier::trainer::Config config;
  config.model.generator.encoder.width = config.model.generator.decoder.width = width;
  config.model.discriminator.width = width;
  torch::manual_seed(0);
  atelier::trainer::AdaINGAN gan(config);
  double bytes = 0;
  for (const auto& p : gan.generator->trainable_parameters()) bytes += static_cast<double>(p.numel()) * 4;
  for (const auto& p : gan.discriminator->parameters()) bytes += static_cast<double>(p.numel()) * 4;
  const auto content = torch::rand({batch, 3, size, size}) * 2 - 1;
  const auto style = torch::rand({batch, 3, size, size}) * 2 - 1;
  gan.step(content, style, 1.0);
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    gan.step(content, style, 1.0);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<long>(ms.size() / 2), ms.end());
  return {ms[ms.size() / 2], bytes};
}

}  // namespace

int main(int argc, char** argv) {
  Links links;
  double compute_ms = 0, grad_mb = 0, bucket_mb = 25, backward_share = 0.6;
  int64_t width = 64, size = 64, batch = 4, threads = 2;
  int steps = 3;
  CLI::App app{"Predicted ring all-reduce efficiency of data-parallel AdaIN-GAN training at 8..1024 GPUs"};
  app.add_option("--compute-ms", compute_ms, "compute time of one step per GPU (0: measure the step here)");
  app.add_option("--grad-mb", grad_mb, "gradient MB all-reduced per step (0: count the model's parameters)");
  app.add_option("--bucket-mb", bucket_mb, "GradientReducer bucket size (MiB)");
  app.add_option("--backward-share", backward_share, "share of the step that all-reduce can overlap (backward)");
  app.add_option("--intra-gbps", links.intra_gbps, "bus bandwidth inside a node (GB/s)");
  app.add_option("--inter-gbps", links.inter_gbps, "per-GPU bandwidth across nodes (GB/s)");
  app.add_option("--gpus-per-node", links.gpus_per_node, "GPUs per node");
  app.add_option("--width", width, "model width for the measurement");
  app.add_option("--size", size, "image size for the measurement");
  app.add_option("--batch", batch, "batch per GPU for the measurement");
  app.add_option("--threads", threads, "intra-op threads for the measurement");
  app.add_option("--steps", steps, "timed steps for the measurement");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(static_cast<int>(threads));
  if (compute_ms <= 0 || grad_mb <= 0) {
    const auto [ms, bytes] = measure(width, size, batch, steps);
    if (compute_ms <= 0) compute_ms = ms;
    if (grad_mb <= 0) grad_mb = bytes / 1e6;
  }
  std::printf("compute %.1f ms/step, gradients %.1f MB in %.0f MiB buckets, NVLink %.0f GB/s, inter-node %.0f GB/s, "
              "%d GPUs/node, backward share %.2f\n\n",
              compute_ms, grad_mb, bucket_mb, links.intra_gbps, links.inter_gbps, links.gpus_per_node,
              backward_share);
  std::printf("| GPUs | all-reduce ms | efficiency (no overlap) | efficiency (overlapped) |\n|---|---|---|---|\n");
  const double bucket_bytes = bucket_mb * 1024 * 1024, total = grad_mb * 1e6;
  for (int gpus = 8; gpus <= 1024; gpus *= 2) {
    double comm_s = 0;
    for (double left = total; left > 0; left -= bucket_bytes)
      comm_s += allreduce_seconds(std::min(left, bucket_bytes), gpus, links);
    const double c = compute_ms / 1e3;
    const double hidden = std::min(comm_s, backward_share * c);
    std::printf("| %d | %.2f | %.1f %% | %.1f %% |\n", gpus, comm_s * 1e3, 100 * c / (c + comm_s),
                100 * c / (c + comm_s - hidden));
  }
  return 0;
}
