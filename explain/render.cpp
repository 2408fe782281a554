// Heat maps, grids and strips drawn with OpenCV.
#include "explain/render.h"

#include <algorithm>
#include <cstdio>
#include <opencv2/imgproc.hpp>

#include "data/data.h"
#include "explain/explain.h"

namespace atelier::explain {
namespace {

constexpr int kBarWidth = 16;
constexpr int kTitleHeight = 22;
const cv::Scalar kWhite(255, 255, 255), kInk(40, 40, 40);
// Viridis-like maps read correctly in greyscale and for colour-blind
// readers, unlike jet.
constexpr int kColormap = cv::COLORMAP_VIRIDIS;

std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

void put_text(cv::Mat& img, const std::string& text, cv::Point at, double scale = 0.4) {
  cv::putText(img, text, at, cv::FONT_HERSHEY_SIMPLEX, scale, kInk, 1, cv::LINE_AA);
}

// [h, w] float -> 8-bit 0..255 over its own [min, max] (all 0 when flat).
cv::Mat to_gray8(const torch::Tensor& map, double lo, double hi) {
  auto m = map.detach().to(torch::kCPU, torch::kFloat).contiguous();
  m = hi > lo ? (m - lo) / (hi - lo) : torch::zeros_like(m);
  m = (m.clamp(0, 1) * 255).round().to(torch::kUInt8).contiguous();
  return cv::Mat(static_cast<int>(m.size(0)), static_cast<int>(m.size(1)), CV_8UC1, m.data_ptr()).clone();
}

cv::Mat resize_to(const cv::Mat& m, int width, int height, int interpolation) {
  cv::Mat out;
  cv::resize(m, out, cv::Size(width, height), 0, 0, interpolation);
  return out;
}

cv::Mat colour_bar(int height, double lo, double hi) {
  cv::Mat ramp(height, kBarWidth, CV_8UC1);
  for (int y = 0; y < height; ++y) ramp.row(y).setTo(255 * (height - 1 - y) / std::max(1, height - 1));
  cv::Mat bar;
  cv::applyColorMap(ramp, bar, kColormap);
  // Room for labels like "-1.23e-05".
  cv::Mat panel(height, kBarWidth + 70, CV_8UC3, kWhite);
  bar.copyTo(panel(cv::Rect(0, 0, kBarWidth, height)));
  put_text(panel, short_number(hi), {kBarWidth + 3, 10}, 0.35);
  put_text(panel, short_number(lo), {kBarWidth + 3, height - 3}, 0.35);
  return panel;
}

cv::Mat with_title(const cv::Mat& body, const std::string& title) {
  cv::Mat out(body.rows + kTitleHeight, body.cols, CV_8UC3, kWhite);
  body.copyTo(out(cv::Rect(0, kTitleHeight, body.cols, body.rows)));
  put_text(out, title, {4, 15}, 0.45);
  return out;
}

}  // namespace

cv::Mat to_bgr(const torch::Tensor& image, int display) {
  auto t = ((image.detach().to(torch::kCPU, torch::kFloat).clamp(-1, 1) + 1) * 127.5).round().to(torch::kUInt8);
  t = t.permute({1, 2, 0}).contiguous();
  cv::Mat rgb(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_8UC3, t.data_ptr());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  const int height = display * bgr.rows / bgr.cols;
  return resize_to(bgr, display, height, cv::INTER_NEAREST);
}

cv::Mat heat_overlay(const torch::Tensor& image, const torch::Tensor& map, const std::string& title, int display) {
  const auto base = to_bgr(image, display);
  const double lo = map.min().item<double>(), hi = map.max().item<double>();
  cv::Mat coloured;
  cv::applyColorMap(resize_to(to_gray8(map, lo, hi), base.cols, base.rows, cv::INTER_NEAREST), coloured, kColormap);
  cv::Mat grey, grey3;
  cv::cvtColor(base, grey, cv::COLOR_BGR2GRAY);
  cv::cvtColor(grey, grey3, cv::COLOR_GRAY2BGR);
  cv::Mat blended;
  // Enough of the input shows through to locate the hot spots on it.
  cv::addWeighted(grey3, 0.35, coloured, 0.65, 0, blended);
  cv::Mat body;
  cv::hconcat(blended, colour_bar(blended.rows, lo, hi), body);
  return with_title(body, title);
}

cv::Mat map_grid(const torch::Tensor& maps, const std::vector<std::string>& labels, int cell) {
  std::vector<cv::Mat> tiles;
  for (int64_t i = 0; i < maps.size(0); ++i) {
    const auto m = maps[i];
    cv::Mat coloured;
    cv::applyColorMap(resize_to(to_gray8(m, m.min().item<double>(), m.max().item<double>()), cell, cell,
                                cv::INTER_NEAREST),
                      coloured, kColormap);
    tiles.push_back(coloured);
  }
  return labelled_strip(tiles, labels);
}

cv::Mat labelled_strip(const std::vector<cv::Mat>& images, const std::vector<std::string>& labels) {
  if (images.empty()) throw ExplainError("labelled_strip needs at least one image");
  constexpr int kGap = 4, kLabel = 16;
  int width = kGap;
  for (const auto& img : images) width += img.cols + kGap;
  const int height = images[0].rows;
  cv::Mat out(height + kLabel, width, CV_8UC3, kWhite);
  int x = kGap;
  for (size_t i = 0; i < images.size(); ++i) {
    images[i].copyTo(out(cv::Rect(x, 0, images[i].cols, std::min(height, images[i].rows))));
    if (i < labels.size()) put_text(out, labels[i], {x, height + 12}, 0.35);
    x += images[i].cols + kGap;
  }
  return out;
}

cv::Mat value_table(const std::vector<std::vector<double>>& values, const std::vector<std::string>& row_labels,
                    const std::string& title) {
  constexpr int kCell = 28, kLabelWidth = 64;
  size_t cols = 0;
  double hi = 0;
  for (const auto& row : values) {
    cols = std::max(cols, row.size());
    for (double v : row) hi = std::max(hi, v);
  }
  cv::Mat body(static_cast<int>(values.size()) * kCell, kLabelWidth + static_cast<int>(cols) * kCell, CV_8UC3, kWhite);
  for (size_t r = 0; r < values.size(); ++r) {
    if (r < row_labels.size()) put_text(body, row_labels[r], {2, static_cast<int>(r) * kCell + 18}, 0.35);
    for (size_t c = 0; c < values[r].size(); ++c) {
      cv::Mat level(1, 1, CV_8UC1, cv::Scalar(hi > 0 ? 255 * values[r][c] / hi : 0));
      cv::Mat colour;
      cv::applyColorMap(level, colour, kColormap);
      const cv::Rect box(kLabelWidth + static_cast<int>(c) * kCell, static_cast<int>(r) * kCell, kCell - 1, kCell - 1);
      body(box).setTo(colour.at<cv::Vec3b>(0, 0));
    }
  }
  cv::Mat out;
  cv::hconcat(body, colour_bar(body.rows, 0, hi), out);
  return with_title(out, title);
}

cv::Mat line_plot(const std::vector<double>& x, const std::vector<std::vector<double>>& ys,
                  const std::vector<std::string>& legend, const std::string& title) {
  constexpr int kW = 320, kH = 180, kLeft = 44, kBottom = 20, kTop = 6, kRight = 8;
  if (x.size() < 2) throw ExplainError("line_plot needs at least two points");
  const auto [x_lo, x_hi] = std::minmax_element(x.begin(), x.end());
  double y_lo = 0, y_hi = 0;
  for (const auto& y : ys)
    for (double v : y) y_lo = std::min(y_lo, v), y_hi = std::max(y_hi, v);
  if (y_hi <= y_lo) y_hi = y_lo + 1;
  cv::Mat plot(kH, kW, CV_8UC3, kWhite);
  const auto px = [&](double v) { return kLeft + static_cast<int>((v - *x_lo) / (*x_hi - *x_lo) * (kW - kLeft - kRight)); };
  const auto py = [&](double v) { return kH - kBottom - static_cast<int>((v - y_lo) / (y_hi - y_lo) * (kH - kBottom - kTop)); };
  cv::rectangle(plot, {kLeft, kTop}, {kW - kRight, kH - kBottom}, cv::Scalar(180, 180, 180));
  put_text(plot, short_number(y_hi), {2, kTop + 10}, 0.35);
  put_text(plot, short_number(y_lo), {2, kH - kBottom}, 0.35);
  put_text(plot, short_number(*x_lo), {kLeft, kH - 5}, 0.35);
  put_text(plot, short_number(*x_hi), {kW - kRight - 30, kH - 5}, 0.35);
  const cv::Scalar colours[] = {{180, 90, 30}, {40, 120, 230}, {60, 160, 60}, {150, 60, 150}};
  for (size_t i = 0; i < ys.size(); ++i) {
    const auto colour = colours[i % 4];
    for (size_t k = 1; k < ys[i].size() && k < x.size(); ++k)
      cv::line(plot, {px(x[k - 1]), py(ys[i][k - 1])}, {px(x[k]), py(ys[i][k])}, colour, 2, cv::LINE_AA);
    if (i < legend.size()) {
      cv::line(plot, {kLeft + 8, kTop + 10 + 14 * static_cast<int>(i)}, {kLeft + 24, kTop + 10 + 14 * static_cast<int>(i)}, colour, 2);
      put_text(plot, legend[i], {kLeft + 28, kTop + 14 + 14 * static_cast<int>(i)}, 0.35);
    }
  }
  return with_title(plot, title);
}

void write_png(const std::filesystem::path& path, const cv::Mat& image) {
  if (image.empty() || (image.type() != CV_8UC3 && image.type() != CV_8UC1)) {
    throw ExplainError("cannot write '" + path.string() + "': not an 8-bit BGR or grey picture");
  }
  cv::Mat pixels;
  if (image.channels() == 3) {
    cv::cvtColor(image, pixels, cv::COLOR_BGR2RGB);  // OpenCV draws BGR; files hold RGB
  } else {
    pixels = image.clone();  // continuous
  }
  const torch::Tensor hwc =
      torch::from_blob(pixels.data, {pixels.rows, pixels.cols, pixels.channels()}, torch::kUInt8);
  try {
    data::write_image_file(path.string(), hwc);
  } catch (const data::DataError& e) {
    throw ExplainError(e.what());
  }
}

}  // namespace atelier::explain
