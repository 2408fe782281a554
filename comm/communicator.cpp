// The backend choice, the world-of-one communicator, and the small helpers
// built on any Communicator.
#include <boost/crc.hpp>
#include <cstring>
#include <sstream>

#include "comm/comm.h"
#ifdef ATELIER_MPI
#include "comm/mpi_communicator.h"
#endif
#ifdef ATELIER_NCCL
#include "comm/nccl_communicator.h"
#endif

namespace atelier::comm {
namespace {

// One process: every collective is the identity (the average over one rank
// is the value itself), so single-process training needs no MPI at all.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "local"; }
  void all_reduce(torch::Tensor& tensor, ReduceOp op) override {
    if (op == ReduceOp::Avg && !tensor.is_floating_point())
      throw CommError("all_reduce: average of an integer tensor is not defined");
  }
  void broadcast(torch::Tensor&, int root) override {
    if (root != 0) throw CommError("broadcast: root " + std::to_string(root) + " is not a rank of 1");
  }
  torch::Tensor all_gather(const torch::Tensor& tensor) override { return tensor.unsqueeze(0).clone(); }
  void barrier() override {}
};

}  // namespace

std::string exchange_nccl_id(const Environment& env, Communicator* bootstrap, std::chrono::milliseconds timeout) {
#ifndef ATELIER_NCCL
  (void)env, (void)bootstrap, (void)timeout;
  throw CommError("this build has no NCCL backend: build with the CUDA toolkit and NCCL present");
#else
  if (bootstrap != nullptr) {
    const auto size = static_cast<int64_t>(nccl_unique_id_bytes());
    auto bytes = torch::zeros({size}, torch::kUInt8);
    if (bootstrap->rank() == 0) {
      const auto id = nccl_unique_id();
      std::memcpy(bytes.data_ptr<uint8_t>(), id.data(), id.size());
    }
    bootstrap->broadcast(bytes, 0);
    return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(size));
  }
  return rendezvous_all_gather(env, env.rank == 0 ? nccl_unique_id() : std::string(), timeout).front();
#endif
}

namespace {

#ifdef ATELIER_NCCL
constexpr bool kNcclBuilt = true;
#else
constexpr bool kNcclBuilt = false;
#endif
#ifdef ATELIER_MPI
constexpr bool kMpiBuilt = true;
#else
constexpr bool kMpiBuilt = false;
#endif

// "(built: mpi, nccl)", for refusals that depend on what this build has.
std::string built_note() {
  std::string list;
  for (const auto& backend : compiled_backends()) list += (list.empty() ? "" : ", ") + backend;
  return "(built: " + (list.empty() ? std::string("none") : list) + ")";
}

// dist.backend and the device, checked together before any library starts.
void check_backend(const Environment& env, const CommOptions& options) {
  if (options.backend != "auto" && options.backend != "mpi" && options.backend != "nccl")
    throw CommError("dist.backend '" + options.backend + "' is not one of auto, mpi, nccl");
  if (!(options.timeout_s > 0)) throw CommError("dist.timeout_s must be positive");
  const bool cuda = options.device.is_cuda();
  if (options.backend == "nccl" && !kNcclBuilt)
    throw CommError("dist.backend nccl: this build has no NCCL backend " + built_note() +
                    "; build where the CUDA toolkit and NCCL are found");
  if (options.backend == "mpi" && !kMpiBuilt)
    throw CommError("dist.backend mpi: this build has no MPI backend " + built_note() +
                    " (configured with -DATELIER_MPI=OFF)");
  if (options.backend == "nccl" && !cuda)
    throw CommError("dist.backend nccl carries CUDA tensors, but this rank's device is " + options.device.str() +
                    " (train.device): use dist.backend mpi or auto on CPUs");
  if (options.backend == "mpi" && cuda && env.world_size > 1)
    throw CommError("dist.backend mpi carries CPU tensors, but this rank's device is " + options.device.str() +
                    ": use dist.backend nccl (or auto)");
  if (options.backend == "auto" && cuda && env.world_size > 1 && !kNcclBuilt)
    throw CommError(std::to_string(env.world_size) + " ranks on " + options.device.str() +
                    " need the NCCL backend, which this build does not have " + built_note() +
                    ": run one rank per job on the GPU, or train.device=cpu");
  const bool mpi_launched = env.launcher == Launcher::Mpi || env.launcher == Launcher::Slurm;
  if (mpi_launched && env.world_size > 1 && !kMpiBuilt)
    throw CommError("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                    " was started by mpirun or srun, but this build has no MPI backend " + built_note() +
                    ": rebuild with MPI (-DATELIER_MPI=ON), or start GPU ranks with torchrun-style variables");
}

}  // namespace

