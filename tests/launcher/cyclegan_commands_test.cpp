// The commands around a CycleGAN: its configuration defaults, `stylize
// --direction`, and `export` into python/atelier_models.ResnetGenerator.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/data.h"
#include "launcher/launcher.h"
#include "models/models.h"
#include "tests/launcher/run_atelier.h"
#include "tests/launcher/tiny_checkpoint.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

TEST(CycleGANConfig, KeysLeftOutTakeThePapersDefaults) {
  const auto c = parse_config("model: {family: cyclegan}\ntrain: {steps: 400}\n", {}, "test");
  EXPECT_EQ(c.loss.adversarial, models::Adversarial::LSGAN);
  EXPECT_EQ(c.optim.schedule, trainer::Schedule::Linear);
  EXPECT_EQ(c.optim.decay_start, 200);  // constant for half the run, then linear to 0
  EXPECT_EQ(c.loss.cycle_weight, 10.0);
  EXPECT_EQ(c.loss.identity_weight, 0.5);
  EXPECT_EQ(c.model.pool_size, 50);
  EXPECT_EQ(c.model.resnet.width, 64);
  EXPECT_EQ(c.model.resnet.blocks, 6);  // below 256 px (the default crop is 128)
  EXPECT_EQ(parse_config("model: {family: cyclegan}\ndata: {load_size: 286, crop_size: 256}\n", {}, "t")
                .model.resnet.blocks,
            9);
}

TEST(CycleGANConfig, GivenKeysWinAndAdainKeepsItsOwnDefaults) {
  const auto c = parse_config("model: {family: cyclegan, resnet_blocks: 2}\nloss: {adversarial: hinge}\n",
                              {"optim.decay_start=7"}, "test");
  EXPECT_EQ(c.model.resnet.blocks, 2);
  EXPECT_EQ(c.loss.adversarial, models::Adversarial::Hinge);
  EXPECT_EQ(c.optim.decay_start, 7);
  const auto adain = parse_config("train: {steps: 400}\n", {}, "test");
  EXPECT_EQ(adain.loss.adversarial, models::Adversarial::BCE);
  EXPECT_EQ(adain.optim.schedule, trainer::Schedule::Constant);
  // --set can pick the family too, and its defaults follow.
  EXPECT_EQ(parse_config("", {"model.family=cyclegan"}, "test").loss.adversarial, models::Adversarial::LSGAN);
}

TEST(CycleGANConfig, EvaluationDuringTrainingParsesAndStillNeedsBothFolders) {
  const auto c = parse_config("model: {family: cyclegan}\neval: {every_steps: 5, content: [a], style: [b]}\n", {}, "test");
  EXPECT_EQ(c.eval.every_steps, 5);
  try {
    parse_config("model: {family: cyclegan}\neval: {every_steps: 5, content: [a]}\n", {}, "test");
    FAIL() << "accepted without eval.style";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("eval.style"), std::string::npos) << e.what();
  }
}

