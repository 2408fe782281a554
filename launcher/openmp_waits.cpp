// How LibTorch's OpenMP threads wait (see launcher.h).
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>

#include "launcher/launcher.h"

namespace atelier::launcher {
namespace {

constexpr const char* kSpinCount = "1000";  // libgomp's own count for oversubscribed threads

// `name` as this process image started with it (/proc/self/environ), which
// is what libgomp read when it was loaded; setenv since does not show here.
std::optional<std::string> at_start(const std::string& name) {
  std::ifstream in("/proc/self/environ", std::ios::binary);
  if (!in) {
    const char* value = std::getenv(name.c_str());
    return value ? std::optional<std::string>(value) : std::nullopt;
  }
  for (std::string entry; std::getline(in, entry, '\0');)
    if (entry.compare(0, name.size() + 1, name + "=") == 0) return entry.substr(name.size() + 1);
  return std::nullopt;
}

// Whether starting /proc/self/exe again with these arguments runs atelier
// again: not when the program was started through the dynamic loader
// (`ld-linux-x86-64.so.2 ./atelier ...`, some wrappers do), where
// /proc/self/exe is the loader; nor under valgrind, which would not follow.
bool can_reexecute() {
  std::error_code error;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", error).filename().string();
  if (error || exe.rfind("ld-", 0) == 0 || exe.rfind("ld.so", 0) == 0) return false;
  const char* preload = std::getenv("LD_PRELOAD");
  return !(preload && std::strstr(preload, "vgpreload"));
}

}  // namespace

void use_short_openmp_waits(int argc, char** argv) {
  // The user's choice, or this is the re-executed program.
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  // Only the commands that compute with LibTorch threads (launch: its ranks
  // inherit the variable instead of re-executing each).
  static const std::set<std::string> computing = {"train", "evaluate", "stylize", "explain", "launch"};
  if (argc < 2 || computing.count(argv[1]) == 0 || !can_reexecute()) return;
  if (::setenv("GOMP_SPINCOUNT", kSpinCount, 1) != 0) return;
  // libgomp read the environment when it was loaded, before main: start
  // this same program again (same PID, arguments and descriptors) so that it
  // reads the new value. If exec fails, carry on with libgomp's default.
  ::execv("/proc/self/exe", argv);
}

std::string describe_openmp_waits() {
  if (const auto policy = at_start("OMP_WAIT_POLICY")) return "OMP_WAIT_POLICY=" + *policy + " (yours)";
  const auto spins = at_start("GOMP_SPINCOUNT");
  if (!spins) return "libgomp's default spin (atelier could not re-execute itself with GOMP_SPINCOUNT here)";
  return "GOMP_SPINCOUNT=" + *spins + (*spins == kSpinCount ? " (atelier's default)" : " (yours)");
}

}  // namespace atelier::launcher
