#include "trainer/run_files.h"

#include <unistd.h>

#include <cstdio>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>
#include <torch/torch.h>

#include "data/data.h"
#include "trainer/event_file.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace fs = std::filesystem;

MetricsLog::MetricsLog(const fs::path& path) : path_(path), out_(path, std::ios::app) {
  if (!out_) throw TrainError("cannot open metrics file '" + path.string() + "'");
}

void MetricsLog::write(int64_t step, const std::map<std::string, double>& values) {
  nlohmann::json line = {{"step", step},
                         {"time", std::chrono::duration<double>(
                                      std::chrono::system_clock::now().time_since_epoch()).count()}};
  for (const auto& [key, value] : values) line[key] = value;
  out_ << line.dump() << "\n";
  out_.flush();
  if (!out_) throw TrainError("cannot write metrics file '" + path_.string() + "'");
}

namespace {

// [3, H, W] in [-1, 1] -> uint8 [H, W, 3] RGB, contiguous.
torch::Tensor to_rgb8(const torch::Tensor& image) {
  return ((image.detach().to(torch::kCPU, torch::kFloat).clamp(-1, 1) + 1) * 127.5)
      .round()
      .to(torch::kUInt8)
      .permute({1, 2, 0})
      .contiguous();
}

}  // namespace

std::string encode_png(const torch::Tensor& image) {
  const std::vector<uint8_t> png = data::encode_png(to_rgb8(image));
  return std::string(png.begin(), png.end());
}

fs::path write_sample_grid(const fs::path& samples_dir, int64_t step, const std::vector<torch::Tensor>& columns,
                           const std::string& tag, EventWriter& events) {
  auto rows = torch::cat(columns, /*dim=*/3);         // [B, 3, S, K*S]
  auto grid = torch::cat(rows.unbind(0), /*dim=*/1);  // [3, B*S, K*S]
  const auto png = encode_png(grid);
  fs::create_directories(samples_dir);
  std::ostringstream name;
  name << "step-" << std::setw(6) << std::setfill('0') << step << ".png";
  const auto path = samples_dir / name.str();
  std::ofstream out(path, std::ios::binary);
  out.write(png.data(), static_cast<std::streamsize>(png.size()));
  if (!out) throw TrainError("cannot write sample '" + path.string() + "'");
  events.add_image(tag, png, static_cast<int>(grid.size(1)),
                   static_cast<int>(grid.size(2)), 3, step);
  return path;
}

Progress::Progress(int64_t first_step, int64_t total_steps, int64_t batch_size)
    : total_steps_(total_steps),
      batch_size_(batch_size),
      step_(first_step),
      window_start_step_(first_step),
      window_start_(Clock::now()) {}

void Progress::finished(int64_t step) {
  step_ = step;
  const auto now = Clock::now();
  const double seconds = std::chrono::duration<double>(now - window_start_).count();
  // Re-measure over windows of at least a second so the rate is not noise.
  if (seconds >= 1.0 || images_per_second_ == 0) {
    if (seconds > 0)
      images_per_second_ = static_cast<double>((step - window_start_step_) * batch_size_) / seconds;
    window_start_ = now;
    window_start_step_ = step;
  }
}

double Progress::eta_seconds() const {
  if (images_per_second_ <= 0) return 0;
  return static_cast<double>((total_steps_ - step_) * batch_size_) / images_per_second_;
}

bool Progress::interactive() { return ::isatty(STDOUT_FILENO) == 1; }

void Progress::draw(const std::string& losses) const {
  if (!interactive()) return;
  const auto eta = static_cast<int64_t>(eta_seconds());
  std::printf("\r\033[Kstep %lld/%lld | %s | %.1f img/s | ETA %02lld:%02lld:%02lld",
              static_cast<long long>(step_), static_cast<long long>(total_steps_), losses.c_str(),
              images_per_second_, static_cast<long long>(eta / 3600), static_cast<long long>(eta / 60 % 60),
              static_cast<long long>(eta % 60));
  if (step_ == total_steps_) std::printf("\n");
  std::fflush(stdout);
}

}  // namespace atelier::trainer