// The shipped configs/cyclegan.yaml as a user runs it, shortened to 2 steps:
// it trains, samples and checkpoints all four networks and both pools.
TEST(CycleGANConfig, ShippedConfigTrains) {
  const auto dir = fs::temp_directory_path() / ("atelier-cyclegan-yaml-" + std::to_string(::getpid()));
  const auto ran = run_atelier("train --config " + std::string(ATELIER_SOURCE_DIR) +
                               "/configs/cyclegan.yaml --set train.steps=2 --set train.sample_every=2 --set run.dir=" +
                               dir.string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  const auto ckpt = dir / "cyclegan" / "checkpoints" / "step-2";
  for (const auto* file : {"generator_a.pt", "generator_b.pt", "discriminator_a.pt", "discriminator_b.pt",
                           "optimizer_g.pt", "optimizer_d.pt", "rank-0/pools.pt"})
    EXPECT_TRUE(fs::exists(ckpt / file)) << file;
  EXPECT_TRUE(fs::exists(dir / "cyclegan" / "samples" / "step-000002.png"));
  fs::remove_all(dir);
}

class CycleGANCommands : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tiny = new TinyCheckpoint("cyclegan"); }
  static void TearDownTestSuite() { delete tiny; }

  // The checkpoint's generator for `file` applied to an image as stylize
  // does it (reflect-padded to a multiple of 8, cropped back).
  static torch::Tensor expected(const std::string& file, const torch::Tensor& image) {
    models::ResnetGenerator g(tiny->config.model.resnet);
    torch::load(g, (tiny->trained() / file).string());
    g->eval();
    torch::NoGradGuard no_grad;
    const auto h = image.size(1), w = image.size(2);
    const auto padded = torch::nn::functional::pad(
        image.unsqueeze(0), torch::nn::functional::PadFuncOptions({0, (8 - w % 8) % 8, 0, (8 - h % 8) % 8})
                                .mode(torch::kReflect));
    return g->forward(padded)[0].slice(1, 0, h).slice(2, 0, w);
  }

  static TinyCheckpoint* tiny;
};
TinyCheckpoint* CycleGANCommands::tiny = nullptr;

// Both directions of a 48x40 image (not a multiple of 8): each output is its
// own generator's, to 8-bit rounding, and the two differ.
TEST_F(CycleGANCommands, StylizeTranslatesEitherDirection) {
  const auto input = tiny->root / "content" / "c0.png";
  const auto image = data::load_image(input.string());
  for (const auto& [direction, file] : {std::pair<std::string, std::string>{"a2b", "generator_a.pt"},
                                        std::pair<std::string, std::string>{"b2a", "generator_b.pt"}}) {
    const auto out = tiny->root / ("out-" + direction + ".png");
    const auto ran = run_atelier("stylize --checkpoint " + tiny->run_dir.string() + " --content " + input.string() +
                                 " --direction " + direction + " --out " + out.string());
    ASSERT_EQ(ran.status, 0) << ran.output;
    const auto written = data::load_image(out.string());
    ASSERT_EQ(written.sizes(), image.sizes());
    EXPECT_LT((written - expected(file, image).clamp(-1, 1)).abs().max().item<double>(), 1.5 / 127.5) << direction;
  }
  const auto a2b = data::load_image((tiny->root / "out-a2b.png").string());
  const auto b2a = data::load_image((tiny->root / "out-b2a.png").string());
  EXPECT_GT((a2b - b2a).abs().max().item<double>(), 2.0 / 127.5);
}

TEST_F(CycleGANCommands, StyleImagesAndBadDirectionsAreUsageErrors) {
  const auto ckpt = tiny->run_dir.string();
  const auto input = (tiny->root / "content" / "c0.png").string();
  const auto out = (tiny->root / "bad.png").string();
  auto ran = run_atelier("stylize --checkpoint " + ckpt + " --content " + input + " --style " + input + " --out " + out);
  EXPECT_EQ(ran.status, 2) << ran.output;
  EXPECT_NE(ran.output.find("--direction"), std::string::npos) << ran.output;
  ran = run_atelier("stylize --checkpoint " + ckpt + " --content " + input + " --direction sideways --out " + out);
  EXPECT_EQ(ran.status, 2) << ran.output;
  EXPECT_NE(ran.output.find("sideways"), std::string::npos) << ran.output;
  EXPECT_FALSE(fs::exists(out));
}

// The explainer is for AdaIN-GAN (it attributes to a content and a style
// input); a CycleGAN checkpoint is refused by name, before anything is written.
TEST_F(CycleGANCommands, ExplainRefusesTheFamilyByName) {
  const auto input = (tiny->root / "content" / "c0.png").string();
  const auto out = tiny->root / "explain";
  const auto ran = run_atelier("explain --checkpoint " + tiny->run_dir.string() + " --content " + input +
                               " --style " + input + " --out " + out.string());
  EXPECT_NE(ran.status, 0) << ran.output;
  EXPECT_NE(ran.output.find("model.family 'cyclegan'"), std::string::npos) << ran.output;
  EXPECT_FALSE(fs::exists(out / "report.html"));
}

