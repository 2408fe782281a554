// Configuration: one table of keys, each knowing how to read, check and
// print its value. YAML files, --set overrides and the dumped config.yaml all
// go through this table, so an unknown key or a bad value is reported the
// same way wherever it comes from.
#include "launcher/launcher.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <utility>

#include "launcher/default_config.h"

namespace atelier::launcher {
namespace {

using trainer::Config;

struct Field {
  std::string key;   // "section.name"
  std::string help;  // one line for --help and config.yaml comments
  std::function<void(Config&, const YAML::Node&)> set;
  std::function<YAML::Node(const Config&)> get;
};

// Accessor of a Config member; `const Config` is read through the same path.
#define AT(member) [](Config& c) -> auto& { return c.member; }

std::string show(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

template <typename T>
T scalar(const std::string& key, const YAML::Node& node, const char* expected) {
  try {
    if (!node.IsScalar()) throw YAML::BadConversion(node.Mark());
    return node.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(key + ": expected " + expected + ", got '" + show(node) + "'");
  }
}

template <typename Access>
Field integer(std::string key, Access at, int64_t min, int64_t max, std::string help) {
  Field f{key, std::move(help), {}, {}};
  f.set = [key, at, min, max](Config& c, const YAML::Node& n) {
    auto v = scalar<int64_t>(key, n, "an integer");
    if (v < min || v > max)
      throw ConfigError(key + ": " + std::to_string(v) + " is out of range [" + std::to_string(min) +
                        ", " + std::to_string(max) + "]");
    at(c) = static_cast<std::remove_reference_t<decltype(at(c))>>(v);
  };
  f.get = [at](const Config& c) { return YAML::Node(at(const_cast<Config&>(c))); };
  return f;
}

template <typename Access>
Field real(std::string key, Access at, double min, double max, std::string help) {
  Field f{key, std::move(help), {}, {}};
  f.set = [key, at, min, max](Config& c, const YAML::Node& n) {
    auto v = scalar<double>(key, n, "a number");
    if (!(v >= min && v <= max)) {
      std::ostringstream msg;
      msg << key << ": " << v << " is out of range [" << min << ", " << max << "]";
      throw ConfigError(msg.str());
    }
    at(c) = v;
  };
  f.get = [at](const Config& c) { return YAML::Node(at(const_cast<Config&>(c))); };
  return f;
}

template <typename Access>
Field boolean(std::string key, Access at, std::string help) {
  Field f{key, std::move(help), {}, {}};
  f.set = [key, at](Config& c, const YAML::Node& n) { at(c) = scalar<bool>(key, n, "true or false"); };
  f.get = [at](const Config& c) { return YAML::Node(at(const_cast<Config&>(c))); };
  return f;
}

template <typename Access>
Field text(std::string key, Access at, std::string help) {
  Field f{key, std::move(help), {}, {}};
  f.set = [key, at](Config& c, const YAML::Node& n) {
    at(c) = n.IsNull() ? std::string() : scalar<std::string>(key, n, "a string");
  };
  f.get = [at](const Config& c) { return YAML::Node(at(const_cast<Config&>(c))); };
  return f;
}

// A list of strings; a single string is a list of one.
template <typename Access>
Field list(std::string key, Access at, std::string help) {
  Field f{key, std::move(help), {}, {}};
  f.set = [key, at](Config& c, const YAML::Node& n) {
    std::vector<std::string> out;
    if (n.IsSequence()) {
      for (const auto& item : n) out.push_back(scalar<std::string>(key, item, "a list of strings"));
    } else if (!n.IsNull()) {
      out.push_back(scalar<std::string>(key, n, "a string or a list of strings"));
    }
    at(c) = out;
  };
  f.get = [at](const Config& c) {
    YAML::Node n(YAML::NodeType::Sequence);
    for (const auto& s : at(const_cast<Config&>(c))) n.push_back(s);
    return n;
  };
  return f;
}

// A string chosen from `names`, stored as the matching value.
template <typename T, typename Access>
Field choice(std::string key, Access at, std::vector<std::pair<std::string, T>> names,
             std::string help) {
  Field f{key, std::move(help), {}, {}};
  f.set = [key, at, names](Config& c, const YAML::Node& n) {
    auto v = scalar<std::string>(key, n, "a string");
    for (const auto& [name, value] : names) {
      if (name == v) {
        at(c) = value;
        return;
      }
    }
    std::string allowed;
    for (const auto& [name, value] : names) allowed += (allowed.empty() ? "" : ", ") + name;
    throw ConfigError(key + ": unknown value '" + v + "' (allowed: " + allowed + ")");
  };
  f.get = [at, names](const Config& c) {
    for (const auto& [name, value] : names)
      if (value == at(const_cast<Config&>(c))) return YAML::Node(name);
    return YAML::Node();
  };
  return f;
}

constexpr int64_t kBig = std::numeric_limits<int32_t>::max();

std::vector<Field> make_fields() {
  using models::Adversarial;
  using models::Norm;
  using models::StyleStatistics;
  using trainer::Schedule;
  const std::vector<std::pair<std::string, std::string>> levels = {
      {"trace", "trace"}, {"debug", "debug"}, {"info", "info"}, {"warn", "warn"}, {"error", "error"}};
  return {
      text("run.name", AT(run.name), "run directory name under run.dir"),
      text("run.dir", AT(run.dir), "parent folder of run directories"),
      choice<std::string>("run.log_level", AT(run.log_level), levels, "log level"),
      choice<std::string>("model.family", AT(model.family), {{"adain", "adain"}, {"cyclegan", "cyclegan"}},
             "model trained: adain (AdaIN-GAN) or cyclegan (paper defaults for keys left out)"),
      choice<std::string>("model.encoder", AT(model.generator.encoder.network),
             {{"vgg19", "vgg19"}, {"squeezenet1_1", "squeezenet1_1"}},
             "loss network (and AdaIN-GAN's encoder): vgg19 (model.vgg_weights, or a fixed random VGG), or "
             "squeezenet1_1 (the shipped ImageNet-trained SqueezeNet 1.1)"),
      text("model.squeezenet_dir", AT(model.generator.encoder.squeezenet_dir),
           "squeezenet1_1: directory of its weights and SHA256SUMS; empty: the shipped models/pretrained/squeezenet1_1"),
      text("model.content_layer", AT(model.generator.encoder.content_layer),
           "squeezenet1_1: AdaIN's and the content loss's layer: relu1, fire1 .. fire8"),
      list("model.style_layers", AT(model.generator.encoder.style_layers),
           "squeezenet1_1: the style loss's layers (relu1, fire1 .. fire8)"),
      text("model.vgg_weights", AT(model.generator.encoder.weights_path),
           "VGG-19 state dict (.pth): torchvision's, or AdaIN's vgg_normalised; empty: fixed random VGG"),
      choice<std::string>("model.vgg_layout", AT(model.generator.encoder.layout),
             {{"auto", "auto"}, {"torchvision", "torchvision"}, {"adain", "adain"}},
             "VGG layer layout: auto (the weights file's; torchvision without one), torchvision, adain"),
      integer("model.encoder_width", AT(model.generator.encoder.width), 1, 1024,
              "VGG block-1 channels (64 = real VGG-19)"),
      integer("model.vgg_seed", AT(model.generator.encoder.random_seed), 0, kBig,
              "seed of the fixed random VGG"),
      integer("model.decoder_width", AT(model.generator.decoder.width), 1, 1024,
              "decoder block-1 channels (must equal encoder_width)"),
      text("model.decoder_weights", AT(model.generator.decoder.weights_path),
           "adain: AdaIN decoder.pth to start the decoder from (its widths must match); empty: random"),
      choice<std::string>("model.decoder_output", AT(model.generator.decoder.output),
             {{"auto", "auto"}, {"tanh", "tanh"}, {"linear", "linear"}},
             "decoder output: tanh-bounded, or linear as AdaIN's (auto: linear with decoder_weights)"),
      integer("model.disc_width", AT(model.discriminator.width), 1, 1024, "PatchGAN first-layer channels"),
      integer("model.disc_layers", AT(model.discriminator.layers), 1, 6, "PatchGAN strided layers (3 = 70x70)"),
      choice<Norm>("model.disc_norm", AT(model.discriminator.norm),
             {{"instance", Norm::Instance}, {"batch", Norm::Batch}, {"none", Norm::None}},
             "PatchGAN normalisation"),
      integer("model.resnet_width", AT(model.resnet.width), 1, 1024, "cyclegan: generator first-layer channels (ngf)"),
      integer("model.resnet_blocks", AT(model.resnet.blocks), 0, 64,
              "cyclegan: residual blocks (default 9 from 256 px, 6 below)"),
      integer("model.pool_size", AT(model.pool_size), 0, 100000,
              "cyclegan: generated images in each discriminator's history pool (per rank; 0 = none)"),
      choice<std::string>("data.source", AT(data.source), {{"folder", "folder"}, {"service", "service"}},
             "folder: decode images in process; service: stream batches from data.servers"),
      list("data.content", AT(data.content), "content image folders or files"),
      list("data.style", AT(data.style), "style image folders or files"),
      list("data.servers", AT(data.servers), "service: loader servers as host:port (atelier serve-data)"),
      text("data.token_file", AT(data.token_file), "service: file holding the job token the servers were given"),
      integer("data.load_size", AT(data.augment.load_size), 8, 8192, "shorter side after resizing"),
      integer("data.crop_size", AT(data.augment.crop_size), 8, 8192, "training image size (multiple of 8)"),
      boolean("data.flip", AT(data.augment.flip), "random horizontal flips"),
      integer("data.workers", AT(data.workers), 1, 256, "decode threads"),
      integer("data.prefetch", AT(data.prefetch), 1, 1024, "batches decoded ahead"),
      boolean("data.audit", AT(data.audit),
              "record every sample each rank trains on in <run>/audit/rank-<r>.jsonl (sample numbers, pixel CRCs)"),
      choice<Adversarial>("loss.adversarial", AT(loss.adversarial),
             {{"bce", Adversarial::BCE}, {"lsgan", Adversarial::LSGAN}, {"hinge", Adversarial::Hinge}},
             "adversarial loss"),
      choice<StyleStatistics>("loss.style_statistics", AT(loss.style_statistics),
             {{"meanstd", StyleStatistics::MeanStd}, {"gram", StyleStatistics::Gram},
              {"both", StyleStatistics::Both}},
             "feature statistics the style loss matches"),
      real("loss.adversarial_weight", AT(loss.adversarial_weight), 0, 1e6, "lambda_adv"),
      real("loss.content_weight", AT(loss.content_weight), 0, 1e6, "lambda_c"),
      real("loss.style_weight", AT(loss.style_weight), 0, 1e6, "lambda_s"),
      real("loss.tv_weight", AT(loss.tv_weight), 0, 1e6, "lambda_tv"),
      real("loss.cycle_weight", AT(loss.cycle_weight), 0, 1e6, "cyclegan: lambda of the cycle loss"),
      real("loss.identity_weight", AT(loss.identity_weight), 0, 1e6,
           "cyclegan: identity loss weight as a fraction of cycle_weight"),
      real("optim.lr_g", AT(optim.lr_g), 1e-12, 10, "generator Adam learning rate"),
      real("optim.lr_d", AT(optim.lr_d), 1e-12, 10, "discriminator Adam learning rate"),
      real("optim.beta1", AT(optim.beta1), 0, 0.999999, "Adam beta1"),
      real("optim.beta2", AT(optim.beta2), 0, 0.999999999, "Adam beta2"),
      real("optim.eps", AT(optim.eps), 1e-16, 1, "Adam epsilon (added to the root of the second moment)"),
      choice<Schedule>("optim.schedule", AT(optim.schedule),
             {{"constant", Schedule::Constant}, {"linear", Schedule::Linear}}, "learning-rate schedule"),
      integer("optim.decay_start", AT(optim.decay_start), 0, kBig, "linear: step where decay to 0 starts (none if >= train.steps)"),
      real("optim.grad_clip", AT(optim.grad_clip), 0, 1e9, "max gradient norm per network (0 = off)"),
      integer("train.steps", AT(train.steps), 1, kBig, "optimisation steps"),
      integer("train.batch_size", AT(train.batch_size), 1, 65536,
              "images per forward/backward pass PER RANK (global batch = batch_size x ranks unless global_batch)"),
      integer("train.global_batch", AT(train.global_batch), 0, kBig,
              "images per optimiser step over all ranks, by gradient accumulation (0 = batch_size x ranks)"),
      text("train.device", AT(train.device),
           "auto (a GPU when LibTorch sees one, else cpu), cpu, cuda (cuda:<local rank> per rank) or cuda:N"),
      integer("train.threads", AT(train.threads), 1, 1024, "LibTorch intra-op threads"),
      choice<trainer::Precision>("train.precision", AT(train.precision),
             {{"fp32", trainer::Precision::FP32}, {"bf16", trainer::Precision::BF16}, {"fp16", trainer::Precision::FP16}},
             "forward passes in fp32, or under bf16 / fp16 autocast (fp16: CUDA only, with loss scaling; weights, "
             "Adam, checkpoints stay fp32)"),
      choice<trainer::LossScale>("train.loss_scale", AT(train.loss_scale),
             {{"auto", trainer::LossScale::Auto}, {"dynamic", trainer::LossScale::Dynamic},
              {"none", trainer::LossScale::None}},
             "dynamic loss scaling as GradScaler does it (auto: with fp16 only); overflowing steps are skipped"),
      real("train.loss_scale_init", AT(train.loss_scale_init), 1e-30, 1e30, "the first loss scale (2^16)"),
      integer("train.loss_scale_growth_interval", AT(train.loss_scale_growth_interval), 1, kBig,
              "steps without overflow before the loss scale doubles"),
      boolean("train.channels_last", AT(train.channels_last),
              "weights and batches in channels-last (NHWC) memory order"),
      boolean("train.tf32", AT(train.tf32), "TF32 tensor-core math for fp32 convolutions and matmuls on GPUs"),
      boolean("train.deterministic", AT(train.deterministic),
              "deterministic cuDNN and algorithms (a GPU run then resumes bit-identically; slower)"),
      integer("train.seed", AT(train.seed), 0, kBig, "seed of weights, data order, augmentation"),
      integer("train.log_every", AT(train.log_every), 1, kBig, "steps between log lines"),
      integer("train.sample_every", AT(train.sample_every), 1, kBig, "steps between sample grids"),
      integer("train.sample_count", AT(train.sample_count), 1, 64, "pairs per sample grid"),
      integer("checkpoint.every_steps", AT(checkpoint.every_steps), 1, kBig, "steps between checkpoints"),
      integer("checkpoint.keep", AT(checkpoint.keep), 1, kBig, "newest checkpoints kept"),
      integer("checkpoint.keep_every", AT(checkpoint.keep_every), 0, kBig,
              "also keep every step that is a multiple of this (0 = none)"),
      boolean("checkpoint.async", AT(checkpoint.async), "write checkpoints in the background"),
      choice<checkpoint::WhenBusy>("checkpoint.when_busy", AT(checkpoint.when_busy),
             {{"wait", checkpoint::WhenBusy::Wait}, {"skip", checkpoint::WhenBusy::Skip}},
             "a checkpoint due while the previous one is still being written"),
      text("checkpoint.hook", AT(checkpoint.hook),
           "shell command run after each checkpoint ($ATELIER_CHECKPOINT, $ATELIER_STEP); empty = none"),
      integer("checkpoint.hook_every_steps", AT(checkpoint.hook_every_steps), 0, kBig,
              "run the hook only for steps that are multiples of this (0 = every checkpoint)"),
      choice<std::string>("dist.backend", AT(dist.backend), {{"auto", "auto"}, {"mpi", "mpi"}, {"nccl", "nccl"}},
             "collectives backend (auto: NCCL for CUDA tensors, MPI for CPU ones)"),
      real("dist.bucket_mb", AT(dist.bucket_mb), 1e-3, 4096, "gradient all-reduce bucket size (MiB)"),
      real("dist.timeout_s", AT(dist.timeout_s), 0.1, 86400, "a collective running longer aborts the job"),
      choice<comm::Compression>("dist.compression", AT(dist.compression),
             {{"none", comm::Compression::None}, {"bf16", comm::Compression::BF16},
              {"fp16", comm::Compression::FP16}},
             "wire format of gradient buckets"),
      integer("dist.verify_every", AT(dist.verify_every), 0, kBig,
              "steps between checks that replicas are bit-identical (0 = off)"),
      integer("eval.every_steps", AT(eval.every_steps), 0, kBig,
              "steps between evaluations on the held-out set (0 = off; also after the last step)"),
      list("eval.content", AT(eval.content), "held-out content image folders or files"),
      list("eval.style", AT(eval.style), "held-out style image folders or files"),
      integer("eval.pairs", AT(eval.pairs), 0, kBig, "(content, style) pairs evaluated (0 = every pair)"),
  };
}

const std::vector<Field>& fields() {
  static const std::vector<Field> all = make_fields();
  return all;
}

std::string section_of(const std::string& key) { return key.substr(0, key.find('.')); }

std::string keys_in(const std::string& section) {
  std::string out;
  for (const auto& f : fields())
    if (section_of(f.key) == section) out += (out.empty() ? "" : ", ") + f.key.substr(section.size() + 1);
  return out;
}

const Field* find_field(const std::string& key) {
  for (const auto& f : fields())
    if (f.key == key) return &f;
  return nullptr;
}

std::vector<std::string> sections() {
  std::vector<std::string> out;
  for (const auto& f : fields())
    if (std::find(out.begin(), out.end(), section_of(f.key)) == out.end()) out.push_back(section_of(f.key));
  return out;
}

std::string unknown_key_message(const std::string& key, const std::string& origin) {
  const auto section = section_of(key);
  const auto known = sections();
  if (key.find('.') == std::string::npos || std::find(known.begin(), known.end(), section) == known.end()) {
    std::string list;
    for (const auto& s : known) list += (list.empty() ? "" : ", ") + s;
    return "unknown section '" + section + "' in " + origin + " (sections: " + list + ")";
  }
  return "unknown key '" + key + "' in " + origin + " (keys of " + section + ": " + keys_in(section) + ")";
}

// Checks that hold between keys; each message names the keys involved.
// model.encoder squeezenet1_1: its layers exist, no VGG file is given.
void check_squeezenet(const models::GeneratorOptions& g) {
  if (!g.encoder.weights_path.empty())
    throw ConfigError("model.vgg_weights is set but model.encoder is squeezenet1_1: the VGG file would not be used "
                      "(set model.encoder: vgg19, or leave model.vgg_weights empty)");
  if (!g.decoder.weights_path.empty())
    throw ConfigError("model.decoder_weights is AdaIN's VGG decoder; model.encoder squeezenet1_1 trains a decoder of "
                      "its own (leave model.decoder_weights empty)");
  if (!g.encoder.squeezenet_dir.empty() && !std::filesystem::is_directory(g.encoder.squeezenet_dir))
    throw ConfigError("model.squeezenet_dir: directory '" + g.encoder.squeezenet_dir + "' does not exist");
  if (g.encoder.style_layers.empty()) throw ConfigError("model.style_layers: name at least one layer");
  try {
    models::squeezenet_layer(g.encoder.content_layer);
  } catch (const models::ModelError& e) {
    throw ConfigError(std::string("model.content_layer: ") + e.what());
  }
  for (const auto& layer : g.encoder.style_layers) {
    try {
      models::squeezenet_layer(layer);
    } catch (const models::ModelError& e) {
      throw ConfigError(std::string("model.style_layers: ") + e.what());
    }
  }
}

void check_consistency(const Config& c) {
  const auto& aug = c.data.augment;
  if (aug.crop_size > aug.load_size)
    throw ConfigError("data.crop_size (" + std::to_string(aug.crop_size) + ") must not exceed data.load_size (" +
                      std::to_string(aug.load_size) + ")");
  if (aug.crop_size % 8 != 0)
    throw ConfigError("data.crop_size: " + std::to_string(aug.crop_size) +
                      " is not a multiple of 8 (the encoder downsamples by 8)");
  if (c.data.source == "service") {
    if (c.data.servers.empty()) throw ConfigError("data.servers: data.source service needs at least one host:port");
    for (const auto& server : c.data.servers) {
      const auto colon = server.rfind(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == server.size())
        throw ConfigError("data.servers: '" + server + "' is not host:port");
    }
    if (c.data.token_file.empty()) throw ConfigError("data.token_file: data.source service needs the job's token file");
  }
  if (!comm::valid_device_name(c.train.device))
    throw ConfigError("train.device: '" + c.train.device + "' is not one of auto, cpu, cuda, cuda:N");
  if (c.train.global_batch % c.train.batch_size != 0)
    throw ConfigError("train.global_batch (" + std::to_string(c.train.global_batch) +
                      ") must be a multiple of train.batch_size (" + std::to_string(c.train.batch_size) +
                      "): each rank accumulates whole micro-batches");
  const auto& g = c.model.generator;
  if (g.encoder.network == "squeezenet1_1") {
    check_squeezenet(g);
    return;
  }
  if (g.decoder.width != g.encoder.width)
    throw ConfigError("model.decoder_width (" + std::to_string(g.decoder.width) +
                      ") must equal model.encoder_width (" + std::to_string(g.encoder.width) + ")");
  if (!g.decoder.weights_path.empty()) {
    if (c.model.family != "adain")
      throw ConfigError("model.decoder_weights is for model.family adain, not " + c.model.family);
    if (!std::filesystem::is_regular_file(g.decoder.weights_path))
      throw ConfigError("model.decoder_weights: file '" + g.decoder.weights_path + "' does not exist");
  }
  if (!g.encoder.weights_path.empty()) {
    if (g.encoder.width != 64)
      throw ConfigError("model.vgg_weights needs model.encoder_width 64 (real VGG-19), not " +
                        std::to_string(g.encoder.width));
    if (!std::filesystem::is_regular_file(g.encoder.weights_path))
      throw ConfigError("model.vgg_weights: file '" + g.encoder.weights_path + "' does not exist");
  }
}

void check_eval(const Config& c) {
  if (c.eval.every_steps == 0) return;
  if (c.eval.content.empty() || c.eval.style.empty())
    throw ConfigError("eval.every_steps is " + std::to_string(c.eval.every_steps) +
                      ": set eval.content and eval.style to held-out image folders or files (or every_steps to 0)");
}

// CycleGAN's paper defaults (Zhu et al. 2017) for the keys a cyclegan
// configuration leaves out: LSGAN, a constant learning rate for the first
// half of the steps then linear decay to zero (its 100 + 100 epochs), 9
// residual blocks from 256 px and 6 below.
void apply_family_defaults(YAML::Node& root) {
  const YAML::Node& r = root;
  const auto given = [&r](const char* section, const char* key) { return r[section] && r[section][key]; };
  if (!given("model", "family") || r["model"]["family"].as<std::string>("") != "cyclegan") return;
  const auto value_or = [&](const char* section, const char* key, int64_t fallback) {
    if (!given(section, key)) return fallback;
    try {
      return r[section][key].as<int64_t>();
    } catch (const YAML::Exception&) {
      return fallback;  // the key's own check reports the bad value
    }
  };
  if (!given("loss", "adversarial")) root["loss"]["adversarial"] = "lsgan";
  if (!given("optim", "schedule")) root["optim"]["schedule"] = "linear";
  if (!given("optim", "decay_start"))
    root["optim"]["decay_start"] = value_or("train", "steps", trainer::TrainOptions{}.steps) / 2;
  if (!given("model", "resnet_blocks"))
    root["model"]["resnet_blocks"] =
        value_or("data", "crop_size", data::AugmentOptions{}.crop_size) >= 256 ? 9 : 6;
}

// model.vgg_layout: what the weights file is (so config.yaml names it and a
// checkpoint's encoder is rebuilt in its layout without the file); an
// explicit layout must agree with the file.
void resolve_vgg_layout(models::EncoderOptions& encoder) {
  if (encoder.weights_path.empty()) {
    if (encoder.layout == "auto") encoder.layout = "torchvision";
    return;
  }
  std::string found;
  try {
    found = models::detect_vgg_layout(encoder.weights_path);
  } catch (const models::ModelError& e) {
    throw ConfigError(std::string("model.vgg_weights: ") + e.what());
  }
  if (encoder.layout != "auto" && encoder.layout != found)
    throw ConfigError("model.vgg_layout is " + encoder.layout + " but model.vgg_weights '" + encoder.weights_path +
                      "' is a " + models::describe_vgg_layout(found) + " state dict (" + found + ")");
  encoder.layout = found;
}

// A mapping key as text; keys that are sequences or mappings are refused.
std::string key_text(const YAML::Node& key, const std::string& origin) {
  if (!key.IsScalar()) throw ConfigError(origin + ": a key must be a plain name, got '" + show(key) + "'");
  return key.Scalar();
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("--set expects key=value, got '" + assignment + "'");
  const auto key = assignment.substr(0, eq);
  if (!find_field(key)) throw ConfigError(unknown_key_message(key, "--set"));
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    throw ConfigError("--set " + key + ": value is not valid YAML: " + e.msg);
  }
  const auto dot = key.find('.');
  const auto section_name = key.substr(0, dot);
  YAML::Node section = root[section_name];
  if (section.IsDefined() && !section.IsNull() && !section.IsMap())
    throw ConfigError("--set " + key + ": section '" + section_name + "' of the config is not a mapping of keys");
  section[key.substr(dot + 1)] = value;
}

}  // namespace

const std::string& default_config_yaml() {
  static const std::string text = kDefaultConfigYaml;
  return text;
}

Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                    const std::string& origin) {
  YAML::Node root;
  try {
    root = yaml_text.empty() ? YAML::Node(YAML::NodeType::Map) : YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ": not valid YAML: " + e.what());
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError(origin + ": expected a mapping of sections at the top level");
  Config config;
  try {
    for (const auto& assignment : overrides) apply_override(root, assignment);
    apply_family_defaults(root);
    for (const auto& section : root) {
      const auto name = key_text(section.first, origin);
      if (!section.second.IsMap()) {
        if (keys_in(name).empty()) throw ConfigError(unknown_key_message(name, origin));
        throw ConfigError(origin + ": section '" + name + "' must be a mapping of keys");
      }
      for (const auto& entry : section.second) {
        const auto key = name + "." + key_text(entry.first, origin);
        const Field* field = find_field(key);
        if (!field) throw ConfigError(unknown_key_message(key, origin));
        field->set(config, entry.second);
      }
    }
  } catch (const YAML::Exception& e) {
    // Every value is read through checked accessors; this is the net under
    // yaml-cpp's own throws for shapes none of them expected.
    throw ConfigError(origin + ": " + e.what());
  }
  check_consistency(config);
  check_eval(config);
  resolve_vgg_layout(config.model.generator.encoder);
  auto& decoder = config.model.generator.decoder;
  if (decoder.output == "auto") decoder.output = decoder.weights_path.empty() ? "tanh" : "linear";
  return config;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (path.empty()) return parse_config(default_config_yaml(), overrides, "the embedded default config");
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read config file '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), overrides, path);
}

std::string dump_config(const Config& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& section : sections()) {
    out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    for (const auto& f : fields()) {
      if (section_of(f.key) != section) continue;
      out << YAML::Key << f.key.substr(section.size() + 1) << YAML::Value;
      const auto value = f.get(config);
      if (value.IsSequence()) out << YAML::Flow;
      out << value << YAML::Comment(f.help);
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string describe_config_keys() {
  std::ostringstream out;
  for (const auto& f : fields()) out << "  " << f.key << std::string(f.key.size() < 26 ? 26 - f.key.size() : 1, ' ')
                                     << f.help << "\n";
  return out.str();
}

}  // namespace atelier::launcher
