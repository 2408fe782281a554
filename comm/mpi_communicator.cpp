// The MPI backend (OpenMPI on CPU tensors). Every MPI call is wrapped in
// MPI_CHECK, every collective runs under the watchdog's deadline.
#include "comm/mpi_communicator.h"

#include <mpi.h>
#include <spdlog/spdlog.h>

#include <climits>
#include <cstdio>
#include <sstream>

#include "comm/watchdog.h"

// Errors return (MPI_ERRORS_RETURN is set on the world) and become a
// CommError with file, line and MPI's own message.
#define MPI_CHECK(call)                                                                        \
  do {                                                                                         \
    const int mpi_check_code = (call);                                                         \
    if (mpi_check_code != MPI_SUCCESS) ::atelier::comm::mpi_fail(mpi_check_code, #call, __FILE__, __LINE__); \
  } while (0)

namespace atelier::comm {

[[noreturn]] void mpi_fail(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::ostringstream msg;
  msg << "rank " << rank << ": " << call << " failed at " << file << ":" << line << ": "
      << std::string(text, static_cast<size_t>(length));
  throw CommError(msg.str());
}

namespace {

// Sums 16-bit floats, which MPI has no type for: the buffers travel as
// contiguous pairs of bytes and this op adds them as T (c10::BFloat16/Half).
template <typename T>
void sum_16bit(void* in, void* inout, int* count, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *count; ++i) b[i] = static_cast<T>(static_cast<float>(a[i]) + static_cast<float>(b[i]));
}

// MPI_Init and MPI_Finalize happen once per process; finalising at exit
// (after every communicator is gone) is what keeps mpirun from reporting a
// rank that "exited without calling finalize".
struct MpiRuntime {
  MpiRuntime() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // The reducer's communication thread and the training thread both
      // issue collectives (never at once: the communicator serialises them).
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      owned = true;
      if (provided < MPI_THREAD_SERIALIZED)
        throw CommError("MPI provides thread level " + std::to_string(provided) +
                        ", atelier needs at least MPI_THREAD_SERIALIZED");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &half_type));
    MPI_CHECK(MPI_Type_commit(&half_type));
    MPI_CHECK(MPI_Op_create(&sum_16bit<c10::BFloat16>, 1, &sum_bf16));
    MPI_CHECK(MPI_Op_create(&sum_16bit<c10::Half>, 1, &sum_fp16));
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned && !finalized) MPI_Finalize();
  }
  bool owned = false;
  MPI_Datatype half_type = MPI_DATATYPE_NULL;
  MPI_Op sum_bf16 = MPI_OP_NULL;
  MPI_Op sum_fp16 = MPI_OP_NULL;
};

MpiRuntime& runtime() {
  static MpiRuntime instance;
  return instance;
}

MPI_Datatype datatype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kShort: return MPI_INT16_T;
    case at::kChar: return MPI_INT8_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kBool: return MPI_C_BOOL;
    case at::kBFloat16:
    case at::kHalf: return runtime().half_type;
    default: throw CommError(std::string("MPI backend: unsupported dtype ") + c10::toString(type));
  }
}

MPI_Op sum_op(at::ScalarType type) {
  if (type == at::kBFloat16) return runtime().sum_bf16;
  if (type == at::kHalf) return runtime().sum_fp16;
  if (type == at::kBool) throw CommError("MPI backend: all_reduce of bool tensors is not defined");
  return MPI_SUM;
}

// MPI counts are int: larger tensors go in chunks.
constexpr int64_t kMaxChunk = INT_MAX / 2;

std::string describe(const torch::Tensor& t) {
  std::ostringstream out;
  out << c10::toString(t.scalar_type()) << " " << t.sizes();
  return out.str();
}

}  // namespace

MpiCommunicator::MpiCommunicator(double timeout_s) {
  runtime();
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
  // A collective past its deadline means a peer died or hangs: abort the
  // whole job (every rank, through mpirun) rather than wait forever.
  watchdog_ = std::make_unique<Watchdog>(timeout_s, [rank = rank_](const std::string& operation, double waited) {
    spdlog::error("rank {}: collective {} did not finish within dist.timeout_s ({:.1f} s): a peer rank died or "
                  "hangs; aborting the job",
                  rank, operation, waited);
    std::fflush(nullptr);
    MPI_Abort(MPI_COMM_WORLD, 3);
  });
}

MpiCommunicator::~MpiCommunicator() = default;

