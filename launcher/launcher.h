// launcher/ — the `atelier` command line and its configuration.
#pragma once

#include "trainer/trainer.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace atelier::launcher {

// A configuration that cannot be used; the message names the key.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The embedded default configuration (configs/demo.yaml, compiled in).
const std::string& default_config_yaml();

// Builds a Config from YAML text (empty text: the built-in defaults), then
// applies `overrides` of the form "section.key=value" (value in YAML syntax:
// `data.content=[a, b]` sets a list). Unknown keys and invalid values throw
// ConfigError naming the key and what is allowed. `origin` names the source
// in messages (a file path).
trainer::Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                             const std::string& origin = "config");

// Reads `path` (empty: the embedded default) and calls parse_config.
trainer::Config load_config(const std::string& path, const std::vector<std::string>& overrides);

// The complete resolved configuration as YAML: every key with its value.
std::string dump_config(const trainer::Config& config);

// Every configuration key with a one-line description, for --help.
std::string describe_config_keys();

// The `atelier` command line; returns the process exit code.
int run(int argc, char** argv);

}  // namespace atelier::launcher
