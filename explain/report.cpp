// summary.json and the HTML report: an index page (run config, step, loss
// curves as inline SVG from metrics.jsonl, the pairs) and one page per pair
// with every explanation's pictures and numbers. Pictures sit beside the
// pages (pair-<p>/*.png), so the report folder can be copied as a whole.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "explain/pipeline.h"

namespace atelier::explain {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kStyle =
    "<style>body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}"
    "img{margin:4px;border:1px solid #ddd;vertical-align:top}table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
    "pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}"
    "svg{border:1px solid #ddd;margin:4px}h2{border-bottom:1px solid #ccc}</style>";

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Numbers as text: scalars, lists and nested lists, compactly.
std::string value_text(const json& v) {
  if (v.is_number_float()) return number(v.get<double>());
  if (v.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + value_text(v[i]);
    return out + "]";
  }
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string numbers_table(const json& section) {
  std::string rows;
  for (const auto& [key, value] : section.items()) {
    if (key == "images") continue;
    const std::string cell = value.is_object() ? numbers_table(value) : escape(value_text(value));
    rows += "<tr><th>" + escape(key) + "</th><td>" + cell + "</td></tr>";
  }
  return "<table>" + rows + "</table>";
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) throw ExplainError("cannot write '" + path.string() + "'");
}

// One metric of metrics.jsonl against step as a small SVG line plot.
std::string svg_plot(const std::vector<std::pair<double, double>>& points, const std::string& name) {
  constexpr double kW = 260, kH = 120, kPad = 6;
  if (points.size() < 2) return {};
  double x0 = points.front().first, x1 = points.back().first, y0 = points[0].second, y1 = y0;
  for (const auto& p : points) y0 = std::min(y0, p.second), y1 = std::max(y1, p.second);
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  std::string line;
  // At most ~300 vertices: a long run's every step adds nothing visible.
  const size_t stride = std::max<size_t>(1, points.size() / 300);
  for (size_t i = 0; i < points.size(); i += stride) {
    const double x = kPad + (points[i].first - x0) / (x1 - x0) * (kW - 2 * kPad);
    const double y = kH - kPad - 14 - (points[i].second - y0) / (y1 - y0) * (kH - 2 * kPad - 14);
    line += number(x) + "," + number(y) + " ";
  }
  std::ostringstream svg;
  svg << "<svg width='" << kW << "' height='" << kH << "' viewBox='0 0 " << kW << " " << kH << "'>"
      << "<polyline fill='none' stroke='#2a6fb0' stroke-width='1.5' points='" << line << "'/>"
      << "<text x='6' y='" << kH - 4 << "' font-size='11'>" << escape(name) << ": " << number(y0) << " .. "
      << number(y1) << " (steps " << number(x0) << "-" << number(x1) << ")</text></svg>";
  return svg.str();
}

std::string loss_curves(const fs::path& metrics_file) {
  std::ifstream in(metrics_file);
  if (!in) return "<p>(no metrics.jsonl beside the checkpoints)</p>";
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  const std::vector<std::string> keys = {"loss_g", "loss_d", "loss_adv", "loss_content", "loss_style"};
  for (std::string text; std::getline(in, text);) {
    const auto line = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!line.is_object() || !line.contains("step")) continue;  // a torn last line of a killed run
    for (const auto& key : keys)
      if (line.contains(key) && line[key].is_number()) series[key].emplace_back(line["step"], line[key]);
  }
  std::string out;
  for (const auto& key : keys) out += svg_plot(series[key], key);
  return out.empty() ? "<p>(metrics.jsonl holds no losses)</p>" : out;
}

std::string page(const std::string& title, const std::string& body) {
  return "<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + escape(title) + "</title>" + kStyle +
         "</head><body>" + body + "</body></html>\n";
}

