// Site profiles (cluster/profiles/*.yaml): what a cluster needs that a job
// does not. Read with the same strictness as the training configuration: an
// unknown key or a bad value is an error that names the file and the key.
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>

#include "launcher/launcher.h"
#include "launcher/slurm_job.h"
#include "models/models.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

struct Reader {
  std::string origin;  // the file, for messages

  std::string text(const std::string& key, const YAML::Node& n) const {
    if (n.IsNull()) return "";
    if (!n.IsScalar()) throw ConfigError(origin + ": " + key + ": expected a string");
    return n.as<std::string>();
  }
  int integer(const std::string& key, const YAML::Node& n, int min, int max) const {
    int v = 0;
    try {
      if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
      v = n.as<int>();
    } catch (const YAML::Exception&) {
      throw ConfigError(origin + ": " + key + ": expected an integer");
    }
    if (v < min || v > max)
      throw ConfigError(origin + ": " + key + ": " + std::to_string(v) + " is out of range [" + std::to_string(min) +
                        ", " + std::to_string(max) + "]");
    return v;
  }
  // A list of strings; a single string is a list of one.
  std::vector<std::string> list(const std::string& key, const YAML::Node& n) const {
    std::vector<std::string> out;
    if (n.IsSequence()) {
      for (const auto& item : n) out.push_back(text(key, item));
    } else if (!n.IsNull()) {
      out.push_back(text(key, n));
    }
    return out;
  }
  std::map<std::string, std::string> mapping(const std::string& key, const YAML::Node& n) const {
    std::map<std::string, std::string> out;
    if (n.IsNull()) return out;
    if (!n.IsMap()) throw ConfigError(origin + ": " + key + ": expected a mapping of NAME: value");
    for (const auto& item : n) out[item.first.as<std::string>()] = text(key, item.second);
    return out;
  }
};

using Setter = std::function<void(SiteProfile&, const YAML::Node&, const Reader&)>;

void read_container(Container& c, const YAML::Node& node, const Reader& r) {
  if (node.IsNull()) return;
  if (!node.IsMap()) throw ConfigError(r.origin + ": container: expected a mapping (image, binds, options, exec)");
  for (const auto& item : node) {
    const auto key = item.first.as<std::string>();
    if (key == "image") c.image = r.text("container.image", item.second);
    else if (key == "binds") c.binds = r.list("container.binds", item.second);
    else if (key == "options") c.options = r.list("container.options", item.second);
    else if (key == "exec") c.exec = r.text("container.exec", item.second);
    else throw ConfigError(r.origin + ": unknown key 'container." + key + "' (keys: image, binds, options, exec)");
  }
}

MpiLauncher read_launcher(const YAML::Node& n, const Reader& r) {
  const auto v = r.text("launcher", n);
  if (v == "srun") return MpiLauncher::Srun;
  if (v == "mpirun") return MpiLauncher::Mpirun;
  throw ConfigError(r.origin + ": launcher: unknown value '" + v + "' (allowed: srun, mpirun)");
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> all = {
      {"partition", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.partition = r.text("partition", n); }},
      {"account", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.account = r.text("account", n); }},
      {"time", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.time = r.text("time", n); }},
      {"cpus_per_task",
       [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.cpus_per_task = r.integer("cpus_per_task", n, 0, 4096); }},
      {"grace", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.grace_s = r.integer("grace", n, 1, 65535); }},
      {"max_requeues",
       [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.max_requeues = r.integer("max_requeues", n, 0, 1000); }},
      {"modules", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.modules = r.list("modules", n); }},
      {"env", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.env = r.mapping("env", n); }},
      {"setup", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.setup = r.list("setup", n); }},
      {"launcher", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.launcher = read_launcher(n, r); }},
      {"srun_mpi", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.srun_mpi = r.text("srun_mpi", n); }},
      {"srun_args", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.srun_args = r.list("srun_args", n); }},
      {"mpirun_args",
       [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.mpirun_args = r.list("mpirun_args", n); }},
      {"container", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { read_container(p.container, n, r); }},
      {"atelier", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.atelier = r.text("atelier", n); }},
      {"sbatch", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.sbatch = r.list("sbatch", n); }},
      {"template", [](SiteProfile& p, const YAML::Node& n, const Reader& r) { p.template_path = r.text("template", n); }},
  };
  return all;
}

std::string known_keys() {
  std::string out;
  for (const auto& [key, set] : setters()) out += (out.empty() ? "" : ", ") + key;
  return out;
}

std::vector<fs::path> profile_folders() {
  std::vector<fs::path> out;
  if (const char* extra = std::getenv("ATELIER_PROFILES")) {
    std::stringstream list(extra);
    for (std::string dir; std::getline(list, dir, ':');)
      if (!dir.empty()) out.emplace_back(dir);
  }
  out.push_back(fs::path(models::data_dir()) / "cluster" / "profiles");
  return out;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read profile '" + path.string() + "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

SiteProfile parse_profile(const std::string& yaml_text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ": not valid YAML: " + e.what());
  }
  SiteProfile profile;
  if (root.IsNull()) return profile;
  if (!root.IsMap()) throw ConfigError(origin + ": expected a mapping of profile keys");
  const Reader reader{origin};
  for (const auto& item : root) {
    const auto key = item.first.as<std::string>();
    const auto setter = setters().find(key);
    if (setter == setters().end())
      throw ConfigError(origin + ": unknown profile key '" + key + "' (keys: " + known_keys() + ")");
    setter->second(profile, item.second, reader);
  }
  if (!profile.container.image.empty() && profile.container.exec.empty())
    throw ConfigError(origin + ": container.exec must name apptainer or singularity");
  return profile;
}

SiteProfile load_profile(const std::string& name_or_path) {
  const bool is_path = name_or_path.find('/') != std::string::npos ||
                       fs::path(name_or_path).extension() == ".yaml";
  fs::path file;
  if (is_path) {
    file = name_or_path;
  } else {
    std::string searched, available;
    for (const auto& dir : profile_folders()) {
      searched += (searched.empty() ? "" : ", ") + dir.string();
      if (file.empty() && fs::is_regular_file(dir / (name_or_path + ".yaml"))) file = dir / (name_or_path + ".yaml");
      std::error_code ignored;
      for (const auto& entry : fs::directory_iterator(dir, ignored))
        if (entry.path().extension() == ".yaml") available += " " + entry.path().stem().string();
    }
    if (file.empty())
      throw ConfigError("--profile: no profile '" + name_or_path + "' in " + searched + " (available:" +
                        (available.empty() ? " none" : available) + ")");
  }
  auto profile = parse_profile(read_file(file), file.string());
  profile.name = is_path ? file.string() : name_or_path;
  if (!profile.template_path.empty() && fs::path(profile.template_path).is_relative())
    profile.template_path = (file.parent_path() / profile.template_path).string();
  return profile;
}

}  // namespace atelier::launcher
