// The training loop of a run directory: set up, resume, step, record.
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <boost/crc.hpp>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "trainer/adain_gan.h"
#include "trainer/event_file.h"
#include "trainer/run_files.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace fs = std::filesystem;
namespace {

constexpr const char* kTrainerState = "trainer_state.json";
constexpr const char* kRng = "rng.pt";
// Every checkpoint carries the configuration it was trained with, so tools
// (explain, stylize) can rebuild its networks from the checkpoint alone.
constexpr const char* kConfig = "config.yaml";

// What identifies a run's configuration: the resolved YAML and its hash.
struct RunConfigText {
  std::string yaml;
  std::string hash;
};

std::string config_hash(const std::string& resolved_yaml) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(resolved_yaml.data(), resolved_yaml.size());
  std::ostringstream hex;
  hex << std::hex << std::setw(8) << std::setfill('0') << crc.checksum();
  return hex.str();
}

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

struct Resumed {
  int64_t step = 0;
  data::Cursor cursor;
  std::string checkpoint;
};

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) throw TrainError("cannot write '" + path.string() + "'");
}

void save_checkpoint(const fs::path& run_dir, const Config& config, const RunConfigText& text, AdaINGAN& gan,
                     int64_t step, const data::Cursor& cursor, std::string& last_path) {
  checkpoint::CheckpointInfo info{step, cursor.epoch, 1, text.hash};
  auto path = checkpoint::save(run_dir / "checkpoints", info, [&](const fs::path& dir) {
    gan.save(dir);
    torch::save(at::detail::getDefaultCPUGenerator().get_state(), (dir / kRng).string());
    const nlohmann::json state = {{"step", step}, {"cursor", {{"epoch", cursor.epoch}, {"index", cursor.index}}}};
    write_text(dir / kTrainerState, state.dump(2) + "\n");
    write_text(dir / kConfig, text.yaml);
  });
  checkpoint::retain(run_dir / "checkpoints", config.checkpoint.keep);
  last_path = path.string();
  spdlog::info("checkpoint {}", path.string());
}

Resumed resume_from_latest(const fs::path& run_dir, const std::string& hash, AdaINGAN& gan) {
  const auto found = checkpoint::latest(run_dir / "checkpoints");
  if (!found) throw TrainError("--resume: no complete checkpoint under " + (run_dir / "checkpoints").string());
  const auto manifest = checkpoint::read_manifest(*found);
  if (manifest.config_hash != hash)
    spdlog::warn("resuming {} with a configuration that differs from the one it was saved with", found->string());
  gan.load(*found);
  torch::Tensor rng;
  torch::load(rng, (*found / kRng).string());
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global generator
  generator.set_state(rng);
  std::ifstream in(*found / kTrainerState);
  const auto state = nlohmann::json::parse(in);
  Resumed r{state.at("step").get<int64_t>(),
            {state.at("cursor").at("epoch").get<int64_t>(), state.at("cursor").at("index").get<int64_t>()},
            found->string()};
  spdlog::info("resuming from {} (step {})", r.checkpoint, r.step);
  return r;
}

data::LoaderOptions loader_options(const Config& config) {
  data::LoaderOptions o;
  // list_images names the folder; the key says whether it is content or style.
  try {
    o.content = data::list_images(config.data.content);
  } catch (const data::DataError& e) {
    throw TrainError(std::string("data.content: ") + e.what());
  }
  try {
    o.style = data::list_images(config.data.style);
  } catch (const data::DataError& e) {
    throw TrainError(std::string("data.style: ") + e.what());
  }
  o.augment = config.data.augment;
  o.batch_size = config.train.batch_size;
  o.workers = config.data.workers;
  o.prefetch = config.data.prefetch;
  o.seed = config.train.seed;
  return o;
}

// The same (content, style) pairs at every sample step, centre-cropped, so
// the grids show the model changing rather than the data.
std::pair<torch::Tensor, torch::Tensor> sample_inputs(const data::LoaderOptions& o, int64_t count) {
  std::vector<torch::Tensor> content, style;
  for (int64_t i = 0; i < count; ++i) {
    content.push_back(data::load_centered(o.content[i % o.content.size()], o.augment.crop_size));
    style.push_back(data::load_centered(o.style[i % o.style.size()], o.augment.crop_size));
  }
  return {torch::stack(content), torch::stack(style)};
}

std::string format_losses(const StepLosses& l) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(4) << "D " << l.d << " G " << l.g << " (adv " << l.adv << " content "
      << l.content << " style " << l.style << ")";
  return out.str();
}

