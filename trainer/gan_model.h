// What the training loop needs of a model family (AdaIN-GAN, CycleGAN): a
// step, replicas to keep equal, sample images, and checkpoint state.
// Private to trainer/.
#pragma once

#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "trainer/loss_scaler.h"
#include "trainer/trainer.h"

namespace atelier::trainer {

// A rank's batch of one forward and backward pass: `content` and `style`
// (CycleGAN: domains A and B), float [B, 3, S, S] in [-1, 1].
struct MicroBatch {
  torch::Tensor content;
  torch::Tensor style;
};

// Which saved per-rank state a rank of this job takes over: its own
// (rank-<rank>/) when saved_world_size equals world_size, else a share of
// every saved rank's (trainer/elastic.h).
struct RankShare {
  int saved_world_size = 1;
  int rank = 0;
  int world_size = 1;
  bool same_world() const { return saved_world_size == world_size; }
};

// The losses of one step, averaged over the batch.
struct StepLosses {
  double d = 0;  // discriminator loss (the sum over discriminators)
  double g = 0;  // total generator loss (weighted sum of the terms)
  // Every unweighted term, in display order: logged as loss_<name>.
  std::vector<std::pair<std::string, double>> terms;
  // Loss scaling (train.loss_scale), after the step: each network's scale
  // (0 when off) and the optimiser steps skipped for overflow so far.
  double loss_scale_g = 0;
  double loss_scale_d = 0;
  int64_t overflow_skips = 0;
};

class GanModel {
 public:
  virtual ~GanModel() = default;

  // Where every network, optimiser state and pooled image lives (make_model
  // puts them there); a step's batches must be on it too.
  torch::Device device() const { return device_; }
  // Moves every parameter and buffer to `device` in place (the optimisers
  // keep the same tensors), in the memory order train.channels_last asks.
  void place(torch::Device device, bool channels_last);

  // Rank 0's parameters and buffers on every rank, so replicas start equal.
  virtual void sync_replicas() = 0;
  // Every parameter and buffer that replicas must agree on.
  virtual std::vector<torch::Tensor> state_tensors() = 0;

  // One update of every network at learning rates scaled by `lr_scale`
  // from this rank's `micro` batches (at least one): each network's
  // gradients are accumulated over them, as the mean over all their
  // images, and averaged over ranks once, before its optimiser steps
  // (train.global_batch). Losses are the means over the micro-batches.
  virtual StepLosses step(const std::vector<MicroBatch>& micro, double lr_scale) = 0;
  // The same for one batch.
  StepLosses step(const torch::Tensor& content, const torch::Tensor& style, double lr_scale) {
    return step(std::vector<MicroBatch>{{content, style}}, lr_scale);
  }

  // The columns of a sample grid for these pairs, without gradients, and
  // the TensorBoard tag that names them (e.g. content | style | stylised).
  virtual std::vector<torch::Tensor> sample_columns(const torch::Tensor& content, const torch::Tensor& style) = 0;
  virtual std::string sample_tag() const = 0;
  // The columns of a sample grid in words, for people ("content | style | stylised").
  virtual std::string sample_legend() const = 0;

  // Checkpoint state, copied now: `shared` is replicated (written once, by
  // rank 0), `own` is this rank's alone (under rank-<r>/).
  virtual std::vector<checkpoint::StateFile> snapshot() = 0;
  virtual std::vector<checkpoint::StateFile> snapshot_own() { return {}; }
  // Reads them back from checkpoint `dir`: the shared state, and the
  // per-rank state that `share` says is this rank's. Returns what was
  // redistributed, in words, for rank 0's log ("" when nothing was).
  virtual std::string load(const std::filesystem::path& dir, const RankShare& share) = 0;

  // The AdaIN generator, for what only that family has (evaluation); null otherwise.
  virtual models::AdaINGenerator* adain_generator() { return nullptr; }
  // CycleGAN's generators (a2b = G_A, b2a = G_B), for evaluation; nulls otherwise.
  struct Translators {
    models::ResnetGenerator* a2b = nullptr;
    models::ResnetGenerator* b2a = nullptr;
  };
  virtual Translators cyclegan_generators() { return {}; }