void MpiCommunicator::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  check_cpu(tensor, "all_reduce");
  if (op == ReduceOp::Avg && !tensor.is_floating_point())
    throw CommError("all_reduce: average of " + describe(tensor) + " (integer) is not defined");
  auto flat = tensor.is_contiguous() ? tensor : tensor.contiguous();
  const auto type = datatype(flat.scalar_type());
  const auto mpi_op = sum_op(flat.scalar_type());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto deadline = watchdog_->watch("all_reduce " + describe(tensor));
    char* data = static_cast<char*>(flat.data_ptr());
    for (int64_t done = 0; done < flat.numel();) {
      const int n = static_cast<int>(std::min(kMaxChunk, flat.numel() - done));
      MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + done * flat.element_size(), n, type, mpi_op, MPI_COMM_WORLD));
      done += n;
    }
  }
  if (op == ReduceOp::Avg) flat.div_(world_size_);
  if (!flat.is_same(tensor)) tensor.copy_(flat);
}

void MpiCommunicator::broadcast(torch::Tensor& tensor, int root) {
  check_cpu(tensor, "broadcast");
  if (root < 0 || root >= world_size_)
    throw CommError("broadcast: root " + std::to_string(root) + " is not a rank of " + std::to_string(world_size_));
  auto flat = tensor.is_contiguous() ? tensor : tensor.contiguous();
  const auto type = datatype(flat.scalar_type());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto deadline = watchdog_->watch("broadcast " + describe(tensor));
    char* data = static_cast<char*>(flat.data_ptr());
    for (int64_t done = 0; done < flat.numel();) {
      const int n = static_cast<int>(std::min(kMaxChunk, flat.numel() - done));
      MPI_CHECK(MPI_Bcast(data + done * flat.element_size(), n, type, root, MPI_COMM_WORLD));
      done += n;
    }
  }
  if (!flat.is_same(tensor)) tensor.copy_(flat);
}

// Ranks first exchange (dtype, rank of tensor, sizes) so that a mismatch is
// an error naming both ranks instead of a buffer overrun or a hang.
torch::Tensor MpiCommunicator::all_gather(const torch::Tensor& tensor) {
  check_cpu(tensor, "all_gather");
  constexpr int kMeta = 10;
  if (tensor.dim() > kMeta - 2) throw CommError("all_gather: tensors of more than 8 dimensions are not supported");
  std::vector<int64_t> meta(kMeta, -1);
  meta[0] = static_cast<int64_t>(tensor.scalar_type());
  meta[1] = tensor.dim();
  for (int64_t d = 0; d < tensor.dim(); ++d) meta[d + 2] = tensor.size(d);
  std::vector<int64_t> all(static_cast<size_t>(kMeta * world_size_));
  const auto flat = tensor.contiguous();
  std::vector<int64_t> out_sizes{world_size_};
  out_sizes.insert(out_sizes.end(), tensor.sizes().begin(), tensor.sizes().end());
  auto out = torch::empty(out_sizes, tensor.options());
  std::lock_guard<std::mutex> lock(mutex_);
  const auto deadline = watchdog_->watch("all_gather " + describe(tensor));
  MPI_CHECK(MPI_Allgather(meta.data(), kMeta, MPI_INT64_T, all.data(), kMeta, MPI_INT64_T, MPI_COMM_WORLD));
  for (int r = 0; r < world_size_; ++r) {
    if (!std::equal(meta.begin(), meta.end(), all.begin() + r * kMeta)) {
      std::ostringstream msg;
      msg << "all_gather: rank " << rank_ << " has " << describe(tensor) << " but rank " << r << " has "
          << c10::toString(static_cast<at::ScalarType>(all[r * kMeta])) << " with "
          << all[r * kMeta + 1] << " dimensions [";
      for (int64_t d = 0; d < all[r * kMeta + 1] && d < kMeta - 2; ++d) msg << (d ? ", " : "") << all[r * kMeta + 2 + d];
      msg << "]";
      throw CommError(msg.str());
    }
  }
  if (flat.numel() == 0) return out;
  if (flat.numel() > kMaxChunk) throw CommError("all_gather: " + describe(tensor) + " is too large for one call");
  const auto type = datatype(flat.scalar_type());
  const int n = static_cast<int>(flat.numel());
  MPI_CHECK(MPI_Allgather(flat.data_ptr(), n, type, out.data_ptr(), n, type, MPI_COMM_WORLD));
  return out;
}

void MpiCommunicator::barrier() {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto deadline = watchdog_->watch("barrier");
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
}

void abort_job(int exit_code) noexcept {
  int initialized = 0, finalized = 0, size = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size < 2) return;
  std::fflush(nullptr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
}

void MpiCommunicator::check_cpu(const torch::Tensor& tensor, const char* operation) const {
  if (!tensor.defined()) throw CommError(std::string(operation) + ": undefined tensor");
  if (!tensor.device().is_cpu())
    throw CommError(std::string(operation) + ": the MPI backend takes CPU tensors, got one on " +
                    tensor.device().str());
}

}  // namespace atelier::comm
