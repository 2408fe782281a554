// SampleAudit (run_files.h): which samples each rank trained on.
#include <nlohmann/json.hpp>

#include "comm/comm.h"
#include "trainer/run_files.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace fs = std::filesystem;
namespace {

nlohmann::json row_checksums(const torch::Tensor& images) {
  nlohmann::json out = nlohmann::json::array();
  for (int64_t i = 0; i < images.size(0); ++i) out.push_back(comm::checksum({images[i].contiguous()}));
  return out;
}

}  // namespace

SampleAudit::SampleAudit(const fs::path& dir, int rank, int world_size)
    : path_(dir / ("rank-" + std::to_string(rank) + ".jsonl")), rank_(rank), world_size_(world_size) {
  fs::create_directories(dir);
  out_.open(path_, std::ios::app);
  if (!out_) throw TrainError("cannot open sample audit file '" + path_.string() + "'");
}

void SampleAudit::record(int64_t step, int64_t micro, const torch::Tensor& content, const torch::Tensor& style,
                         int64_t first_sample) {
  const nlohmann::json line = {{"step", step},
                               {"micro", micro},
                               {"rank", rank_},
                               {"world_size", world_size_},
                               {"first_sample", first_sample},
                               {"content_crc32c", row_checksums(content)},
                               {"style_crc32c", row_checksums(style)}};
  out_ << line.dump() << "\n";
  out_.flush();
  if (!out_) throw TrainError("cannot write sample audit file '" + path_.string() + "'");
}

void SampleAudit::forget_after(const fs::path& dir, int64_t step) {
  if (!fs::is_directory(dir)) return;
  std::vector<fs::path> files;  // listed first: the rewrites add entries
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".jsonl") files.push_back(entry.path());
  for (const auto& path : files) {
    std::ifstream in(path);
    std::string kept;
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      try {
        if (nlohmann::json::parse(line).at("step").get<int64_t>() > step) continue;
      } catch (const nlohmann::json::exception&) {
        continue;  // a line cut short by a kill
      }
      kept += line + "\n";
    }
    const auto tmp = fs::path(path.string() + ".tmp");
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    out.close();
    if (!out) throw TrainError("cannot rewrite sample audit file '" + path.string() + "'");
    fs::rename(tmp, path);
  }
}

}  // namespace atelier::trainer
