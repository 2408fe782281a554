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

// Called first in main. LibTorch's OpenMP threads (GNU libgomp) spin up to
// 300,000 times before they sleep at every barrier; on cores shared with
// other work (data workers, another job, the loader service) a spinning
// thread burns the time slice its partner needs, and a CycleGAN step on 2
// busy cores took 2-16 s instead of 0.4 s (bench/contention.sh). Unless the
// user set OMP_WAIT_POLICY or GOMP_SPINCOUNT, for the commands that compute
// (train, evaluate, stylize, explain, launch) sets GOMP_SPINCOUNT=1000 and
// re-executes the program (libgomp reads it only when loaded); on idle
// cores this costs nothing measurable. Not through an explicitly started
// dynamic loader or under valgrind. Returns only if nothing was done.
void use_short_openmp_waits(int argc, char** argv);

// How the OpenMP threads of this process wait, for the log.
std::string describe_openmp_waits();

}  // namespace atelier::launcher
