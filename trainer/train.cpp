// The training loop of a run directory: set up, resume, step, record.
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <torch/version.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "trainer/gan_model.h"
#include "trainer/checkpointing.h"
#include "trainer/elastic.h"
#include "trainer/evaluation.h"
#include "trainer/event_file.h"
#include "trainer/run_files.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace fs = std::filesystem;
namespace {

// Sends log lines to <run>/log.txt as well as the console; step lines go to
// the file only while a progress line owns the terminal.
struct RunLog {
  explicit RunLog(const fs::path& path) {
    file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path.string());
    file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [rank 0] [%l] %v");
    spdlog::default_logger()->sinks().push_back(file_sink);
    file_only = std::make_shared<spdlog::logger>("run-file", file_sink);
  }
  ~RunLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), file_sink), sinks.end());
  }
  void step_line(const std::string& line) const {
    if (Progress::interactive()) file_only->info(line);
    else spdlog::info(line);
  }
  std::shared_ptr<spdlog::sinks::basic_file_sink_mt> file_sink;
  std::shared_ptr<spdlog::logger> file_only;
};

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) throw TrainError("cannot write '" + path.string() + "'");
}

data::LoaderOptions loader_options(const Config& config, const comm::Communicator& comm) {
  data::LoaderOptions o;
  // list_images names the folder; the key says whether it is content or style.
  // A service run lists local images only for sample grids, when given.
  const bool local = config.data.source == "folder";
  try {
    if (local || !config.data.content.empty()) o.content = data::list_images(config.data.content);
  } catch (const data::DataError& e) {
    throw TrainError(std::string("data.content: ") + e.what());
  }
  try {
    if (local || !config.data.style.empty()) o.style = data::list_images(config.data.style);
  } catch (const data::DataError& e) {
    throw TrainError(std::string("data.style: ") + e.what());
  }
  o.augment = config.data.augment;
  o.batch_size = config.train.batch_size;
  o.workers = config.data.workers;
  o.prefetch = config.data.prefetch;
  o.seed = config.train.seed;
  o.rank = comm.rank();
  o.world_size = comm.world_size();
  return o;
}

// A GPU run's batches come in pinned memory, so that their copies to the
// device (DeviceBatches' copy stream, or the step's non-blocking copy in a
// build without the CUDA runtime) do not block.
data::LoaderOptions pinned_for(data::LoaderOptions o, const torch::Device& device) {
  o.pin_memory = device.is_cuda();
  return o;
}

// data.source picks where batches come from; both give the same batches.
std::unique_ptr<data::BatchSource> open_batches(const Config& config, const data::LoaderOptions& o,
                                                const data::Cursor& start) {
  if (config.data.source == "folder") return std::make_unique<data::PrefetchLoader>(o, start);
  data::ServiceOptions s;
  s.servers = config.data.servers;
  s.token = data::read_token_file(config.data.token_file);
  s.augment = o.augment;
  s.batch_size = o.batch_size;
  s.prefetch = o.prefetch;
  s.seed = o.seed;
  s.rank = o.rank;
  s.world_size = o.world_size;
  s.pin_memory = o.pin_memory;
  return std::make_unique<data::ServiceLoader>(s, start);
}

// The same (content, style) pairs at every sample step, centre-cropped, so
// the grids show the model changing rather than the data.
// The first `count` readable images of `files`, centre-cropped (repeated
// when fewer are readable): fixed sample-grid inputs. An unreadable file is
// passed over; the loader warns about it and counts it when it meets it.
torch::Tensor readable_samples(const std::vector<std::string>& files, int64_t count, int64_t crop,
                               const std::string& key) {
  std::vector<torch::Tensor> found;
  for (size_t i = 0; i < files.size() && static_cast<int64_t>(found.size()) < count; ++i) {
    try {
      found.push_back(data::load_centered(files[i], crop));
    } catch (const data::DataError& e) {
      spdlog::info("sample grid: passing over {}", e.what());
    }
  }
  if (found.empty())
    throw TrainError(key + ": none of its " + std::to_string(files.size()) + " image file(s) can be decoded");
  std::vector<torch::Tensor> picked;
  for (int64_t i = 0; i < count; ++i) picked.push_back(found[static_cast<size_t>(i) % found.size()]);
  return torch::stack(picked);
}

