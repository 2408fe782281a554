// The explainer job end to end on a tiny checkpoint: every method runs,
// summary.json holds the numbers, the report links every picture, a split
// across ranks gives the same summary as one process, and bad inputs give
// errors naming the bad thing; the report renders in headless Chromium.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <regex>
#include <set>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "explain/explain.h"
#include "tests/support/pattern_images.h"

namespace atelier::explain {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

std::string read(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}


class TinyCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-explain-" + std::to_string(std::random_device{}()));
    fs::create_directories(root / "run" / "checkpoints");
    for (int i = 0; i < 2; ++i) testing_support::write_pattern_image(root / ("content" + std::to_string(i) + ".png"), i);
    testing_support::write_pattern_image(root / "style0.png", 7);
    options.generator.encoder.width = 4;
    options.generator.decoder.width = 4;
    options.discriminator.width = 4;
    torch::manual_seed(0);
    models::AdaINGenerator g(options.generator);
    models::PatchDiscriminator d(options.discriminator);
    checkpoint::save(root / "run" / "checkpoints", {12, 0, 1, "hash"}, [&](const fs::path& dir) {
      torch::save(g, (dir / "generator.pt").string());
      torch::save(d, (dir / "discriminator.pt").string());
      std::ofstream(dir / "config.yaml") << "model:\n  encoder_width: 4\n";
    });
    std::ofstream metrics(root / "run" / "metrics.jsonl");
    for (int step = 1; step <= 12; ++step)
      metrics << json{{"step", step}, {"loss_g", 3.0 / step}, {"loss_d", 0.7}, {"loss_style", 1.0 / step}}.dump()
              << "\n";
    options.checkpoint = root / "run" / "checkpoints" / "LATEST";
    options.content = {(root / "content0.png").string(), (root / "content1.png").string()};
    options.style = {(root / "style0.png").string()};
    options.size = 32;
    options.threads = 1;
    options.out = root / "explain";
  }
  void TearDown() override { fs::remove_all(root); }

  fs::path root;
  ExplainOptions options;
};

TEST_F(TinyCheckpoint, EveryMethodWritesItsNumbersPicturesAndReport) {
  explain_checkpoint(options);
  const auto summary = json::parse(read(options.out / "summary.json"));
  EXPECT_EQ(summary["step"], 12);
  ASSERT_EQ(summary["pairs"].size(), 2u);
  const auto report = read(options.out / "report.html");
  EXPECT_NE(report.find("<svg"), std::string::npos) << "no loss curves";
  EXPECT_NE(report.find("encoder_width: 4"), std::string::npos) << "no configuration";
  std::set<std::string> pictures;
  for (const auto& pair : summary["pairs"]) {
    const std::string page_name = "pair-" + std::to_string(pair["pair"].get<int>()) + ".html";
    EXPECT_NE(report.find(page_name), std::string::npos);
    const auto page = read(options.out / page_name);
    for (const auto& name : method_names()) {
      ASSERT_TRUE(pair["methods"].contains(name)) << name;
      for (const auto& image : pair["methods"][name].value("images", json::array())) {
        EXPECT_TRUE(fs::exists(options.out / image.get<std::string>())) << image;
        EXPECT_NE(page.find("src='" + image.get<std::string>() + "'"), std::string::npos) << image;
        pictures.insert(image.get<std::string>());
      }
    }
    const auto& m = pair["methods"];
    for (const auto& key : {"content_black", "content_blurred", "style_black", "style_blurred"})
      EXPECT_LT(m["integrated_gradients"][key]["completeness_gap"].get<double>(), 0.05) << key;
    const double share = m["saliency"]["whole"]["content_share"];
    EXPECT_GT(share, 0.0);
    EXPECT_LT(share, 1.0);
    EXPECT_EQ(m["style_layers"]["per_layer"].size(), 4u);
    EXPECT_EQ(m["alpha_sweep"]["alpha"].size(), 5u);
    EXPECT_EQ(m["occlusion"]["change"].size(), 4u);
    EXPECT_EQ(m["probe"]["pgd_change"].size(), 5u);
    const double rho = m["trust"]["randomisation_spearman_content"];
    EXPECT_GE(rho, -1.0);
    EXPECT_LE(rho, 1.0);
  }
  // Every picture on disk is one the summary (and so a page) names.
  size_t on_disk = 0;
  for (const auto& entry : fs::recursive_directory_iterator(options.out))
    if (entry.path().extension() == ".png" && entry.path().filename() != "content.png" &&
        entry.path().filename() != "style.png" && entry.path().filename() != "output.png")
      ++on_disk;
  EXPECT_EQ(on_disk, pictures.size());
}

