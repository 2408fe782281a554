// The tiny training run the multi-process tests start through the binary
// (32 px crops, width 4: a step takes milliseconds), and the parameters of a
// checkpoint it wrote, for bit-for-bit comparisons.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "models/models.h"

namespace atelier::testing_support {

// ` --set key=value ...` of a tiny `atelier train` run named `name` under
// root/runs, reading root/content and root/style.
inline std::string tiny_train_args(const std::filesystem::path& root, const std::string& name, int steps, int batch,
                                   int checkpoint_every = 1000) {
  const std::vector<std::string> sets = {
      "run.dir=" + (root / "runs").string(), "run.name=" + name, "run.log_level=warn",
      "data.content=" + (root / "content").string(), "data.style=" + (root / "style").string(),
      "data.load_size=40", "data.crop_size=32", "data.workers=1", "model.encoder_width=4",
      "model.decoder_width=4", "model.disc_width=4", "train.threads=1", "train.steps=" + std::to_string(steps),
      "train.batch_size=" + std::to_string(batch), "train.sample_every=1000", "train.sample_count=1",
      "checkpoint.every_steps=" + std::to_string(checkpoint_every), "dist.timeout_s=120"};
  std::string args;
  for (const auto& s : sets) args += " --set " + s;
  return args;
}

// G's and D's parameters in a checkpoint of networks built with these
// options, by name.
inline std::map<std::string, torch::Tensor> checkpoint_parameters(const std::filesystem::path& ckpt,
                                                                  const models::GeneratorOptions& go,
                                                                  const models::DiscriminatorOptions& dopt) {
  models::AdaINGenerator g(go);
  models::PatchDiscriminator d(dopt);
  torch::load(g, (ckpt / "generator.pt").string());
  torch::load(d, (ckpt / "discriminator.pt").string());
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : g->named_parameters()) out["G." + p.key()] = p.value();
  for (const auto& p : d->named_parameters()) out["D." + p.key()] = p.value();
  return out;
}

// The same for a checkpoint of the width-4 run of tiny_train_args.
inline std::map<std::string, torch::Tensor> checkpoint_parameters(const std::filesystem::path& ckpt) {
  models::GeneratorOptions go;
  go.encoder.width = go.decoder.width = 4;
  models::DiscriminatorOptions dopt;
  dopt.width = 4;
  return checkpoint_parameters(ckpt, go, dopt);
}

}  // namespace atelier::testing_support
