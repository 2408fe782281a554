// The tiny networks of the in-process step tests (width 4, one residual
// block): a GAN step takes milliseconds. Callers set what they compare
// (pool size, Adam's eps, precision) on top.
#pragma once

#include <string>

#include "trainer/trainer.h"

namespace atelier::testing_support {

inline trainer::Config tiny_config(const std::string& family) {
  trainer::Config c;
  c.model.family = family;
  c.model.generator.encoder.width = 4;
  c.model.generator.decoder.width = 4;
  c.model.resnet = {4, 1};
  c.model.discriminator.width = 4;
  c.train.threads = 1;
  return c;
}

}  // namespace atelier::testing_support