std::pair<torch::Tensor, torch::Tensor> sample_inputs(const data::LoaderOptions& o, int64_t count) {
  return {readable_samples(o.content, count, o.augment.crop_size, "data.content"),
          readable_samples(o.style, count, o.augment.crop_size, "data.style")};
}

std::string format_losses(const StepLosses& l) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(4) << "D " << l.d << " G " << l.g << " (";
  for (size_t i = 0; i < l.terms.size(); ++i) out << (i ? " " : "") << l.terms[i].first << " " << l.terms[i].second;
  out << ")";
  return out.str();
}

bool due(int64_t step, int64_t every, int64_t last) { return step % every == 0 || step == last; }

// Per-rank randomness (none in the AdaIN step today; noise or dropout later)
// draws from (seed, rank). Rank 0 keeps the seed itself, so a single process
// behaves exactly as before data parallelism existed.
uint64_t rank_seed(uint64_t seed, int rank) {
  return rank == 0 ? seed : seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(rank));
}

// Every rank logs and judges the same numbers: the losses averaged over ranks.
StepLosses average_losses(comm::Communicator& comm, const StepLosses& l) {
  if (comm.world_size() == 1) return l;
  std::vector<double> values = {l.d, l.g};
  for (const auto& term : l.terms) values.push_back(term.second);
  auto t = torch::tensor(values, torch::kDouble);
  comm.all_reduce(t, comm::ReduceOp::Avg);
  const auto a = t.accessor<double, 1>();
  StepLosses out = l;
  out.d = a[0];
  out.g = a[1];
  for (size_t i = 0; i < out.terms.size(); ++i) out.terms[i].second = a[static_cast<int64_t>(i) + 2];
  return out;
}

// Replicas must be bit-identical; a checksum per rank shows which one is not.
void verify_replicas(comm::Communicator& comm, GanModel& gan, int64_t step) {
  const auto all = comm.all_gather(torch::tensor({static_cast<int64_t>(comm::checksum(gan.state_tensors()))}));
  for (int r = 1; r < comm.world_size(); ++r)
    if (all[r].item<int64_t>() != all[0].item<int64_t>())
      throw TrainError("replicas diverged at step " + std::to_string(step) + ": rank " + std::to_string(r) +
                       "'s parameters (crc " + std::to_string(all[r].item<int64_t>()) + ") differ from rank 0's (crc " +
                       std::to_string(all[0].item<int64_t>()) + ")");
}

// What only rank 0 has: the files of the run directory and the progress line.
struct RunWriters {
  RunWriters(const fs::path& run_dir, int64_t first_step, int64_t total, int64_t global_batch)
      : metrics(run_dir / "metrics.jsonl"), events((run_dir / "tb").string()), progress(first_step, total, global_batch) {}

  void record(int64_t step, int64_t total, const StepLosses& losses, const Config& config, double lr,
              const data::BatchSource& loader, const RunLog& log) {
    progress.finished(step);
    const double wait = loader.wait_seconds() - waited;
    waited += wait;
    std::map<std::string, double> values = {
        {"loss_d", losses.d}, {"loss_g", losses.g}, {"lr_g", config.optim.lr_g * lr},
        {"lr_d", config.optim.lr_d * lr}, {"images_per_s", progress.images_per_second()},
        {"data_wait_s", wait}, {"skipped_files", static_cast<double>(loader.skipped_files())}};
    for (const auto& [name, value] : losses.terms) values["loss_" + name] = value;
    if (losses.loss_scale_g > 0) {
      values["loss_scale_g"] = losses.loss_scale_g;
      values["loss_scale_d"] = losses.loss_scale_d;
      values["overflow_skips"] = static_cast<double>(losses.overflow_skips);
    }
    metrics.write(step, values);
    progress.draw(format_losses(losses));
    if (!due(step, config.train.log_every, total)) return;
    for (const auto& [key, value] : values) events.add_scalar(key, value, step);
    std::ostringstream line;
    line << "step " << step << "/" << total << " | " << format_losses(losses) << " | " << std::fixed
         << std::setprecision(1) << progress.images_per_second() << " img/s | ETA "
         << static_cast<int64_t>(progress.eta_seconds()) << " s";
    log.step_line(line.str());
  }

