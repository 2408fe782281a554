// trainer/ — the training loop: configuration structs, the AdaIN-GAN and
// CycleGAN steps,
// metrics, TensorBoard, samples and checkpoints of a run directory.
#pragma once

#include "checkpoint/checkpoint.h"
#include "comm/comm.h"
#include "data/data.h"
#include "models/models.h"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace atelier::trainer {

// ---------------------------------------------------------------------------
// Configuration: one struct per concern, filled and validated by launcher/
// from YAML; the defaults here are the documented defaults.

struct RunOptions {
  std::string name = "demo";       // run directory is <dir>/<name>
  std::string dir = "runs";        // parent of run directories
  std::string log_level = "info";  // trace|debug|info|warn|error
};

struct ModelConfig {
  std::string family = "adain";                // the model trained: adain | cyclegan
  models::GeneratorOptions generator;          // adain: encoder + decoder
  models::DiscriminatorOptions discriminator;  // PatchGAN (cyclegan: both of them)
  models::ResnetGeneratorOptions resnet;       // cyclegan: both generators
  int64_t pool_size = 50;                      // cyclegan: history pool per discriminator (per rank)
};

struct DataConfig {
  std::string source = "folder";     // folder: decode in process; service: stream from loader servers
  std::vector<std::string> content;  // folders or files of content images (service: optional, for sample grids)
  std::vector<std::string> style;    // folders or files of style images (service: optional, for sample grids)
  std::vector<std::string> servers;  // service: every loader server as host:port
  std::string token_file;            // service: file holding the job token (atelier serve-data --token-file)
  data::AugmentOptions augment;      // load_size, crop_size (= training image size), flip
  int64_t workers = 2;               // decode threads
  int64_t prefetch = 4;              // batches decoded ahead
  // Records every sample each rank trains on (global sample numbers and
  // CRC-32C of the pixels) in <run>/audit/rank-<r>.jsonl, for checking that
  // no sample is lost or repeated, across resumes too.
  bool audit = false;
};

struct LossConfig {
  models::Adversarial adversarial = models::Adversarial::BCE;
  models::StyleStatistics style_statistics = models::StyleStatistics::MeanStd;
  double adversarial_weight = 1.0;  // lambda_adv
  double content_weight = 1.0;      // lambda_c
  double style_weight = 10.0;       // lambda_s
  double tv_weight = 0.0;           // lambda_tv
  double cycle_weight = 10.0;       // cyclegan: lambda of the cycle loss, both directions
  double identity_weight = 0.5;     // cyclegan: identity loss weight, as a fraction of cycle_weight
};

enum class Schedule { Constant, Linear };

// Arithmetic of the training step's forward passes. BF16: under autocast to
// bfloat16, as torch.autocast(dtype=torch.bfloat16) (convolutions in bf16,
// losses and reductions where autocast keeps them in fp32); parameters,
// gradients, Adam and checkpoints stay fp32, and no loss scaling is needed.
// FP16: under autocast to float16 (CUDA only: CPU autocast has no float16),
// with dynamic loss scaling (train.loss_scale auto) so that small gradients
// do not flush to zero.
enum class Precision { FP32, BF16, FP16 };

// Dynamic loss scaling (trainer's LossScaler, as torch.cuda.amp.GradScaler):
// Auto turns it on for FP16 only; Dynamic on at any precision (it is how a
// CPU test exercises the overflow path); None off.
enum class LossScale { Auto, Dynamic, None };

struct OptimConfig {
  double lr_g = 2e-4;    // Adam learning rate of the generator (decoder)
  double lr_d = 2e-4;    // Adam learning rate of the discriminator
  double beta1 = 0.5;    // Adam beta1 (GAN practice, not Adam's 0.9)
  double beta2 = 0.999;  // Adam beta2
  double eps = 1e-8;     // Adam epsilon: bounds the step of parameters whose gradient is ~0
  Schedule schedule = Schedule::Constant;
  int64_t decay_start = 0;  // Linear: constant until this step, then linear to 0 at train.steps
  double grad_clip = 0.0;   // max global gradient norm per network; 0 = off
};

struct TrainOptions {
  int64_t steps = 300;       // optimisation steps (one D and one G update each)
  int64_t batch_size = 4;    // images per forward/backward pass PER RANK (a micro-batch)
  // Images per optimiser step over all ranks. 0: batch_size x world size,
  // one pass per step. Otherwise each rank accumulates the gradients of
  // global_batch / (world size x batch_size) micro-batches before one
  // all-reduce and one step, so the batch the optimiser sees stays the same
  // whatever the number of ranks (elastic resume).
  int64_t global_batch = 0;
  int64_t threads = 2;       // LibTorch intra-op threads
  std::string device = "auto";  // auto | cpu | cuda | cuda:N (comm::choose_device)
  Precision precision = Precision::FP32;  // of the step's forward passes (see Precision)
  LossScale loss_scale = LossScale::Auto;   // see LossScale
  double loss_scale_init = 65536.0;         // the first scale (2^16, GradScaler's)
  int64_t loss_scale_growth_interval = 2000;  // steps without overflow before the scale doubles
  bool channels_last = false;  // weights and batches in NHWC memory order (GPU tensor cores prefer it)
  bool tf32 = false;           // TF32 tensor-core math for fp32 convolutions and matmuls (CUDA, Ampere on)
  bool deterministic = false;  // deterministic cuDNN and algorithms: a GPU run resumes bit-identically
  uint64_t seed = 0;         // weights, data order and augmentation derive from it
  int64_t log_every = 10;    // a log line (and TensorBoard scalars) every N steps
  int64_t sample_every = 100;  // a sample grid every N steps (and at the end)
  int64_t sample_count = 4;  // (content, style) pairs in a sample grid
};