TEST_F(CycleGANCommands, ExportLoadsStrictlyInPythonAndComputesTheSameImages) {
  const auto g_pt = tiny->root / "export" / "g_b2a.pt";
  const auto ran =
      run_atelier("export --checkpoint " + tiny->run_dir.string() + " --direction b2a --out " + g_pt.string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  models::ResnetGenerator g(tiny->config.model.resnet);
  torch::load(g, (tiny->trained() / "generator_b.pt").string());
  g->eval();
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  const auto images = torch::rand({2, 3, 32, 40}) * 2 - 1;
  c10::Dict<std::string, at::Tensor> cases;
  cases.insert("images", images);
  cases.insert("expected", g->forward(images));
  const auto cases_pt = tiny->root / "cases.pt";
  {
    const auto bytes = torch::pickle_save(c10::IValue(cases));
    std::ofstream out(cases_pt, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  const auto check = run_shell(std::string("/usr/bin/python3 ") + ATELIER_SOURCE_DIR + "/tests/launcher/check_export_cyclegan.py " +
                                ATELIER_SOURCE_DIR + " " + g_pt.string() + " " + cases_pt.string());
  EXPECT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("expected: max abs diff"), std::string::npos) << check.output;
}

// The cycle reconstruction error of `atelier evaluate` against a hand
// computation over the same centre crops; AdaIN's target loss is absent.
TEST_F(CycleGANCommands, EvaluateReportsTheCycleReconstructionError) {
  const auto report = tiny->root / "eval.json";
  const auto ran = run_atelier("evaluate --checkpoint " + tiny->run_dir.string() + " --content " +
                               (tiny->root / "content").string() + " --style " + (tiny->root / "style").string() +
                               " --out " + report.string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  EXPECT_NE(ran.output.find("cycle reconstruction"), std::string::npos) << ran.output;
  std::ifstream in(report);
  const auto json = nlohmann::json::parse(in);
  const auto& metrics = json["metrics"];
  EXPECT_FALSE(metrics.contains("content_loss_adain"));
  for (const char* key : {"ssim_rgb", "psnr_rgb", "content_loss", "style_gram_relu1_1", "cycle_psnr_a", "cycle_psnr_b"})
    EXPECT_TRUE(metrics.contains(key)) << key;

  models::ResnetGenerator a2b(tiny->config.model.resnet), b2a(tiny->config.model.resnet);
  torch::load(a2b, (tiny->trained() / "generator_a.pt").string());
  torch::load(b2a, (tiny->trained() / "generator_b.pt").string());
  a2b->eval();
  b2a->eval();
  torch::NoGradGuard no_grad;
  // 3 content x 2 style images: 6 pairs, content i % 3 and style (i % 3 + i / 3) % 2.
  const auto files = data::list_images({(tiny->root / "content").string()});
  const auto styles = data::list_images({(tiny->root / "style").string()});
  double cycle_a = 0, cycle_b = 0;
  for (int i = 0; i < 6; ++i) {
    const auto a = data::load_centered(files[i % 3], 32).unsqueeze(0);
    const auto b = data::load_centered(styles[(i % 3 + i / 3) % 2], 32).unsqueeze(0);
    cycle_a += (b2a->forward(a2b->forward(a)) - a).abs().mean().item<double>() / 6;
    cycle_b += (a2b->forward(b2a->forward(b)) - b).abs().mean().item<double>() / 6;
  }
  EXPECT_NEAR(metrics["cycle_l1_a"].get<double>(), cycle_a, 1e-5);
  EXPECT_NEAR(metrics["cycle_l1_b"].get<double>(), cycle_b, 1e-5);
  EXPECT_EQ(json["model"], "cyclegan");
}

}  // namespace
}  // namespace atelier::launcher