  MetricsLog metrics;
  EventWriter events;
  Progress progress;
  double waited = 0;  // data-wait seconds already reported
};

// Everything a run needs once set up: shared by the loop's helpers.
struct Run {
  const Config& config;
  fs::path dir;
  RunConfigText text;
  std::shared_ptr<comm::Communicator> comm;
  torch::Device device{torch::kCPU};  // train.device, resolved for this rank
  std::optional<RunLog> log;  // rank 0 only
  int64_t micro_batches = 1;  // per rank and step (train.global_batch)
  std::vector<checkpoint::WorldSpan> history = {};  // world sizes of the run; the last is this job's
  int64_t global_batch() const { return config.train.batch_size * comm->world_size() * micro_batches; }
};

checkpoint::CoordinatorOptions coordinator_options(const Config& config) {
  const auto& c = config.checkpoint;
  return {c.async, c.when_busy, c.keep, c.keep_every, c.hook, config.dist.timeout_s, c.hook_every_steps};
}

// The checkpoint that ends a run (its last step, or a stop on a signal) must
// be on disk before the job exits: a failure here fails the run.
std::string final_checkpoint(checkpoint::CheckpointCoordinator& coordinator, Run& run, GanModel& gan,
                             const RunPosition& position, double lr) {
  coordinator.save(checkpoint_request(gan, position, run.history, run.text, lr), /*required=*/true);
  const auto outcome = coordinator.finish();
  if (!outcome || !outcome->committed || outcome->step != position.step)
    throw TrainError("the checkpoint of step " + std::to_string(position.step) +
                     " failed: " + (outcome ? outcome->error : std::string("not written")));
  return outcome->path.string();
}