struct CheckpointOptions {
  int64_t every_steps = 100;  // a checkpoint every N steps (and at the end, and on SIGUSR1/SIGTERM)
  int64_t keep = 3;           // newest checkpoints kept; older ones are deleted
  int64_t keep_every = 0;     // also keep every step that is a multiple of this; 0 = none
  bool async = true;          // write in the background; the step pays only for copying state to memory
  checkpoint::WhenBusy when_busy = checkpoint::WhenBusy::Wait;  // a save due while one is still written
  std::string hook;           // shell command after each checkpoint ($ATELIER_CHECKPOINT, $ATELIER_STEP)
  int64_t hook_every_steps = 0;  // the hook only for steps that are multiples of this; 0 = every checkpoint
};

// Data-parallel training across ranks (mpirun, srun, `atelier launch`).
// Ignored by a single process started without a launcher.
struct DistConfig {
  std::string backend = "auto";  // auto | mpi | nccl: the Communicator backend (auto: nccl on CUDA, mpi on CPU)
  double bucket_mb = 25;         // gradient bucket size in MiB (DDP's bucket_cap_mb)
  double timeout_s = 300;        // a collective running longer aborts the whole job
  comm::Compression compression = comm::Compression::None;  // wire format of gradient buckets
  int64_t verify_every = 0;      // compare a checksum of every replica's parameters every N steps; 0 = never
};

// Evaluation on a fixed held-out set during training (evaluate/): the same
// numbers as `atelier evaluate`, logged as eval/... beside the losses. The
// pairs are spread over the ranks; images are centre crops of data.crop_size.
struct EvalConfig {
  int64_t every_steps = 0;           // evaluate every N steps (and after the last); 0 = never
  std::vector<std::string> content;  // folders or files of held-out content images
  std::vector<std::string> style;    // folders or files of held-out style images
  int64_t pairs = 0;                 // (content, style) pairs evaluated; 0 = every pair
};

struct Config {
  RunOptions run;
  ModelConfig model;
  DataConfig data;
  LossConfig loss;
  OptimConfig optim;
  TrainOptions train;
  CheckpointOptions checkpoint;
  DistConfig dist;
  EvalConfig eval;
};

// Learning-rate factor at `step` (0-based) of `total` steps.
double lr_factor(const OptimConfig& optim, int64_t step, int64_t total);

// ---------------------------------------------------------------------------
// Running

struct TrainError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TrainResult {
  std::string run_dir;        // runs/<name>
  int64_t first_step = 0;     // 0, or the step a resume started from
  int64_t last_step = 0;      // steps completed
  double loss_g = 0.0;        // generator loss of the last step
  double loss_d = 0.0;        // discriminator loss of the last step
  std::string checkpoint;     // the last checkpoint directory written
  int rank = 0;               // this process's rank; only rank 0 writes the run directory
  int stop_signal = 0;        // SIGUSR1/SIGTERM when the run stopped early on one (after its checkpoint)
  std::string sample_legend;  // the columns of the sample grids, in words
};

// Trains the configured model in <run.dir>/<run.name>, data-parallel when
// the environment says this process is one rank of many (comm/): every
// rank holds a replica, takes its slice of each global batch and averages
// gradients; only rank 0 writes the run directory. Writes config.yaml
// (the given resolved YAML), log.txt, metrics.jsonl, tb/, samples/ and
// checkpoints/. With `resume`, continues from the newest checkpoint that
// verifies (an error if there is none); without it, an existing checkpoint
// is an error so that a run is never silently overwritten. SIGUSR1 or
// SIGTERM on any rank stops every rank at the same step boundary after a
// checkpoint of that step (TrainResult::stop_signal says so).
TrainResult train(const Config& config, const std::string& resolved_yaml, bool resume);

// What `atelier --version` prints and a run's log.txt starts with, one item
// a line: atelier's version; LibTorch's, and whether it has CUDA (and how
// many GPUs it sees); the communication backends compiled in.
std::string build_info();

// Sets LibTorch's process-wide numerics from train.tf32 (cuDNN and cuBLAS
// TF32) and train.deterministic (deterministic algorithms and cuDNN, no
// cuDNN autotuning, CUBLAS_WORKSPACE_CONFIG=:4096:8 unless already set, as
// PyTorch's reproducibility notes ask). Returns them in words for the log.
// Off by default, as in PyTorch; on CPUs neither changes a result.
std::string apply_numerics(const TrainOptions& train);

}  // namespace atelier::trainer
