// Evaluation during training: the held-out set of eval.content x eval.style,
// measured by evaluate/ every eval.every_steps and logged as eval/... keys to
// metrics.jsonl, TensorBoard and the log. Private to trainer/.
#pragma once

#include <memory>

#include "trainer/gan_model.h"
#include "trainer/trainer.h"

namespace atelier::trainer {

class EventWriter;
class MetricsLog;

class HeldOutEvaluation {
 public:
  // Decodes this rank's share of the held-out pairs once, so a bad folder or
  // image stops the run before its first step. Does nothing when
  // eval.every_steps is 0. Throws TrainError naming the eval.* key.
  // `device`: where CycleGAN's loss network goes (the generators measured are the model's own).
  HeldOutEvaluation(const Config& config, const comm::Communicator& comm, torch::Device device = torch::kCPU);
  ~HeldOutEvaluation();

  // Every rank calls this after every step; at the due steps (multiples of
  // eval.every_steps, and `total`) all ranks evaluate together. Rank 0
  // passes its writers and logs the result; the others pass nullptr.
  void after_step(int64_t step, int64_t total, GanModel& gan, comm::Communicator& comm, MetricsLog* metrics,
                  EventWriter* events);

 private:
  struct State;
  std::unique_ptr<State> state_;  // null when evaluation is off
};

}  // namespace atelier::trainer
