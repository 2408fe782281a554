// The subcommands of `atelier`, one file each. Private to launcher/.
//
// Each add_*_command registers its subcommand and options on `app`; when the
// subcommand is parsed, its callback runs it and stores its exit code in
// `exit_code`. Errors are thrown, and turned into a message and an exit code
// in one place (run() in cli.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>

#include "comm/comm.h"
#include "models/models.h"
#include "trainer/trainer.h"

namespace atelier::launcher {

// Exit codes, documented in the README.
constexpr int kExitFailure = 1;  // the job failed while running
constexpr int kExitUsage = 2;    // bad command line or configuration

void add_train_command(CLI::App& app, int& exit_code);
void add_checkpoints_command(CLI::App& app, int& exit_code);
void add_launch_command(CLI::App& app, int& exit_code);
void add_submit_command(CLI::App& app, int& exit_code);
void add_status_command(CLI::App& app, int& exit_code);
void add_explain_command(CLI::App& app, int& exit_code);

void add_stylize_command(CLI::App& app, int& exit_code);
void add_export_command(CLI::App& app, int& exit_code);
void add_shard_command(CLI::App& app, int& exit_code);
void add_serve_data_command(CLI::App& app, int& exit_code);
void add_evaluate_command(CLI::App& app, int& exit_code);

// The configuration a checkpoint directory was trained with (its
// config.yaml), model.vgg_weights cleared: the checkpoint holds the encoder.
// Throws naming the file when it is missing or unusable.
trainer::Config checkpoint_config(const std::filesystem::path& checkpoint_dir);

// The checkpoint's generator, after checkpoint::verify, in eval mode.
// Throws naming the checkpoint when it is not an adain model, does not
// verify, or its generator.pt does not fit the configuration.
models::AdaINGenerator load_generator(const std::filesystem::path& checkpoint_dir, const trainer::Config& config);

// AdaIN's pretrained model straight from its files, no checkpoint and no
// training: a full-width VGG-19 encoder from `vgg_weights` (either layout,
// detected) and the decoder from AdaIN's `decoder_weights`, in eval mode.
// Throws naming the file that cannot be read or does not fit.
models::AdaINGenerator load_pretrained_generator(const std::string& vgg_weights, const std::string& decoder_weights);

// A cyclegan checkpoint's generator for `direction`: "a2b" (G_A, content
// domain to style domain) or "b2a" (G_B), verified, in eval mode. Throws
// ConfigError for another direction, and naming the checkpoint when it is
// not a cyclegan model or does not load.
models::ResnetGenerator load_cyclegan_generator(const std::filesystem::path& checkpoint_dir,
                                                const trainer::Config& config, const std::string& direction);

// Both of a cyclegan checkpoint's generators, the checkpoint verified once.
struct CycleGANGenerators {
  models::ResnetGenerator a2b;
  models::ResnetGenerator b2a;
};
CycleGANGenerators load_cyclegan_generators(const std::filesystem::path& checkpoint_dir,
                                            const trainer::Config& config);

// --config FILE and repeatable --set KEY=VALUE, the same on every command
// that builds a training configuration.
void add_config_options(CLI::App& cmd, std::string& config_path, std::vector<std::string>& overrides);

// --device on the commands that run a model (stylize, evaluate, explain).
void add_device_option(CLI::App& cmd, std::string& device);

// comm::choose_device for this process's environment and machine; its
// refusal as a ConfigError naming `option` (train.device, --device).
comm::DeviceChoice resolve_device(const std::string& requested, const std::string& option);

// Logging pattern with this process's rank, at `level`.
void set_up_logging(const std::string& level);

}  // namespace atelier::launcher
