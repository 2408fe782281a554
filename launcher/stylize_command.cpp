// `atelier stylize --checkpoint C --content in.jpg|DIR --style s.jpg ... --out out.png|DIR`:
// apply a trained AdaIN-GAN generator to images of any size, with style
// interpolation, a content/style trade-off and colour preservation; or a
// CycleGAN generator (`--direction a2b|b2a`, no style image). Instead of a
// checkpoint, `--vgg-weights vgg_normalised.pth --decoder-weights
// decoder.pth` stylizes with AdaIN's pretrained model, before any training.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "data/data.h"
#include "launcher/commands.h"
#include "launcher/launcher.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

// The encoder downsamples by 8: inputs are padded to a multiple of it.
constexpr int64_t kStride = 8;

struct StylizeArgs {
  std::string checkpoint;
  std::string vgg_weights, decoder_weights;  // AdaIN's pretrained files, instead of a checkpoint
  std::string content;  // an image file or a folder of images
  std::vector<std::string> styles;
  std::vector<double> weights;  // empty: every style weighs the same
  double alpha = 1.0;
  std::string preserve_color;  // "", "luminance" or "histogram"
  int64_t size = 0;            // shorter side of every image; 0 = as it is
  int64_t batch = 4;
  int64_t threads = 0;  // 0: one per core
  std::string out;
  std::string direction;  // cyclegan: a2b | b2a; empty = a2b
  std::string device = "auto";
};

// One content image to stylise and where its result goes.
struct Job {
  std::string content;
  fs::path out;
};

// What every batch needs, loaded once.
struct Model {
  models::AdaINGenerator generator{nullptr};  // adain
  models::ResnetGenerator translator{nullptr};  // cyclegan
  torch::Device device{torch::kCPU};  // the networks'; images are read and written on the host
  std::vector<torch::Tensor> styles;  // [3, h_i, w_i] each, on the host
  std::vector<double> weights;
};

// 0.7 rather than std::to_string's 0.700000.
std::string number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

