// What a run writes besides checkpoints: metrics.jsonl, sample grids and the
// progress display. Private to trainer/.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace atelier::trainer {

class EventWriter;

// Appends one JSON object per line to metrics.jsonl, flushed per line so a
// killed run keeps everything up to its last step.
class MetricsLog {
 public:
  explicit MetricsLog(const std::filesystem::path& path);
  void write(int64_t step, const std::map<std::string, double>& values);

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

// data.audit: every sample this rank trains on, appended to
// <dir>/rank-<r>.jsonl as one JSON line per micro-batch:
//   {"step": s, "micro": j, "rank": r, "world_size": w, "first_sample": n,
//    "content_crc32c": [...], "style_crc32c": [...]}
// (rows are global samples n, n+1, ...; each CRC-32C is of that row's float
// pixels as trained on). Flushed per line.
class SampleAudit {
 public:
  SampleAudit(const std::filesystem::path& dir, int rank, int world_size);
  void record(int64_t step, int64_t micro, const torch::Tensor& content, const torch::Tensor& style,
              int64_t first_sample);
  // Removes the lines of steps after `step` from every rank's file in
  // `dir`: a job that stopped between checkpoints trained them, and the job
  // resuming from `step` trains them again. Each file is replaced atomically.
  static void forget_after(const std::filesystem::path& dir, int64_t step);

 private:
  std::filesystem::path path_;
  std::ofstream out_;
  int rank_;
  int world_size_;
};

// Writes a grid with one row per pair and the given columns side by side
// (e.g. content | style | stylised) as samples/step-<N>.png and as the
// TensorBoard image `tag`. Tensors are [B, 3, S, S] in [-1, 1]. Returns the
// PNG path.
std::filesystem::path write_sample_grid(const std::filesystem::path& samples_dir, int64_t step,
                                        const std::vector<torch::Tensor>& columns, const std::string& tag,
                                        EventWriter& events);

// Encodes [3, H, W] in [-1, 1] as PNG bytes.
std::string encode_png(const torch::Tensor& image);

// Step rate and ETA over a sliding window; prints a progress line in place
// when stdout is a terminal.
class Progress {
 public:
  Progress(int64_t first_step, int64_t total_steps, int64_t batch_size);
  // Records that `step` (1-based count of completed steps) finished.
  void finished(int64_t step);
  double images_per_second() const { return images_per_second_; }
  double eta_seconds() const;
  // Redraws the terminal line; a no-op when stdout is not a terminal.
  void draw(const std::string& losses) const;
  static bool interactive();

 private:
  using Clock = std::chrono::steady_clock;
  int64_t total_steps_;
  int64_t batch_size_;
  int64_t step_ = 0;
  int64_t window_start_step_;
  Clock::time_point window_start_;
  double images_per_second_ = 0;
};

}  // namespace atelier::trainer
