// Which device a rank computes on: a pure function of the request, the
// rank's place on its node and what LibTorch sees, so that every case
// (mpirun, srun, torchrun; CUDA_VISIBLE_DEVICES; too few GPUs) is tested
// without a GPU.
#include <regex>

#include "comm/comm.h"

namespace atelier::comm {
namespace {

const std::regex kCudaIndex(R"(cuda:(0|[1-9][0-9]{0,3}))");

// "(CUDA_VISIBLE_DEVICES='2,3')" when it is set, so a restriction is seen.
std::string visible_note(const DeviceFacts& facts) {
  return facts.visible_devices ? " (CUDA_VISIBLE_DEVICES='" + *facts.visible_devices + "')" : std::string();
}

void require_gpu(const std::string& requested, const DeviceFacts& facts) {
  if (!facts.cuda_built)
    throw CommError("device " + requested +
                    ": this LibTorch build has no CUDA (a CPU-only build); use cpu, or build atelier against a CUDA "
                    "LibTorch (cmake -DCMAKE_PREFIX_PATH=<its cmake prefix>)");
  if (facts.cuda_devices < 1) throw CommError("device " + requested + ": no GPU is visible" + visible_note(facts));
}

std::string gpus(int n) { return std::to_string(n) + (n == 1 ? " GPU is" : " GPUs are"); }

DeviceChoice per_local_rank(const std::string& requested, const Environment& env, const DeviceFacts& facts) {
  if (env.local_size > facts.cuda_devices)
    throw CommError("device " + requested + ": " + std::to_string(env.local_size) +
                    " ranks run on this node but only " + gpus(facts.cuda_devices) + " visible" + visible_note(facts) +
                    "; start at most " + std::to_string(facts.cuda_devices) + " ranks per node");
  if (env.local_rank >= facts.cuda_devices)
    throw CommError("device " + requested + ": local rank " + std::to_string(env.local_rank) +
                    " needs a GPU of its own, but only " + gpus(facts.cuda_devices) + " visible" +
                    visible_note(facts));
  return {torch::Device(torch::kCUDA, static_cast<torch::DeviceIndex>(env.local_rank)),
          requested + ": cuda:" + std::to_string(env.local_rank) + " (local rank " + std::to_string(env.local_rank) +
              ", " + gpus(facts.cuda_devices) + " visible" + visible_note(facts) + ")"};
}

}  // namespace

bool valid_device_name(const std::string& requested) {
  return requested == "auto" || requested == "cpu" || requested == "cuda" || std::regex_match(requested, kCudaIndex);
}

DeviceChoice choose_device(const std::string& requested, const Environment& env, const DeviceFacts& facts) {
  if (!valid_device_name(requested))
    throw CommError("device '" + requested + "' is not one of auto, cpu, cuda, cuda:N");
  if (requested == "cpu") return {torch::Device(torch::kCPU), "cpu"};
  if (requested == "auto") {
    if (!facts.cuda_built) return {torch::Device(torch::kCPU), "auto: cpu (this LibTorch build has no CUDA)"};
    if (facts.cuda_devices < 1) return {torch::Device(torch::kCPU), "auto: cpu (no GPU visible" + visible_note(facts) + ")"};
    return per_local_rank(requested, env, facts);
  }
  require_gpu(requested, facts);
  if (requested == "cuda") return per_local_rank(requested, env, facts);
  const int index = std::stoi(requested.substr(5));
  if (env.local_size > 1 || env.local_rank > 0)
    throw CommError("device " + requested + " names one GPU, but this node runs several ranks; use cuda (one GPU "
                    "per rank, by local rank) or restrict each rank with CUDA_VISIBLE_DEVICES");
  if (index >= facts.cuda_devices)
    throw CommError("device " + requested + ": only " + gpus(facts.cuda_devices) + " visible" + visible_note(facts) +
                    " (cuda:0 .. cuda:" + std::to_string(facts.cuda_devices - 1) + ")");
  return {torch::Device(torch::kCUDA, static_cast<torch::DeviceIndex>(index)), requested};
}

std::vector<std::string> compiled_backends() {
  std::vector<std::string> backends;
#ifdef ATELIER_MPI
  backends.push_back("mpi");
#endif
#ifdef ATELIER_NCCL
  backends.push_back("nccl");
#endif
  return backends;
}

}  // namespace atelier::comm