std::string pair_page(const json& pair) {
  std::string body = "<p><a href='report.html'>&larr; index</a></p><h1>pair " + value_text(pair["pair"]) + "</h1>";
  body += "<p>content: " + escape(pair["content"]) + "<br>style: " + escape(pair["style"]) + "</p>";
  for (const char* key : {"content_image", "style_image", "output_image"})
    body += "<img src='" + escape(pair[key]) + "' alt='" + key + "'>";
  // In method_names() order (the JSON object itself is sorted by name).
  for (const auto& name : method_names()) {
    if (!pair["methods"].contains(name)) continue;
    const auto& section = pair["methods"][name];
    body += "<h2 id='" + escape(name) + "'>" + escape(name) + "</h2><div>";
    if (section.contains("images"))
      for (const auto& img : section["images"]) body += "<img src='" + escape(img) + "' alt='" + escape(img) + "'>";
    body += "</div>" + numbers_table(section);
  }
  return page("atelier explain: pair " + value_text(pair["pair"]), body);
}

std::string index_page(const json& summary, const std::string& config_yaml, const std::string& curves) {
  std::string body = "<h1>atelier explain</h1><p>checkpoint <code>" + escape(summary["checkpoint"]) +
                     "</code>, step <b>" + value_text(summary["step"]) + "</b>, images " +
                     value_text(summary["size"]) + " px, loss network <b>" + escape(summary["loss_network"]) +
                     "</b></p><h2>training losses</h2><div>" + curves +
                     "</div><h2>pairs</h2><table><tr><th>pair</th><th>content | style | output</th><th>key numbers</th></tr>";
  for (const auto& pair : summary["pairs"]) {
    const std::string href = "pair-" + value_text(pair["pair"]) + ".html";
    body += "<tr><td><a href='" + href + "'>pair " + value_text(pair["pair"]) + "</a></td><td>";
    for (const char* key : {"content_image", "style_image", "output_image"})
      body += "<a href='" + href + "'><img width='96' src='" + escape(pair[key]) + "' alt='" + key + "'></a>";
    body += "</td><td>" + escape(pair["content"]) + "<br>" + escape(pair["style"]);
    const auto& m = pair["methods"];
    if (m.contains("saliency")) body += "<br>content share of saliency " + value_text(m["saliency"]["whole"]["content_share"]);
    if (m.contains("gradcam")) body += "<br>D score of output " + value_text(m["gradcam"]["output_score"]);
    body += "</td></tr>";
  }
  body += "</table><h2>configuration</h2><pre>" + escape(config_yaml) + "</pre>";
  return page("atelier explain", body);
}

}  // namespace

void write_report(const ExplainOptions& options, const std::vector<std::string>& pair_summaries) {
  const fs::path dir = resolve_checkpoint(options.checkpoint);
  const auto manifest = checkpoint::read_manifest(dir);
  std::vector<json> pairs;
  for (const auto& text : pair_summaries) pairs.push_back(json::parse(text));
  std::sort(pairs.begin(), pairs.end(), [](const json& a, const json& b) { return a["pair"] < b["pair"]; });
  // Older manifests do not say; a SqueezeNet encoder is always the shipped, pretrained one.
  std::string loss_network = manifest.loss_network;
  if (loss_network.empty())
    loss_network = options.generator.encoder.network == "squeezenet1_1" ? models::describe_encoder(options.generator.encoder)
                                                                        : "not recorded (checkpoint of an older atelier)";
  json summary = {{"checkpoint", dir.string()},
                  {"step", manifest.step},
                  {"loss_network", loss_network},
                  {"size", options.size},
                  {"methods", options.methods.empty() ? method_names() : options.methods},
                  {"pairs", pairs}};
  fs::create_directories(options.out);
  write_file(options.out / "summary.json", summary.dump(2) + "\n");
  for (const auto& pair : pairs)
    write_file(options.out / ("pair-" + value_text(pair["pair"]) + ".html"), pair_page(pair));
  // checkpoints/step-N -> the run directory that holds metrics.jsonl.
  const fs::path run_dir = fs::absolute(dir).lexically_normal().parent_path().parent_path();
  write_file(options.out / "report.html",
             index_page(summary, read_text(dir / "config.yaml"), loss_curves(run_dir / "metrics.jsonl")));
}

}  // namespace atelier::explain