std::shared_ptr<Communicator> make_communicator(const Environment& env, const CommOptions& options) {
  check_backend(env, options);
  const bool mpi_launched = env.launcher == Launcher::Mpi || env.launcher == Launcher::Slurm;
  const bool nccl = options.backend == "nccl" || (options.backend == "auto" && options.device.is_cuda() && env.world_size > 1);
#ifdef ATELIER_NCCL
  if (nccl) {
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000));
#ifdef ATELIER_MPI
    if (mpi_launched) {
      // MPI only carries the unique id; it stays initialised until exit.
      MpiCommunicator mpi(options.timeout_s);
      return std::make_shared<NcclCommunicator>(mpi.rank(), mpi.world_size(), exchange_nccl_id(env, &mpi, timeout),
                                                options.device, options.timeout_s);
    }
#endif
    return std::make_shared<NcclCommunicator>(env.rank, env.world_size, exchange_nccl_id(env, nullptr, timeout),
                                              options.device, options.timeout_s);
  }
#else
  (void)nccl;  // check_backend refused every NCCL case
#endif
#ifdef ATELIER_MPI
  if (mpi_launched) return std::make_shared<MpiCommunicator>(options.timeout_s);
  if (options.backend == "mpi" && env.world_size == 1) return std::make_shared<MpiCommunicator>(options.timeout_s);
#else
  (void)mpi_launched;  // check_backend refused multi-rank MPI jobs; one rank needs no MPI
#endif
  if (env.world_size == 1) return std::make_shared<LocalCommunicator>();
  // torchrun-style variables without MPI: the TCP rendezvous bootstraps
  // NCCL, whose collectives need GPUs.
  throw CommError("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                  " was started with torchrun-style variables (RANK, WORLD_SIZE), which need the NCCL backend on "
                  "GPUs (" + (kNcclBuilt ? "this rank's device is " + options.device.str()
                                           : std::string("this build has no NCCL")) +
                  "): launch CPU jobs with mpirun or `atelier launch -n N`");
}

#ifndef ATELIER_MPI
void abort_job(int) noexcept {}  // without MPI a job is one process: nothing to end but this one
#endif

std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& text) {
  const auto lengths = comm.all_gather(torch::tensor({static_cast<int64_t>(text.size())}));
  const int64_t longest = lengths.max().item<int64_t>();
  if (longest == 0) return std::vector<std::string>(static_cast<size_t>(comm.world_size()));
  auto bytes = torch::zeros({longest}, torch::kUInt8);
  std::memcpy(bytes.data_ptr<uint8_t>(), text.data(), text.size());
  const auto all = comm.all_gather(bytes);
  std::vector<std::string> out;
  for (int r = 0; r < comm.world_size(); ++r)
    out.emplace_back(reinterpret_cast<const char*>(all[r].data_ptr<uint8_t>()),
                     static_cast<size_t>(lengths[r].item<int64_t>()));
  return out;
}

void average_gradients(Communicator& comm, const std::vector<torch::Tensor>& parameters) {
  for (const auto& p : parameters) {
    if (!p.requires_grad()) continue;
    auto grad = p.grad();
    if (!grad.defined()) {
      // A parameter that took no part in this rank's loss still joins the
      // collective (with zeros) so every rank issues the same sequence.
      grad = torch::zeros_like(p);
      p.mutable_grad() = grad;
    }
    comm.all_reduce(grad, ReduceOp::Avg);
  }
}

void broadcast_from_rank0(Communicator& comm, const std::vector<torch::Tensor>& tensors) {
  std::ostringstream layout;
  for (const auto& t : tensors) layout << c10::toString(t.scalar_type()) << t.sizes() << ";";
  const auto text = layout.str();
  const auto hash = torch::tensor({static_cast<int64_t>(tensors.size()),
                                   static_cast<int64_t>(std::hash<std::string>{}(text))});
  const auto all = comm.all_gather(hash);
  for (int r = 0; r < comm.world_size(); ++r)
    if (!torch::equal(all[r], all[0]))
      throw CommError("broadcast of parameters: rank " + std::to_string(r) + " has " +
                      std::to_string(all[r][0].item<int64_t>()) + " tensors with a different layout than rank 0 (" +
                      std::to_string(all[0][0].item<int64_t>()) + " tensors): the ranks build different models");
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    auto target = t;
    comm.broadcast(target, 0);
  }
}

uint32_t checksum(const std::vector<torch::Tensor>& tensors) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  for (const auto& t : tensors) {
    const auto flat = t.detach().to(torch::kCPU).contiguous();
    crc.process_bytes(flat.data_ptr(), static_cast<size_t>(flat.numel()) * flat.element_size());
  }
  return crc.checksum();
}

}  // namespace atelier::comm
