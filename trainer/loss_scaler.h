// trainer/loss_scaler.h — dynamic loss scaling, as torch.cuda.amp.GradScaler
// does it. Private to trainer/.
//
// fp16 holds numbers down to ~6e-8: small gradients of a loss computed in
// fp16 flush to zero. The loss is multiplied by a large scale before its
// backward pass and the gradients divided by it before the optimiser sees
// them. A step whose gradients overflowed (inf or NaN anywhere) is skipped
// and the scale halved; after `growth_interval` steps without overflow the
// scale doubles. Gradients are checked after the ranks' average, so every
// replica skips the same steps (an inf on one rank is an inf in the sum).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace atelier::trainer {

struct LossScaleOptions {
  double init = 65536.0;          // 2^16, GradScaler's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;  // steps without overflow before the scale grows
};

class LossScaler {
 public:
  LossScaler() = default;  // disabled: scale() and unscale() change nothing
  explicit LossScaler(LossScaleOptions options);

  bool enabled() const { return enabled_; }
  // The loss to call backward() on.
  torch::Tensor scale(const torch::Tensor& loss) const;
  // Divides every defined gradient of `parameters` by the scale in place;
  // true when all of them are finite (the step may be taken).
  bool unscale(const std::vector<torch::Tensor>& parameters) const;
  // After the step: back off on an overflow, count towards growth otherwise.
  void update(bool overflowed);

  double value() const { return scale_; }
  int64_t growth_tracker() const { return tracker_; }
  int64_t skipped() const { return skipped_; }  // steps skipped for overflow so far

  // The state a checkpoint keeps (JSON), and back; read() checks what it reads
  // and throws std::runtime_error naming the problem.
  std::string write() const;
  void read(const std::string& json);

 private:
  bool enabled_ = false;
  LossScaleOptions options_;
  double scale_ = 1.0;
  int64_t tracker_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace atelier::trainer