bool due(int64_t step, int64_t every, int64_t last) { return step % every == 0 || step == last; }

}  // namespace

TrainResult train(const Config& config, const std::string& resolved_yaml, bool resume) {
  if (config.model.family != "adain") throw TrainError("model.family '" + config.model.family + "' is not built");
  if (config.data.content.empty()) throw TrainError("data.content is empty: set it to folders or files of images");
  if (config.data.style.empty()) throw TrainError("data.style is empty: set it to folders or files of images");
  const fs::path run_dir = fs::path(config.run.dir) / config.run.name;
  fs::create_directories(run_dir / "checkpoints");
  if (!resume && checkpoint::latest(run_dir / "checkpoints"))
    throw TrainError("run directory " + run_dir.string() +
                     " already has checkpoints: pass --resume to continue it, or choose another run.name");
  RunLog log(run_dir / "log.txt");
  const RunConfigText text{resolved_yaml, config_hash(resolved_yaml)};
  write_text(run_dir / "config.yaml", resolved_yaml);

  torch::set_num_threads(static_cast<int>(config.train.threads));
  torch::manual_seed(config.train.seed);
  const auto loader_opts = loader_options(config);
  AdaINGAN gan(config);
  if (!gan.generator->encoder->pretrained())
    spdlog::warn("model.vgg_weights is not set: using a fixed random VGG (seed {}) as encoder and loss network",
                 config.model.generator.encoder.random_seed);
  Resumed start;
  if (resume) start = resume_from_latest(run_dir, text.hash, gan);

  TrainResult result{run_dir.string(), start.step, start.step, 0, 0, start.checkpoint};
  const int64_t total = config.train.steps;
  if (start.step >= total) {
    spdlog::info("nothing to do: {} of {} steps already done", start.step, total);
    return result;
  }
  data::PrefetchLoader loader(loader_opts, start.cursor);
  const auto [sample_content, sample_style] = sample_inputs(loader_opts, config.train.sample_count);
  MetricsLog metrics(run_dir / "metrics.jsonl");
  EventWriter events((run_dir / "tb").string());
  Progress progress(start.step, total, config.train.batch_size);
  spdlog::info("training {} steps of batch {} at {} px in {}", total - start.step, config.train.batch_size,
               config.data.augment.crop_size, run_dir.string());

  double waited = 0;
  for (int64_t step = start.step + 1; step <= total; ++step) {
    const auto batch = loader.next();
    const double lr = lr_factor(config.optim, step - 1, total);
    const auto losses = gan.step(batch.content, batch.style, lr);
    if (!std::isfinite(losses.g) || !std::isfinite(losses.d))
      throw TrainError("non-finite loss at step " + std::to_string(step) + ": " + format_losses(losses));
    progress.finished(step);
    const double wait = loader.wait_seconds() - waited;
    waited += wait;
    const std::map<std::string, double> values = {
        {"loss_d", losses.d}, {"loss_g", losses.g}, {"loss_adv", losses.adv}, {"loss_content", losses.content},
        {"loss_style", losses.style}, {"loss_tv", losses.tv}, {"lr_g", config.optim.lr_g * lr},
        {"lr_d", config.optim.lr_d * lr}, {"images_per_s", progress.images_per_second()},
        {"data_wait_s", wait}, {"skipped_files", static_cast<double>(loader.skipped_files())}};
    metrics.write(step, values);
    progress.draw(format_losses(losses));
    if (due(step, config.train.log_every, total)) {
      for (const auto& [key, value] : values) events.add_scalar(key, value, step);
      std::ostringstream line;
      line << "step " << step << "/" << total << " | " << format_losses(losses) << " | " << std::fixed
           << std::setprecision(1) << progress.images_per_second() << " img/s | ETA "
           << static_cast<int64_t>(progress.eta_seconds()) << " s";
      log.step_line(line.str());
    }
    if (due(step, config.train.sample_every, total))
      write_sample_grid(run_dir / "samples", step, sample_content, sample_style,
                        gan.stylize(sample_content, sample_style), events);
    if (due(step, config.checkpoint.every_steps, total))
      save_checkpoint(run_dir, config, text, gan, step, loader.cursor(), result.checkpoint);
    result = {run_dir.string(), start.step, step, losses.g, losses.d, result.checkpoint};
  }
  events.flush();
  return result;
}

}  // namespace atelier::trainer
