// Building blocks shared by the networks of models/. Private to models/.
#pragma once

#include "models/models.h"

namespace atelier::models {

// Appends the normalisation layer `norm` over `channels` (nothing for None).
// Instance norm is non-affine and keeps no running statistics, as in
// pix2pix/CycleGAN: every image is normalised by its own statistics in
// training and evaluation.
void add_norm(torch::nn::Sequential& layers, Norm norm, int64_t channels);

}  // namespace atelier::models
