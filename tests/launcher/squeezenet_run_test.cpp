// model.encoder squeezenet1_1 end to end: both families train with the
// shipped SqueezeNet as loss network (AdaIN-GAN: as encoder too), evaluate
// during training under SqueezeNet's names, and the checkpoint is stylized,
// evaluated and explained with it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "tests/launcher/run_atelier.h"
#include "tests/launcher/tiny_checkpoint.h"

namespace {

namespace fs = std::filesystem;
using atelier::launcher::run_atelier;
using atelier::launcher::TinyCheckpoint;
using json = nlohmann::json;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The last line of metrics.jsonl holding `key`.
json last_with(const fs::path& metrics, const std::string& key) {
  std::ifstream in(metrics);
  json found;
  for (std::string line; std::getline(in, line);) {
    const auto j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains(key)) found = j;
  }
  return found;
}

std::string sources(const TinyCheckpoint& tiny) {
  return " --content " + (tiny.root / "content").string() + " --style " + (tiny.root / "style").string();
}

}  // namespace

TEST(SqueezeNetRun, AdainTrainsWithItAndEveryCommandUsesIt) {
  const TinyCheckpoint tiny("adain", "squeezenet1_1");
  const auto config = read_text(tiny.trained() / "config.yaml");
  EXPECT_NE(config.find("encoder: squeezenet1_1"), std::string::npos) << config;
  const auto manifest = json::parse(read_text(tiny.trained() / "manifest.json"));
  EXPECT_EQ(manifest["loss_network"], "SqueezeNet 1.1 (ImageNet)");
  const auto log = read_text(tiny.run_dir / "log.txt");
  EXPECT_EQ(log.find("fixed random VGG"), std::string::npos) << log;
  const auto held_out = last_with(tiny.run_dir / "metrics.jsonl", "eval/squeezenet_fd");
  ASSERT_TRUE(held_out.is_object()) << read_text(tiny.run_dir / "metrics.jsonl");
  EXPECT_TRUE(held_out.contains("eval/style_meanstd_fire4"));

  // The image comes back at the content's own size (48x40), though
  // SqueezeNet's first convolution and ceil-mode pools round.
  const auto out = tiny.root / "stylized.png";
  auto ran = run_atelier("stylize --checkpoint " + tiny.trained().string() + " --content " +
                         (tiny.root / "content" / "c0.png").string() + " --style " +
                         (tiny.root / "style" / "s0.png").string() + " --out " + out.string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  const auto image = atelier::data::decode_image(out.string());
  EXPECT_EQ(image.size(0), 40);
  EXPECT_EQ(image.size(1), 48);

  ran = run_atelier("evaluate --checkpoint " + tiny.trained().string() + sources(tiny) + " --out " +
                    (tiny.root / "eval.json").string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  EXPECT_NE(ran.output.find("SqueezeNet-FD"), std::string::npos) << ran.output;
  EXPECT_EQ(ran.output.find("not FID"), std::string::npos) << ran.output;
  const auto report = json::parse(read_text(tiny.root / "eval.json"));
  EXPECT_EQ(report["loss_network"]["network"], "squeezenet1_1");
  EXPECT_EQ(report["loss_network"]["weights"], "imagenet");
  for (const char* key : {"squeezenet_fd", "squeezenet_kid", "style_gram_relu1", "style_meanstd_fire4", "content_loss"})
    EXPECT_TRUE(report["metrics"][key].is_number()) << key << "\n" << report.dump(2);

  ran = run_atelier("explain --checkpoint " + tiny.trained().string() + " --content " +
                    (tiny.root / "content" / "c0.png").string() + " --style " +
                    (tiny.root / "style" / "s0.png").string() + " --out " + (tiny.root / "explain").string() +
                    " --size 32 --methods features adain style_layers alpha_sweep");
  ASSERT_EQ(ran.status, 0) << ran.output;
  const auto html = read_text(tiny.root / "explain" / "report.html");
  for (const char* text : {"loss network <b>SqueezeNet 1.1 (ImageNet)</b>"})
    EXPECT_NE(html.find(text), std::string::npos) << text;
  const auto summary = json::parse(read_text(tiny.root / "explain" / "summary.json"));
  EXPECT_EQ(summary["loss_network"], "SqueezeNet 1.1 (ImageNet)");
  // The feature, AdaIN and style-layer sections are SqueezeNet's layers.
  const auto pair = read_text(tiny.root / "explain" / "pair-0.html");
  for (const char* text : {"fire2", "fire4", "relu1"}) EXPECT_NE(pair.find(text), std::string::npos) << text;
}

TEST(SqueezeNetRun, CycleganEvaluatesWithIt) {
  const TinyCheckpoint tiny("cyclegan", "squeezenet1_1");
  const auto held_out = last_with(tiny.run_dir / "metrics.jsonl", "eval/squeezenet_fd");
  ASSERT_TRUE(held_out.is_object()) << read_text(tiny.run_dir / "metrics.jsonl");
  const auto ran = run_atelier("evaluate --checkpoint " + tiny.trained().string() + sources(tiny) + " --out " +
                               (tiny.root / "eval.json").string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  const auto report = json::parse(read_text(tiny.root / "eval.json"));
  EXPECT_EQ(report["loss_network"]["network"], "squeezenet1_1");
  EXPECT_TRUE(report["metrics"]["squeezenet_fd"].is_number()) << report.dump(2);
}

TEST(SqueezeNetRun, ConfigurationMistakesAreRefusedNamingTheKey) {
  const auto refusal = [](std::vector<std::string> sets) {
    sets.insert(sets.begin(), "model.encoder=squeezenet1_1");
    try {
      atelier::launcher::parse_config("", sets, "test.yaml");
    } catch (const atelier::launcher::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(refusal({}), "");
  EXPECT_NE(refusal({"model.content_layer=fire9"}).find("model.content_layer: SqueezeNet 1.1 has no layer 'fire9'"),
            std::string::npos);
  EXPECT_NE(refusal({"model.style_layers=[relu1, conv3]"}).find("model.style_layers: SqueezeNet 1.1 has no layer 'conv3'"),
            std::string::npos);
  EXPECT_NE(refusal({"model.vgg_weights=/nonexistent.pth"}).find("model.vgg_weights is set but model.encoder is squeezenet1_1"),
            std::string::npos);
  EXPECT_NE(refusal({"model.squeezenet_dir=/nonexistent"}).find("model.squeezenet_dir: directory '/nonexistent' does not exist"),
            std::string::npos);
  EXPECT_NE(refusal({"model.encoder=resnet50"}).find("model.encoder"), std::string::npos);
}
