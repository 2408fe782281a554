// Pictures of explanations (OpenCV): heat maps over their input with a
// colour bar, channel grids, strips. Private to explain/.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

namespace atelier::explain {

// [3, H, W] in [-1, 1] -> BGR uint8, upscaled (nearest) to `display` px wide.
cv::Mat to_bgr(const torch::Tensor& image, int display);

// `map` [h, w] (any range) coloured with a perceptual colour map, laid over
// a grey copy of `image`, with a title above and a colour bar naming the
// map's minimum and maximum at the right.
cv::Mat heat_overlay(const torch::Tensor& image, const torch::Tensor& map, const std::string& title, int display);

// `maps` [k, h, w] each scaled to its own range, side by side, labelled.
cv::Mat map_grid(const torch::Tensor& maps, const std::vector<std::string>& labels, int cell);

// Images side by side (same height), each with a label underneath.
cv::Mat labelled_strip(const std::vector<cv::Mat>& images, const std::vector<std::string>& labels);

// A table of numbers [rows][cols] as coloured cells with row and column labels.
cv::Mat value_table(const std::vector<std::vector<double>>& values, const std::vector<std::string>& row_labels,
                    const std::string& title);

// Lines y[i](x) with a legend entry each, axes labelled with their ranges.
cv::Mat line_plot(const std::vector<double>& x, const std::vector<std::vector<double>>& ys,
                  const std::vector<std::string>& legend, const std::string& title);

// Writes a PNG; throws ExplainError naming the file when it cannot.
void write_png(const std::filesystem::path& path, const cv::Mat& image);

}  // namespace atelier::explain