void run_steps(Run& run, GanModel& gan, const data::LoaderOptions& loader_opts, const RunPosition& start,
               TrainResult& result) {
  const auto& config = run.config;
  const int64_t total = config.train.steps;
  const bool leader = run.comm->rank() == 0;
  auto loader = open_batches(config, pinned_for(loader_opts, run.device), start.cursor);
  // On a GPU the next batch crosses on a copy stream while this step runs.
  if (run.device.is_cuda() && data::device_copies_built())
    loader = std::make_unique<data::DeviceBatches>(std::move(loader), run.device);
  checkpoint::CheckpointCoordinator coordinator(run.dir / "checkpoints", run.comm, coordinator_options(config));
  const checkpoint::StopSignals signals;
  HeldOutEvaluation evaluation(config, *run.comm, run.device);
  std::optional<RunWriters> writers;
  torch::Tensor sample_content, sample_style;
  if (leader) {
    if (!loader_opts.content.empty() && !loader_opts.style.empty())
      std::tie(sample_content, sample_style) = sample_inputs(loader_opts, config.train.sample_count);
    writers.emplace(run.dir, start.step, total, run.global_batch());
    spdlog::info("training {} steps of global batch {} ({} rank(s) x {} micro-batch(es) of {}) at {} px in {}",
                 total - start.step, run.global_batch(), run.comm->world_size(), run.micro_batches,
                 config.train.batch_size, config.data.augment.crop_size, run.dir.string());
  }
  std::optional<SampleAudit> audit;
  if (config.data.audit) audit.emplace(run.dir / "audit", run.comm->rank(), run.comm->world_size());
  RunPosition position = start;
  double lr = lr_factor(config.optim, start.step, total);
  std::vector<MicroBatch> micro;
  for (int64_t step = start.step + 1; step <= total; ++step) {
    micro.clear();
    for (int64_t j = 0; j < run.micro_batches; ++j) {
      const auto batch = loader->next();
      if (audit) audit->record(step, j, batch.content.cpu(), batch.style.cpu(), batch.first_sample);
      if (leader && !sample_content.defined()) {  // a service run without local images: the first batch
        const int64_t n = std::min(config.train.sample_count, batch.content.size(0));
        sample_content = batch.content.slice(0, 0, n).clone();
        sample_style = batch.style.slice(0, 0, n).clone();
      }
      micro.push_back({batch.content.to(run.device, /*non_blocking=*/true), batch.style.to(run.device, true)});
    }
    lr = lr_factor(config.optim, step - 1, total);
    const auto losses = average_losses(*run.comm, gan.step(micro, lr));
    position = {step, loader->cursor()};
    if (!std::isfinite(losses.g) || !std::isfinite(losses.d))
      throw TrainError("non-finite loss at step " + std::to_string(step) + ": " + format_losses(losses));
    if (config.dist.verify_every > 0 && step % config.dist.verify_every == 0 && run.comm->world_size() > 1)
      verify_replicas(*run.comm, gan, step);
    if (leader) {
      writers->record(step, total, losses, config, lr, *loader, *run.log);
      if (due(step, config.train.sample_every, total))
        write_sample_grid(run.dir / "samples", step,
                          gan.sample_columns(sample_content.to(run.device), sample_style.to(run.device)),
                          gan.sample_tag(), writers->events);
    }
    evaluation.after_step(step, total, gan, *run.comm, writers ? &writers->metrics : nullptr,
                          writers ? &writers->events : nullptr);
    result.last_step = step;
    result.loss_g = losses.g;
    result.loss_d = losses.d;
    // Every rank looks at the signals at the same boundary, so all of them
    // stop after the same step and save it together.
    if (const int signal = signals.agree(*run.comm); signal != 0) {
      if (leader) spdlog::warn("signal {} received: checkpointing step {} and stopping", signal, step);
      result.stop_signal = signal;
      break;
    }
    if (step != total && step % config.checkpoint.every_steps == 0)
      coordinator.save(checkpoint_request(gan, position, run.history, run.text, lr));
  }
  if (writers) writers->events.flush();
  result.checkpoint = final_checkpoint(coordinator, run, gan, position, lr);
}

// Said once, by rank 0, when a job resumes on another number of ranks than
// wrote its checkpoint: what happens to the batch and to per-rank state.
void log_world_change(const Run& run, const Restored& restored) {
  const int saved = restored.saved_world_size, now = run.comm->world_size();
  if (saved == now) return;
  const int64_t before = restored.world_history.back().global_batch > 0 ? restored.world_history.back().global_batch
                                                                        : run.config.train.batch_size * saved;
  std::string batch;
  if (run.config.train.global_batch > 0)
    batch = "the global batch stays " + std::to_string(run.global_batch()) + " (" + std::to_string(now) +
            " rank(s) x " + std::to_string(run.micro_batches) + " micro-batch(es) of " +
            std::to_string(run.config.train.batch_size) + ", gradients accumulated)";
  else
    batch = "the global batch changes from " + std::to_string(before) + " to " + std::to_string(run.global_batch()) +
            " (" + std::to_string(now) + " rank(s) x train.batch_size " + std::to_string(run.config.train.batch_size) +
            "; set train.global_batch to keep it)";
  spdlog::warn("world size changed from {} to {} rank(s) at step {}: {}; the sample stream continues from the "
               "checkpoint's global position; every rank's RNG is reseeded from (train.seed, step, rank)",
               saved, now, restored.position.step, batch);
  if (!restored.redistributed.empty()) spdlog::warn("{}", restored.redistributed);
}