bool is_output_image(const fs::path& path) {
  auto ext = path.extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// Usage errors (exit 2), found before anything is loaded.
void check_args(const StylizeArgs& args) {
  if (!args.weights.empty() && args.weights.size() != args.styles.size())
    throw ConfigError("--weights: " + std::to_string(args.weights.size()) + " weights for " +
                      std::to_string(args.styles.size()) + " --style images (give one weight per style)");
  double sum = 0.0;
  for (double w : args.weights) {
    if (!(w >= 0.0)) throw ConfigError("--weights: " + number(w) + " is negative");
    sum += w;
  }
  if (!args.weights.empty() && !(std::abs(sum - 1.0) <= 1e-6))
    throw ConfigError("--weights: they sum to " + number(sum) + ", not 1");
  if (!(args.alpha >= 0.0 && args.alpha <= 1.0))
    throw ConfigError("--alpha: " + number(args.alpha) + " is outside [0, 1]");
  if (!args.preserve_color.empty() && args.preserve_color != "luminance" && args.preserve_color != "histogram")
    throw ConfigError("--preserve-color: unknown mode '" + args.preserve_color + "' (allowed: luminance, histogram)");
  if (args.size != 0 && (args.size < kStride || args.size > 65536))
    throw ConfigError("--size: " + std::to_string(args.size) + " is outside [8, 65536] (0 keeps each image's size)");
  if (args.batch < 1) throw ConfigError("--batch: must be at least 1, got " + std::to_string(args.batch));
  const bool files = !args.vgg_weights.empty() || !args.decoder_weights.empty();
  if (args.checkpoint.empty() && !files)
    throw ConfigError("--checkpoint: give a checkpoint, or AdaIN's pretrained model as --vgg-weights and "
                      "--decoder-weights");
  if (!args.checkpoint.empty() && files)
    throw ConfigError("--vgg-weights/--decoder-weights stylize without a checkpoint; a checkpoint holds its own "
                      "networks: give one or the other");
  if (files && (args.vgg_weights.empty() || args.decoder_weights.empty()))
    throw ConfigError(std::string(args.vgg_weights.empty() ? "--vgg-weights" : "--decoder-weights") +
                      ": the pretrained AdaIN model needs both the encoder (--vgg-weights) and the decoder "
                      "(--decoder-weights)");
}

// The (content, output) pairs: one for a file, one per image for a folder,
// each named after its content image (sub-folders kept) with a .png extension.
std::vector<Job> plan_jobs(const StylizeArgs& args) {
  const fs::path out(args.out);
  if (!fs::is_directory(args.content)) {
    if (fs::is_directory(out)) return {{args.content, out / fs::path(args.content).filename().replace_extension(".png")}};
    if (!is_output_image(out))
      throw ConfigError("--out: '" + args.out + "' needs a .png, .jpg or .jpeg extension (or be a folder)");
    return {{args.content, out}};
  }
  if (fs::exists(out) && !fs::is_directory(out))
    throw ConfigError("--out: '" + args.out + "' is a file, but --content '" + args.content + "' is a folder");
  std::vector<Job> jobs;
  std::map<fs::path, std::string> taken;  // output -> the content image that claimed it
  for (const auto& image : data::list_images({args.content})) {
    auto target = out / fs::path(image).lexically_relative(args.content);
    target.replace_extension(".png");
    if (auto [it, fresh] = taken.emplace(target, image); !fresh)
      throw std::runtime_error("'" + image + "' and '" + it->second + "' would both be written to '" +
                               target.string() + "'; rename one");
    jobs.push_back({image, target});
  }
  return jobs;
}

// A small image would pool away to nothing in the encoder (and cannot be
// reflect-padded to a multiple of 8).
void check_side(const torch::Tensor& image, const std::string& path) {
  if (image.size(1) < kStride || image.size(2) < kStride)
    throw std::runtime_error("image '" + path + "' is " + std::to_string(image.size(2)) + "x" +
                             std::to_string(image.size(1)) + " pixels; stylize needs at least 8 on each side");
}

// What only one family accepts, known once the checkpoint's config is read.
void check_family_args(const StylizeArgs& args, const std::string& family) {
  if (family == "cyclegan") {
    if (!args.styles.empty())
      throw ConfigError("--style: a cyclegan checkpoint translates between its two domains without a style image; "
                        "choose the way with --direction a2b|b2a");
    if (!args.weights.empty() || args.alpha != 1.0 || args.preserve_color == "histogram")
      throw ConfigError("--weights, --alpha and --preserve-color histogram need an adain checkpoint's style images");
    return;
  }
  if (!args.direction.empty())
    throw ConfigError("--direction: only cyclegan checkpoints have directions; this one is model.family '" + family + "'");
  if (args.styles.empty()) throw ConfigError("--style: an adain checkpoint needs at least one style image");
}

Model load_model(const StylizeArgs& args) {
  Model model;
  const auto device = resolve_device(args.device, "--device");
  model.device = device.device;
  spdlog::info("device {}", device.reason);
  std::string source;
  if (args.checkpoint.empty()) {
    check_family_args(args, "adain");
    model.generator = load_pretrained_generator(args.vgg_weights, args.decoder_weights);
    source = "AdaIN's pretrained model: " +
             models::describe_vgg_layout(model.generator->encoder->options.layout) + " '" + args.vgg_weights +
             "' (" + models::state_dict_format(args.vgg_weights) + "), decoder '" + args.decoder_weights + "' (" +
             models::state_dict_format(args.decoder_weights) + ")";
  } else {
    const fs::path dir = checkpoint::resolve(args.checkpoint);
    const auto config = checkpoint_config(dir);
    check_family_args(args, config.model.family);
    if (config.model.family == "cyclegan") {
      const auto direction = args.direction.empty() ? std::string("a2b") : args.direction;
      model.translator = load_cyclegan_generator(dir, config, direction);
      model.translator->to(model.device);
      spdlog::info("translating with {} ({})", dir.string(), direction);
      return model;
    }
    model.generator = load_generator(dir, config);
    source = dir.string();
  }
  model.generator->to(model.device);
  for (const auto& path : args.styles) {
    model.styles.push_back(data::load_image(path, args.size));
    check_side(model.styles.back(), path);
  }
  model.weights = args.weights;
  if (model.weights.empty()) model.weights.assign(args.styles.size(), 1.0 / static_cast<double>(args.styles.size()));
  spdlog::info("stylizing with {} ({} style image(s), alpha {})", source, args.styles.size(), args.alpha);
  return model;
}

// Reflection, not zeros: a padded border that looks like the image keeps
// the decoder from painting a frame into the part we keep.
torch::Tensor pad_to_stride(const torch::Tensor& images) {
  const int64_t height = images.size(2), width = images.size(3);
  return torch::nn::functional::pad(
      images, torch::nn::functional::PadFuncOptions(
                  {0, (kStride - width % kStride) % kStride, 0, (kStride - height % kStride) % kStride})
                  .mode(torch::kReflect));
}

torch::Tensor keep_luminance(const torch::Tensor& out, const torch::Tensor& content) {
  std::vector<torch::Tensor> kept;
  for (int64_t b = 0; b < content.size(0); ++b) kept.push_back(data::transfer_luminance(out[b], content[b]));
  return torch::stack(kept);
}

// Stylises same-sized content images [B, 3, H, W] on the model's device;
// returns [B, 3, H, W] on the host. Colour work happens on the host.
torch::Tensor stylize_batch(Model& model, const torch::Tensor& content, const StylizeArgs& args) {
  const int64_t height = content.size(2), width = content.size(3);
  const auto padded = pad_to_stride(content).to(model.device);
  torch::Tensor out;
  if (model.translator) {
    out = model.translator->forward(padded);
  } else {
    std::vector<torch::Tensor> styles;
    for (const auto& style : model.styles) {
      if (args.preserve_color != "histogram") {
        styles.push_back(style.unsqueeze(0).to(model.device));
        continue;
      }
      // The style's colours become the content's, so only its texture transfers.
      std::vector<torch::Tensor> matched;
      for (int64_t b = 0; b < content.size(0); ++b) matched.push_back(data::match_histogram(style, content[b]));
      styles.push_back(torch::stack(matched).to(model.device));
    }
    out = model.generator->stylize_mixed(padded, styles, model.weights, args.alpha).image;
  }
  out = out.slice(2, 0, height).slice(3, 0, width).to(torch::kCPU);
  return args.preserve_color == "luminance" ? keep_luminance(out, content) : out;
}

// A \r-redrawn bar on a terminal; a log line per batch otherwise (a log file
// or a CI console would fill with carriage returns).
class Progress {
 public:
  explicit Progress(size_t total) : total_(total), tty_(isatty(fileno(stderr)) != 0) {}
  void advance(size_t done) {
    done_ += done;
    if (!tty_) {
      spdlog::info("stylized {}/{} images", done_, total_);
      return;
    }
    const size_t width = 30, filled = total_ == 0 ? width : width * done_ / total_;
    std::fprintf(stderr, "\rstylize [%s%s] %zu/%zu images", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), done_, total_);
    if (done_ == total_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  size_t total_, done_ = 0;
  bool tty_;
};

struct Pending {
  std::vector<torch::Tensor> images;
  std::vector<fs::path> outputs;
};

void write_batch(Model& model, Pending& pending, const StylizeArgs& args, Progress& progress) {
  const auto out = stylize_batch(model, torch::stack(pending.images), args);
  for (size_t i = 0; i < pending.outputs.size(); ++i) {
    if (pending.outputs[i].has_parent_path()) fs::create_directories(pending.outputs[i].parent_path());
    data::save_image(pending.outputs[i].string(), out[static_cast<int64_t>(i)]);
  }
  progress.advance(pending.outputs.size());
  pending = {};
}

int run_stylize(const StylizeArgs& args) {
  check_args(args);
  const auto jobs = plan_jobs(args);
  torch::set_num_threads(static_cast<int>(args.threads > 0 ? args.threads : std::max(1u, std::thread::hardware_concurrency())));
  auto model = load_model(args);
  torch::NoGradGuard no_grad;
  Progress progress(jobs.size());
  // Images of one shape share a batch; a batch runs as soon as it is full,
  // so memory holds at most one partial batch per distinct shape.
  std::map<std::pair<int64_t, int64_t>, Pending> by_shape;
  size_t unreadable = 0;
  for (const auto& job : jobs) {
    torch::Tensor image;
    try {
      image = data::load_image(job.content, args.size);
      check_side(image, job.content);
    } catch (const std::exception& e) {
      if (jobs.size() == 1) throw;
      spdlog::warn("skipping: {}", e.what());  // one bad file should not cost the whole folder
      ++unreadable;
      continue;
    }
    auto& pending = by_shape[{image.size(1), image.size(2)}];
    pending.images.push_back(image);
    pending.outputs.push_back(job.out);
    if (static_cast<int64_t>(pending.images.size()) == args.batch) write_batch(model, pending, args, progress);
  }
  for (auto& [shape, pending] : by_shape)
    if (!pending.images.empty()) write_batch(model, pending, args, progress);
  if (unreadable == jobs.size()) {
    spdlog::error("none of the {} content images in '{}' could be read (see the warnings above)", jobs.size(),
                  args.content);
    return kExitFailure;
  }
  std::cout << "Stylized " << jobs.size() - unreadable << " image(s) into " << args.out << "\n";
  // Like train and evaluate: unreadable files are skipped and counted, not fatal.
  if (unreadable > 0)
    spdlog::warn("skipped {} of {} content images that could not be read (see the warnings above)", unreadable,
                 jobs.size());
  return 0;
}

}  // namespace

void add_stylize_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<StylizeArgs>();
  auto* cmd = app.add_subcommand("stylize", "Stylize images with a trained AdaIN-GAN or CycleGAN checkpoint, or AdaIN's pretrained files");
  cmd->add_option("--checkpoint", args->checkpoint,
                  "Checkpoint: runs/x, runs/x/checkpoints, a step-N directory or a LATEST file");
  cmd->add_option("--vgg-weights", args->vgg_weights,
                  "Instead of a checkpoint: AdaIN's vgg_normalised.pth (or torchvision's VGG-19) as the encoder")
      ->check(CLI::ExistingFile);
  cmd->add_option("--decoder-weights", args->decoder_weights,
                  "Instead of a checkpoint: AdaIN's trained decoder.pth (with --vgg-weights)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--content", args->content, "Content image, or a folder of them (searched recursively)")
      ->required();
  cmd->add_option("--style", args->styles, "Style image; repeat to mix several styles (adain)")
      ->expected(1)
      ->take_all();
  cmd->add_option("--direction", args->direction,
                  "cyclegan: a2b translates content-domain images to the style domain (default), b2a back");
  cmd->add_option("--weights", args->weights, "One weight per --style, >= 0, summing to 1 (default: equal)")
      ->delimiter(',');
  cmd->add_option("--alpha", args->alpha, "Style strength in [0, 1]: 0 keeps the content's features, 1 full style");
  cmd->add_option("--preserve-color", args->preserve_color,
                  "Keep the content's colours: luminance (stylise, then keep its chroma) or histogram "
                  "(match the styles' colours to the content first)");
  cmd->add_option("--size", args->size, "Scale each image's shorter side to this many pixels (default: as it is)");
  cmd->add_option("--batch", args->batch, "Content images of the same size stylised together");
  cmd->add_option("--threads", args->threads, "LibTorch intra-op threads (default: one per core)");
  add_device_option(*cmd, args->device);
  cmd->add_option("--out", args->out, "Output image (.png/.jpg), or a folder when --content is a folder")->required();
  cmd->footer("adain checkpoints need --style; cyclegan checkpoints take --direction instead.\n"
              "--vgg-weights with --decoder-weights (AdaIN's pretrained files) stylize without any training.\n"
              "Any image size works: inputs are reflect-padded to a multiple of 8 and cropped back.\n"
              "A folder of content images gives a folder of PNGs named after them.\n"
              "Exit code 2: bad options; 1: an image or the checkpoint could not be used.");
  cmd->callback([args, &exit_code] { exit_code = run_stylize(*args); });
}

}  // namespace atelier::launcher
