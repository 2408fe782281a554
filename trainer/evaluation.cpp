// Evaluation during training (see evaluation.h).
#include "trainer/evaluation.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <iomanip>
#include <map>
#include <sstream>

#include "evaluate/evaluate.h"
#include "trainer/event_file.h"
#include "trainer/run_files.h"

namespace atelier::trainer {

struct HeldOutEvaluation::State {
  int64_t every_steps = 0;        // eval.every_steps
  evaluate::EvalSet set;          // this rank's share of the pairs
  evaluate::EvalOptions options;  // batch, and which distance the encoder gives
  // CycleGAN's loss network (its generators have no encoder): the configured
  // VGG (model.vgg_weights, else the fixed random one), which `atelier
  // evaluate` uses for a cyclegan checkpoint when given the same
  // --vgg-weights (without, the random one).
  models::Encoder loss_network{nullptr};
};

namespace {

// One log line: the headline numbers; every number goes to metrics.jsonl.
std::string summary(const evaluate::EvalResult& r, double seconds) {
  std::ostringstream line;
  line << std::setprecision(4) << "eval (" << r.pairs << " pairs): SSIM " << evaluate::metric(r, "ssim_rgb")
       << " | PSNR " << evaluate::metric(r, "psnr_rgb") << " dB";
  for (const auto& m : r.metrics) {
    if (m.key == "content_loss") line << " | content " << m.value;
    if (m.key == "cycle_l1_a" || m.key == "cycle_l1_b") line << " | " << m.key << " " << m.value;
    if (m.group == "distribution") line << " | " << m.label << " " << m.value;
  }
  if (!r.distances_skipped.empty()) line << " | no " << r.distance_name << ": " << r.distances_skipped;
  line << " | " << std::fixed << std::setprecision(1) << seconds << " s";
  return line.str();
}

}  // namespace

HeldOutEvaluation::HeldOutEvaluation(const Config& config, const comm::Communicator& comm, torch::Device device) {
  if (config.eval.every_steps <= 0) return;
  if (config.eval.content.empty() || config.eval.style.empty())
    throw TrainError("eval.every_steps is " + std::to_string(config.eval.every_steps) +
                     " but eval.content or eval.style is empty: set both to held-out folders or files");
  state_ = std::make_unique<State>();
  // Built from its own seed: the global generator (and so training) is untouched.
  if (config.model.family == "cyclegan") {
    state_->loss_network = models::Encoder(config.model.generator.encoder);
    state_->loss_network->to(device);
  }
  state_->every_steps = config.eval.every_steps;
  state_->options.batch = config.train.batch_size;
  state_->options.loss_network = evaluate::loss_network_key(config.model.generator.encoder);
  evaluate::EvalSetOptions set_options{config.eval.content, config.eval.style, config.eval.pairs,
                                       config.data.augment.crop_size};
  try {
    state_->set = evaluate::load_eval_set(set_options, comm.rank(), comm.world_size());
    if (state_->set.skipped_files > 0 && comm.rank() == 0)
      spdlog::warn("held-out evaluation: {} unreadable image file(s) left out of eval.content / eval.style",
                   state_->set.skipped_files);
  } catch (const evaluate::EvalError& e) {
    throw TrainError(std::string("eval.content / eval.style / eval.pairs: ") + e.what());
  }
}

HeldOutEvaluation::~HeldOutEvaluation() = default;

void HeldOutEvaluation::after_step(int64_t step, int64_t total, GanModel& gan, comm::Communicator& comm,
                                   MetricsLog* metrics, EventWriter* events) {
  if (!state_ || (step % state_->every_steps != 0 && step != total)) return;
  const auto start = std::chrono::steady_clock::now();
  const auto translators = gan.cyclegan_generators();
  const auto result = translators.a2b ? evaluate::evaluate(*translators.a2b, *translators.b2a, state_->loss_network,
                                                           state_->set, comm, state_->options)
                                      : evaluate::evaluate(*gan.adain_generator(), state_->set, comm, state_->options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::map<std::string, double> values = {{"eval/seconds", seconds}};
  for (const auto& m : result.metrics) values["eval/" + m.key] = m.value;
  if (metrics) metrics->write(step, values);
  if (events)
    for (const auto& [key, value] : values) events->add_scalar(key, value, step);
  if (comm.rank() == 0) spdlog::info("step {} {}", step, summary(result, seconds));
}

}  // namespace atelier::trainer