// Which weight files the networks were built from, in what layout and
// format. The AdaIN generator's encoder and decoder say what they resolved
// ("auto") when they read the files; CycleGAN's evaluation encoder has the
// layout its configuration resolved.
void log_weight_files(const Config& config, GanModel& gan) {
  auto* adain = gan.adain_generator();
  const auto& encoder = config.model.generator.encoder;
  if (encoder.network == "squeezenet1_1") {
    std::string style;
    for (const auto& layer : encoder.style_layers) style += (style.empty() ? "" : ", ") + layer;
    spdlog::info("loss network: {}, content layer {}, style layers {} ({})", models::describe_encoder(encoder),
                 encoder.content_layer, style,
                 encoder.squeezenet_dir.empty() ? models::default_squeezenet_dir() : encoder.squeezenet_dir);
  }
  const auto& vgg_weights = config.model.generator.encoder.weights_path;
  if (!vgg_weights.empty()) {
    const auto& layout = adain ? (*adain)->encoder->options.layout : config.model.generator.encoder.layout;
    spdlog::info("model.vgg_weights: {}, {} ({})",
                 models::describe_vgg_layout(layout == "auto" ? models::detect_vgg_layout(vgg_weights) : layout),
                 models::state_dict_format(vgg_weights), vgg_weights);
  }
  const auto& decoder_weights = config.model.generator.decoder.weights_path;
  if (adain && !decoder_weights.empty())
    spdlog::info("model.decoder_weights: AdaIN decoder, {} ({}), {} output", models::state_dict_format(decoder_weights),
                 decoder_weights, (*adain)->decoder->options.output);
}

// train.device for this rank, and why, in words.
comm::DeviceChoice training_device(const Config& config, const comm::Environment& env) {
  try {
    return comm::choose_device(config.train.device, env, comm::device_facts());
  } catch (const comm::CommError& e) {
    throw TrainError(std::string("train.device: ") + e.what());
  }
}

void check_sources(const Config& config) {
  if (config.data.source != "folder") return;  // the servers hold the images
  if (config.data.content.empty()) throw TrainError("data.content is empty: set it to folders or files of images");
  if (config.data.style.empty()) throw TrainError("data.style is empty: set it to folders or files of images");
}

}  // namespace

std::string apply_numerics(const TrainOptions& train) {
  auto& context = at::globalContext();
  context.setAllowTF32CuDNN(train.tf32);
  context.setAllowTF32CuBLAS(train.tf32);
  context.setDeterministicCuDNN(train.deterministic);
  context.setBenchmarkCuDNN(false);
  context.setDeterministicAlgorithms(train.deterministic, /*warn_only=*/false);
  // cuBLAS reads it when its first handle is made, which is later.
  if (train.deterministic) setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  std::ostringstream scaling;
  scaling << train.loss_scale_init;
  return std::string("tf32 ") + (train.tf32 ? "on" : "off") + ", deterministic " +
         (train.deterministic ? "on" : "off") + ", loss scaling " +
         (loss_scaling_on(train) ? "dynamic from " + scaling.str() : std::string("off"));
}

std::string build_info() {
  const auto facts = comm::device_facts();
  std::string backends;
  for (const auto& b : comm::compiled_backends()) backends += (backends.empty() ? "" : ", ") + b;
  const std::string cuda = facts.cuda_built ? "with CUDA, " + std::to_string(facts.cuda_devices) + " GPU(s) visible"
                                            : "CPU only (this build has no CUDA)";
  return "atelier " + checkpoint::atelier_version() + "\nLibTorch " + TORCH_VERSION + ", " + cuda +
         "\ncommunication backends: " + backends + "\ndata files: " + models::data_dir();
}