 protected:
  // The networks' loss scalers, on when train.loss_scale resolves to dynamic.
  void init_loss_scaling(const TrainOptions& train);
  // After a network's backward passes and the ranks' average: unscales its
  // gradients and, unless they overflowed, clips them and steps. Returns
  // whether the optimiser stepped.
  bool finish_update(LossScaler& scaler, torch::optim::Optimizer& optimizer,
                     const std::vector<torch::Tensor>& parameters, double grad_clip);
  // The scalers' state in a checkpoint (loss_scale.json, only when on), and back.
  void add_loss_scale_state(std::vector<checkpoint::StateFile>& files) const;
  void load_loss_scale_state(const std::filesystem::path& dir);
  // Copies the scales and the skip count into a step's losses.
  StepLosses with_loss_scale(StepLosses losses) const;

  LossScaler scaler_g_;
  LossScaler scaler_d_;
  torch::Device device_{torch::kCPU};
};

// The configured family's model on `device`; weights come from the global
// torch RNG (on the CPU, so the same seed gives the same weights on every
// device), which the caller seeds. With more than one rank, gradients are
// averaged in every step (one GradientReducer per optimiser). With
// train.channels_last its 4-D weights are stored channels-last.
std::unique_ptr<GanModel> make_model(const Config& config, std::shared_ptr<comm::Communicator> comm,
                                     torch::Device device = torch::kCPU);

// Whether train.loss_scale resolves to dynamic loss scaling (Auto: fp16).
bool loss_scaling_on(const TrainOptions& train);

// train.precision over one block of forward passes: BF16 turns autocast
// of `device` (CPU or CUDA) to bfloat16 on, FP16 CUDA autocast to float16
// (TrainError on a CPU), for the guard's life (nesting,
// and dropping autocast's cast cache when the outermost guard ends, as
// torch.autocast does), FP32 does nothing. Backward passes belong outside
// it, as PyTorch recommends.
class Autocast {
 public:
  explicit Autocast(Precision precision, torch::DeviceType device = torch::kCPU);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool on_ = false;
  bool cuda_ = false;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

// Whether a CPU with these /proc/cpuinfo flags has bf16 instructions
// (avx512_bf16 or amx_bf16). Without them train.precision: bf16 runs on
// oneDNN's emulation or LibTorch's generic kernels, which may be slower
// than fp32; the run warns.
bool has_native_bf16(const std::string& cpu_flags);

// The "flags" line of /proc/cpuinfo ("" where there is none).
std::string cpu_flags();

// An image batch in the memory order train.channels_last asks for.
torch::Tensor laid_out(const TrainOptions& train, const torch::Tensor& images);

// A micro-batch's loss as its share of the step's: loss / k for k
// micro-batches, so that accumulated gradients are those of the mean over
// the whole batch. With k = 1 the loss itself (the step is unchanged).
torch::Tensor micro_batch_share(const torch::Tensor& loss, size_t micro_batches);

// Sets Adam's learning rate of every group to `lr`.
void set_adam_lr(torch::optim::Adam& optimizer, double lr);

// Adam with the configured betas and epsilon.
torch::optim::AdamOptions adam_options(double lr, const OptimConfig& optim);

// optim.grad_clip: scales the gradients of `parameters` to a global norm of
// at most `max_norm`; 0 leaves them alone.
void clip_gradients(const std::vector<torch::Tensor>& parameters, double max_norm);

// Every parameter, then every buffer, of each network in turn: what
// replicas must agree on (state_tensors).
std::vector<torch::Tensor> parameters_and_buffers(const std::vector<torch::nn::Module*>& networks);

// A copy of a module's or an Adam optimiser's state, taken now; the file's
// bytes are made on the checkpoint's writer thread (trainer/state_copy.cpp):
// torch::save's for a module; for Adam, the archive torch::load reads with
// each parameter named by its position, so the same state always gives the
// same bytes.
checkpoint::StateFile copied(const std::string& name, const torch::nn::Module& module);
checkpoint::StateFile copied(const std::string& name, const torch::optim::Adam& optimizer);

// Serialises a module or optimiser as torch::save would write it to a file.
// Tensors must be on the CPU: checkpoints are device-free.
template <typename T>
checkpoint::StateFile serialised(const std::string& name, const T& value) {
  std::ostringstream bytes;
  torch::save(value, bytes);
  return {name, bytes.str(), {}};
}

}  // namespace atelier::trainer
