// comm/ — how ranks find each other and average what they computed.
//
// Three pieces, as in Flashlight and Horovod: the environment (which rank am
// I, out of how many, found from mpirun, SLURM or torchrun variables), a
// Communicator that moves tensors (one backend per file: MPI here; NCCL when
// built with CUDA), and a GradientReducer that decides what to reduce and
// when (DDP's bucketed, overlapped all-reduce of gradients). comm knows
// nothing of GANs: it sees parameters and tensors.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace atelier::comm {

// A collective or bootstrap that failed; the message names the rank and the
// operation (and the peer where there is one).
struct CommError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------
// Environment

enum class Launcher { None, Mpi, Slurm, Torchrun };

// Where this process sits in the job, read once from the environment.
struct Environment {
  Launcher launcher = Launcher::None;  // who set the variables below
  int rank = 0;                        // global rank, 0 .. world_size-1
  int world_size = 1;                  // number of ranks in the job
  int local_rank = 0;                  // rank on this node (picks the GPU)
  int local_size = 0;                  // ranks on this node; 0 = the launcher did not say
  std::string master_addr;             // torchrun: rendezvous host (rank 0)
  int master_port = 0;                 // torchrun: rendezvous port
};

// Reads, in order of precedence: OpenMPI (OMPI_COMM_WORLD_RANK/SIZE/
// LOCAL_RANK), SLURM (SLURM_PROCID/NTASKS/LOCALID), torchrun (RANK/
// WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT). None: rank 0 of 1.
// Throws CommError naming a variable that is not a valid number or a rank
// outside [0, world_size).
Environment detect_environment();

// ---------------------------------------------------------------------------
// Device: which one a rank computes on

// What this build and machine offer; device_facts() reads them.
struct DeviceFacts {
  bool cuda_built = false;        // LibTorch was built with CUDA
  int cuda_devices = 0;           // GPUs it sees (after CUDA_VISIBLE_DEVICES)
  std::optional<std::string> visible_devices;  // CUDA_VISIBLE_DEVICES, when set
};
DeviceFacts device_facts();

struct DeviceChoice {
  torch::Device device{torch::kCPU};
  std::string reason;  // why, in words, for the log ("auto: no GPU visible")
};

// The device of a rank at `env` for `requested` (train.device, --device):
// "cpu"; "cuda": cuda:<local rank>, one GPU per rank on a node; "cuda:N":
// GPU N (one rank per node only); "auto": as "cuda" when a GPU is visible,
// else "cpu". A pure function of its arguments. Throws CommError naming the
// reason: an unknown value, CUDA asked of a CPU-only LibTorch, no GPU
// visible, or fewer GPUs than ranks on the node (both numbers named).
DeviceChoice choose_device(const std::string& requested, const Environment& env, const DeviceFacts& facts);

// Whether `requested` is one of the forms choose_device takes.
bool valid_device_name(const std::string& requested);

// The communication backends compiled into this build, e.g. {"mpi"}.
std::vector<std::string> compiled_backends();

// ---------------------------------------------------------------------------
// Communicator

enum class ReduceOp { Sum, Avg };  // Avg: floating-point tensors only

struct CommOptions {
  std::string backend = "auto";  // auto (nccl for a CUDA device, else mpi) | mpi | nccl
  double timeout_s = 300;        // a collective running longer aborts the job
  torch::Device device{torch::kCPU};  // where this rank's tensors live (train.device)
};

// Collectives. Every rank must call the same collectives in the same order
// with tensors of the same dtype and numel. Calls block until this rank's
// part is done, except the NCCL backend's on CUDA tensors, which are
// stream-ordered as in PyTorch: queued on the GPU, they return at once, and
// whatever LibTorch queues afterwards sees the result. Tensors are taken
// whole (contiguous ones in place; others through a contiguous copy that is
// written back).
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;
  // In place: every rank ends with the sum (or average) over all ranks.
  virtual void all_reduce(torch::Tensor& tensor, ReduceOp op) = 0;
  // In place: every rank ends with `root`'s tensor.
  virtual void broadcast(torch::Tensor& tensor, int root) = 0;
  // [world_size, ...tensor.sizes()]: every rank's tensor, in rank order.
  // Ranks whose dtype or shape differ get a CommError naming both ranks.
  virtual torch::Tensor all_gather(const torch::Tensor& tensor) = 0;
  virtual void barrier() = 0;
  // Waits until every collective this rank has issued has finished; throws
  // CommError if one failed or timed out (the NCCL backend's queued ones).
  virtual void synchronize() {}
};

// The communicator for `env`: a world of one needs no library and gets a
// local communicator (every collective is the identity) unless a backend is
// named; MPI-launched jobs get the MPI backend, or NCCL on a CUDA device
// (its unique id broadcast over MPI). Torchrun-style jobs rendezvous over
// TCP (see Rendezvous) and need NCCL. The NCCL communicator also takes CPU
// tensors (staged through the device), so control traffic needs no second
// backend. Throws CommError for an unknown or unavailable backend: nccl
// without a CUDA device, or where this build has no NCCL.
std::shared_ptr<Communicator> make_communicator(const Environment& env, const CommOptions& options);

