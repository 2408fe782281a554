// Fuzz target: a run's configuration, as `atelier train --config F --set
// K=V ...` reads it. The input's bytes up to the first NUL are the YAML
// file; each further NUL-separated piece is one --set value. Only
// ConfigError may come out (yaml-cpp's own exceptions must be turned into
// one naming the key), and what parses must dump and parse back to the same.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "launcher/launcher.h"

namespace launcher = atelier::launcher;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t end = input.find('\0');
  const std::string yaml = input.substr(0, end);
  std::vector<std::string> overrides;
  for (size_t at = end; at != std::string::npos && at < input.size();) {
    const size_t next = input.find('\0', at + 1);
    overrides.push_back(input.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1));
    at = next;
  }
  try {
    const auto config = launcher::parse_config(yaml, overrides, "fuzz.yaml");
    const std::string dumped = launcher::dump_config(config);
    if (launcher::dump_config(launcher::parse_config(dumped, {}, "dumped")) != dumped) __builtin_trap();
  } catch (const launcher::ConfigError&) {
  }
  return 0;
}