TEST_F(TinyCheckpoint, PairsSplitAcrossRanksGiveTheSameSummaryAsOneProcess) {
  options.methods = {"saliency", "integrated_gradients", "occlusion"};
  explain_checkpoint(options);
  const auto single = json::parse(read(options.out / "summary.json"));
  std::vector<std::string> all;
  auto rank = options;
  rank.out = root / "split";
  rank.world_size = 2;
  for (int64_t r = 0; r < 2; ++r) {
    rank.rank = r;
    const auto part = explain_pairs(rank);
    EXPECT_EQ(part.size(), 1u);
    all.insert(all.end(), part.begin(), part.end());
  }
  std::reverse(all.begin(), all.end());  // arrival order must not matter
  write_report(rank, all);
  const auto split = json::parse(read(rank.out / "summary.json"));
  EXPECT_EQ(split["pairs"], single["pairs"]);
}

// Headless Chromium (Debian's `chromium`, installed by make test) on a page:
// its exit status and stdout.
std::pair<int, std::string> chromium(const std::string& args, const fs::path& page) {
  const std::string cmd = "chromium --headless --no-sandbox --disable-gpu " + args + " 'file://" + page.string() +
                          "' 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe)) out += buf;
  return {WEXITSTATUS(pclose(pipe)), out};
}

// A copy of `page` beside it whose load handler writes, onto <body>, how many
// images the page has and which of them the browser could not decode.
fs::path with_image_probe(const fs::path& page) {
  const fs::path probe = page.parent_path() / ("probe-" + page.filename().string());
  std::string html = read(page);
  const std::string script =
      "<script>addEventListener('load',()=>{const i=[...document.images];"
      "document.body.dataset.images=i.length;document.body.dataset.broken=JSON.stringify("
      "i.filter(m=>!(m.complete&&m.naturalWidth>0)).map(m=>m.getAttribute('src')));});</script>";
  const auto end = html.rfind("</body>");
  html.insert(end == std::string::npos ? html.size() : end, script);
  std::ofstream(probe) << html;
  return probe;
}

TEST_F(TinyCheckpoint, ReportPagesRenderInHeadlessChromiumWithEveryImage) {
  options.methods = {"saliency", "gradcam", "features"};
  explain_checkpoint(options);
  for (const auto* name : {"report.html", "pair-0.html"}) {
    const auto page = options.out / name;
    const auto [status, dom] = chromium("--dump-dom", with_image_probe(page));
    ASSERT_EQ(status, 0) << name;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(dom, m, std::regex("data-images=\"(\\d+)\""))) << name << ": " << dom.substr(0, 300);
    EXPECT_GT(std::stoi(m[1]), 2) << name;
    EXPECT_NE(dom.find("data-broken=\"[]\""), std::string::npos) << name << " has images the browser cannot show";

    const auto shot = root / (std::string(name) + ".png");
    ASSERT_EQ(chromium("--window-size=1000,800 --screenshot=" + shot.string(), page).first, 0) << name;
    ASSERT_TRUE(fs::exists(shot)) << "no screenshot of " << name;
    cv::Mat pixels;
    cv::cvtColor(atelier::testing_support::read_bgr(shot), pixels, cv::COLOR_BGR2GRAY);
    cv::Scalar mean, stddev;
    cv::meanStdDev(pixels, mean, stddev);
    EXPECT_GT(stddev[0], 10.0) << name << " renders (nearly) blank";
  }
}

std::string error_of(const ExplainOptions& options) {
  try {
    explain_pairs(options);
  } catch (const ExplainError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_F(TinyCheckpoint, BadInputsGiveErrorsNamingThem) {
  auto o = options;
  o.checkpoint = root / "run" / "checkpoints" / "step-99";
  EXPECT_NE(error_of(o).find("step-99"), std::string::npos) << error_of(o);
  o = options;
  o.style = {(root / "nothing.jpg").string()};
  EXPECT_NE(error_of(o).find("nothing.jpg"), std::string::npos) << error_of(o);
  o = options;
  o.methods = {"saliency", "lime"};
  EXPECT_NE(error_of(o).find("'lime'"), std::string::npos) << error_of(o);
  o = options;
  o.generator.decoder.width = 8;
  o.generator.encoder.width = 8;
  EXPECT_NE(error_of(o).find("generator.pt"), std::string::npos) << error_of(o);
  // A checkpoint file changed after it was written does not verify.
  std::ofstream(root / "run" / "checkpoints" / "step-12" / "config.yaml", std::ios::app) << "# edited\n";
  EXPECT_NE(error_of(options).find("verify"), std::string::npos) << error_of(options);
}

}  // namespace
}  // namespace atelier::explain
