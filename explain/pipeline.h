// One (content, style) pair being explained: what every method reads and
// where it writes. Private to explain/.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "explain/explain.h"

namespace atelier::explain {

struct PairWork {
  Networks nets;                               // the checkpoint's networks (eval mode)
  ImageFunction g;                             // nets.generator as an ImageFunction
  models::GeneratorOptions generator_options;  // to build a randomised twin
  models::StyleStatistics style_statistics = models::StyleStatistics::MeanStd;
  torch::Tensor content, style;                // [3, S, S] in [-1, 1]
  torch::Tensor output;                        // G(content, style), set by explain_pair
  Region region;                               // the "chosen region" of region saliency
  std::filesystem::path dir;                   // out/pair-<p>/
  nlohmann::json section;                      // the running method's numbers
  std::vector<std::string> images;             // its pictures, relative to the output root

  // Writes dir/file and lists it in `images`.
  void image(const std::string& file, const cv::Mat& picture);
};

// Runs the `wanted` methods (all when empty) and returns the pair's summary as JSON text.
std::string explain_pair(PairWork& work, const std::vector<std::string>& wanted);

// Reads a whole text file; empty when it does not exist.
std::string read_text(const std::filesystem::path& path);

}  // namespace atelier::explain
