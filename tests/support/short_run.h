// A short training run of a Config built by the test: the pattern-image
// folders root/content and root/style, 32 px crops of 40 px images, batch 2,
// one data worker, sample grids every 4 steps, under root/runs/<name>.
#pragma once

#include <filesystem>
#include <string>

#include "trainer/trainer.h"

namespace atelier::testing_support {

inline trainer::Config short_run(trainer::Config c, const std::filesystem::path& root, const std::string& name,
                                 int64_t steps) {
  c.run = {name, (root / "runs").string(), "warn"};
  c.data.content = {(root / "content").string()};
  c.data.style = {(root / "style").string()};
  c.data.augment = {40, 32, true};
  c.data.workers = 1;
  c.train.steps = steps;
  c.train.batch_size = 2;
  c.train.sample_every = 4;
  c.train.sample_count = 2;
  return c;
}

}  // namespace atelier::testing_support
