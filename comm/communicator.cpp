// The backend choice, the world-of-one communicator, and the small helpers
// built on any Communicator.
#include <boost/crc.hpp>
#include <cstring>
#include <sstream>

#include "comm/comm.h"
#include "comm/mpi_communicator.h"

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

std::shared_ptr<Communicator> make_communicator(const Environment& env, const CommOptions& options) {
  if (options.backend != "auto" && options.backend != "mpi")
    throw CommError("dist.backend '" + options.backend + "' is not built (built: auto, mpi)");
  if (!(options.timeout_s > 0)) throw CommError("dist.timeout_s must be positive");
  if (env.launcher == Launcher::Mpi || env.launcher == Launcher::Slurm)
    return std::make_shared<MpiCommunicator>(options.timeout_s);
  if (options.backend == "mpi" && env.world_size == 1) return std::make_shared<MpiCommunicator>(options.timeout_s);
  if (env.world_size == 1) return std::make_shared<LocalCommunicator>();
  // torchrun-style variables without MPI: the TCP rendezvous bootstraps NCCL,
  // which exists only in CUDA builds.
  throw CommError("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                  " was started with torchrun-style variables (RANK, WORLD_SIZE) but this build has no NCCL "
                  "backend (LibTorch without CUDA): launch CPU jobs with mpirun or `atelier launch -n N`");
}

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