TrainResult train(const Config& config, const std::string& resolved_yaml, bool resume) {
  check_sources(config);
  const auto env = comm::detect_environment();
  const auto device = training_device(config, env);
  if (config.train.precision == Precision::FP16 && !device.device.is_cuda())
    throw TrainError("train.precision fp16 needs a CUDA device, and this run trains on " + device.device.str() +
                     ": CPU autocast has no float16 (use bf16 on CPUs, or train.device=cuda)");
  Run run{config, fs::path(config.run.dir) / config.run.name,
          {resolved_yaml, config_hash(resolved_yaml), models::describe_encoder(config.model.generator.encoder)},
          comm::make_communicator(env, {config.dist.backend, config.dist.timeout_s, device.device}), device.device,
          {}};
  run.micro_batches = micro_batches_per_step(config.train.global_batch, config.train.batch_size, run.comm->world_size());
  const bool leader = run.comm->rank() == 0;
  // Every rank makes the same checks on the same (shared) directory, so a
  // refusal ends every rank with the same message instead of a hang.
  fs::create_directories(run.dir / "checkpoints");
  const auto found = checkpoint::latest(run.dir / "checkpoints");
  if (!resume && found)
    throw TrainError("run directory " + run.dir.string() +
                     " already has checkpoints: pass --resume to continue it, or choose another run.name");
  if (resume && !found)
    throw TrainError("--resume: no complete checkpoint under " + (run.dir / "checkpoints").string());
  if (leader) {
    run.log.emplace(run.dir / "log.txt");
    std::istringstream info(build_info());
    for (std::string line; std::getline(info, line);) spdlog::info("{}", line);
    spdlog::info("device {}", device.reason);
    write_text(run.dir / "config.yaml", resolved_yaml);
  }

  torch::set_num_threads(static_cast<int>(config.train.threads));
  const std::string numerics = apply_numerics(config.train);
  if (leader) spdlog::info("numerics {}", numerics);
  torch::manual_seed(config.train.seed);
  const auto loader_opts = loader_options(config, *run.comm);
  const auto model = make_model(config, run.comm, run.device);
  GanModel& gan = *model;
  if (leader) log_weight_files(config, gan);
  if (leader && gan.adain_generator() && !(*gan.adain_generator())->encoder->pretrained())
    spdlog::warn("model.vgg_weights is not set: using a fixed random VGG (seed {}) as encoder and loss network "
                 "(model.encoder: squeezenet1_1 uses the shipped pretrained SqueezeNet 1.1)",
                 config.model.generator.encoder.random_seed);
  if (leader && config.train.precision == Precision::BF16) {
    const auto flags = cpu_flags();
    if (!flags.empty() && !has_native_bf16(flags))
      spdlog::warn("train.precision is bf16 but this CPU has no bf16 instructions (avx512_bf16, amx_bf16): its bf16 "
                   "convolutions are emulated and may be slower than fp32; compare with bench/compare_step.sh "
                   "--precision bf16");
  }
  // Per-rank randomness draws from (seed, rank); a resume restores each
  // rank's own generator instead.
  if (!leader) torch::manual_seed(rank_seed(config.train.seed, run.comm->rank()));
  RunPosition start;
  if (resume) {
    const auto restored = restore_checkpoint(*found, gan, run.comm->rank(), run.comm->world_size(), run.text.hash,
                                             config.train.seed);
    start = restored.position;
    run.history = continued_history(restored.world_history, start.step, run.comm->world_size(), run.global_batch());
    if (leader) {
      spdlog::info("resuming from {} (step {})", found->string(), start.step);
      log_world_change(run, restored);
    }
  } else {
    run.history = continued_history({}, 0, run.comm->world_size(), run.global_batch());
  }
  if (config.data.audit) {
    // Steps after the checkpoint are trained again: their old lines go first.
    if (leader && resume) SampleAudit::forget_after(run.dir / "audit", start.step);
    run.comm->barrier();
  }
  gan.sync_replicas();

  TrainResult result{run.dir.string(), start.step, start.step, 0, 0, found ? found->string() : "",
                     run.comm->rank(), 0, gan.sample_legend()};
  if (start.step >= config.train.steps) {
    spdlog::info("nothing to do: {} of {} steps already done", start.step, config.train.steps);
    return result;
  }
  run_steps(run, gan, loader_opts, start, result);
  return result;
}

}  // namespace atelier::trainer