// NCCL's bootstrap: rank 0's ncclUniqueId (its bytes) on every rank,
// broadcast over `bootstrap` when given (an MPI job), else exchanged over
// the TCP rendezvous of `env`. Needs no GPU. Throws CommError where this
// build has no NCCL, or naming the peer the exchange failed with.
std::string exchange_nccl_id(const Environment& env, Communicator* bootstrap, std::chrono::milliseconds timeout);

// Ends every rank of the job with `exit_code` when this process is one rank
// of a multi-rank MPI job; returns otherwise. For main's error path: a rank
// that fails must not leave its peers blocked in a collective (nor itself in
// MPI_Finalize waiting for them) until dist.timeout_s.
void abort_job(int exit_code) noexcept;

// The simple truth of data parallelism, kept as the test oracle for
// GradientReducer: all-reduce every gradient, then divide by the world size.
void average_gradients(Communicator& comm, const std::vector<torch::Tensor>& parameters);

// Rank 0's values of `tensors` (parameters and buffers) on every rank, so
// replicas start identical. Ranks first agree on count, shapes and dtypes.
void broadcast_from_rank0(Communicator& comm, const std::vector<torch::Tensor>& tensors);

// Every rank's `text` (of any length), in rank order: for results that
// rank 0 assembles (explanations, evaluations). Two collectives: the
// lengths, then the bytes padded to the longest.
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& text);

// CRC-32C of the bytes of `tensors`, for checking that replicas agree.
uint32_t checksum(const std::vector<torch::Tensor>& tensors);

// ---------------------------------------------------------------------------
// Rendezvous (torchrun-style bootstrap over TCP)

// Rank 0 listens on master_addr:master_port; the others connect (retrying
// until the deadline) and every rank receives every rank's blob. This is
// what exchanges a backend's bootstrap data (NCCL's unique id on GPUs).
// Throws CommError naming the peer on timeout or a broken connection.
std::vector<std::string> rendezvous_all_gather(const Environment& env, const std::string& blob,
                                               std::chrono::milliseconds timeout);

// ---------------------------------------------------------------------------
// GradientReducer

enum class Compression { None, BF16, FP16 };  // wire format of the buckets

struct ReducerOptions {
  double bucket_mb = 25;  // bucket capacity in MiB of the wire format
  Compression compression = Compression::None;
};

// One bucket's life, for traces and the overlap test. Times are steady-clock
// microseconds since the reducer was built.
struct BucketEvent {
  int64_t bucket = 0;
  int64_t ready_us = 0;     // last gradient of the bucket arrived (reduce queued)
  int64_t started_us = 0;   // the communication thread started its all-reduce
  int64_t finished_us = 0;  // the all-reduce finished (NCCL: was queued on the GPU)
};

// DDP's reducer. Parameters are grouped into buckets of bucket_mb in reverse
// registration order (backward produces the last layers' gradients first);
// a hook on every parameter copies its gradient into its bucket's flat
// buffer, and a full bucket is all-reduced at once on a communication thread
// while backward goes on. Buckets are reduced in index order on every rank,
// so ranks issue identical collective sequences. Usage per backward:
//   reducer.prepare(); loss.backward(); reducer.finalize();
// Outside prepare()..finalize() the hooks ignore gradients (a backward of
// another network's loss that flows through these parameters).
//
// Gradient accumulation (DDP's no_sync): run the backward of every
// micro-batch but the last without prepare(), so the gradients add up
// locally in .grad, then prepare(/*accumulated=*/true) before the last
// one: each hook then adds the parameter's .grad to the gradient it sees,
// and one all-reduce averages the accumulated sums.
class GradientReducer {
 public:
  // Agrees the bucket layout with every rank (CommError naming both ranks on
  // a mismatch) and registers the hooks. Parameters without requires_grad
  // are left out.
  GradientReducer(std::shared_ptr<Communicator> comm, std::vector<torch::Tensor> parameters,
                  ReducerOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // `accumulated`: the parameters' .grad holds earlier micro-batches'
  // gradients, not yet reduced, which belong in this reduction.
  void prepare(bool accumulated = false);
  // Reduces buckets whose gradients did not all arrive (an unused
  // parameter counts as a zero gradient), waits for every all-reduce, and
  // writes the averaged gradients into the parameters' .grad. Rethrows a
  // communication error. With NCCL it waits only until the all-reduces are
  // queued: the gradient copies (and the optimiser after them) wait for
  // them on the GPU, not on the host, as in DDP.
  void finalize();

  int64_t bucket_count() const;
  // Parameter indices (in the constructor's order) of each bucket.
  std::vector<std::vector<int64_t>> bucket_layout() const;
  // The buckets of the last finalize()d backward, in reduction order.
  std::vector<BucketEvent> last_events() const;
  // Microseconds (same clock as BucketEvent) of the last gradient hook of
  // the last backward: when autograd had produced every gradient.
  int64_t last_hook_us() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace atelier::comm
