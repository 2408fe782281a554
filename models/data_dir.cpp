// data_dir(): the one place that knows where atelier's data files are, so
// an installed binary works after its source tree is gone. Built alone with
// the source path compiled in, so the other files' compiles stay cacheable
// across clones.
#include <filesystem>
#include <system_error>

#include "models/models.h"

namespace atelier::models {

std::string data_dir() {
  namespace fs = std::filesystem;
  std::error_code error;
  const auto binary = fs::read_symlink("/proc/self/exe", error);
  if (!error && binary.parent_path().filename() == "bin") {
    const auto installed = binary.parent_path().parent_path() / "share" / "atelier";
    if (fs::is_directory(installed / "models", error)) return installed.string();
  }
  return ATELIER_SOURCE_DIR;
}

}  // namespace atelier::models
