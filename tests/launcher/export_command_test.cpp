// `atelier export` writes a state dict that Debian's python3-torch loads
// strictly into python/atelier_models.AdaINGenerator, whose outputs match
// the C++ generator's on the same inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "tests/launcher/run_atelier.h"
#include "tests/launcher/tiny_checkpoint.h"
#include "models/models.h"

namespace atelier::launcher {
namespace {
namespace fs = std::filesystem;

void write_file(const fs::path& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// Exports `tiny`, loads it into Python (strict) with `python_layers` (the
// SqueezeNet taps, or nothing), and compares images with the C++ generator's.
void check_python_export(TinyCheckpoint& tiny, const std::string& python_layers) {
  const auto g_pt = tiny.root / "export" / "g.pt";
  const auto ran = run_atelier("export --checkpoint " + tiny.run_dir.string() + " --out " + g_pt.string());
  ASSERT_EQ(ran.status, 0) << ran.output;
  ASSERT_TRUE(fs::exists(g_pt));
  EXPECT_NE(ran.output.find("AdaINGenerator.from_state_dict("), std::string::npos) << ran.output;

  models::AdaINGenerator generator(tiny.config.model.generator);
  torch::load(generator, (tiny.run_dir / "checkpoints" / "step-2" / "generator.pt").string());
  torch::NoGradGuard no_grad;
  torch::manual_seed(5);
  const auto content = torch::rand({2, 3, 32, 40}) * 2 - 1;
  const auto style_a = torch::rand({2, 3, 40, 40}) * 2 - 1;
  const auto style_b = torch::rand({1, 3, 24, 48}) * 2 - 1;
  const double alpha = 0.7;
  c10::Dict<std::string, at::Tensor> cases;
  cases.insert("content", content);
  cases.insert("style_a", style_a);
  cases.insert("style_b", style_b);
  cases.insert("alpha", torch::tensor(alpha));
  cases.insert("expected", generator->stylize(content, style_a, alpha).image);
  cases.insert("expected_mixed", generator->stylize_mixed(content, {style_a, style_b}, {0.3, 0.7}, alpha).image);
  const auto cases_pt = tiny.root / "cases.pt";
  write_file(cases_pt, torch::pickle_save(c10::IValue(cases)));

  const auto check = run_shell(std::string("/usr/bin/python3 ") + ATELIER_SOURCE_DIR + "/tests/launcher/check_export.py " +
                               ATELIER_SOURCE_DIR + " " + g_pt.string() + " " + cases_pt.string() + python_layers);
  EXPECT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("expected_mixed: max abs diff"), std::string::npos) << check.output;
}

TEST(Export, PythonLoadsItStrictlyAndComputesTheSameImages) {
  TinyCheckpoint tiny;
  check_python_export(tiny, "");
}

// The demo's encoder: the command prints the taps Python needs, and with
// them the shipped SqueezeNet's generator loads strictly and agrees (the
// sizes 32x40 and 24x48 are not multiples of SqueezeNet's rounding, so the
// decoder's resize is compared too).
TEST(Export, ASqueezeNetGeneratorLoadsWithItsLayersAndComputesTheSameImages) {
  TinyCheckpoint tiny("adain", "squeezenet1_1");
  const auto& encoder = tiny.config.model.generator.encoder;
  std::string styles;
  for (const auto& layer : encoder.style_layers) styles += (styles.empty() ? "" : ",") + layer;
  check_python_export(tiny, " " + encoder.network + " " + encoder.content_layer + " " + styles);
  const auto ran = run_atelier("export --checkpoint " + tiny.run_dir.string() + " --out " +
                               (tiny.root / "again.pt").string());
  EXPECT_NE(ran.output.find("encoder='squeezenet1_1', content_layer='fire2', style_layers=['relu1', 'fire2', "
                            "'fire3', 'fire4']"),
            std::string::npos)
      << ran.output;
}

TEST(Export, MissingCheckpointIsARuntimeErrorNamingIt) {
  const auto missing = (fs::temp_directory_path() / "atelier-no-such-run").string();
  const auto ran = run_atelier("export --checkpoint " + missing + " --out " + missing + "/g.pt");
  EXPECT_EQ(ran.status, 1) << ran.output;
  EXPECT_NE(ran.output.find(missing), std::string::npos) << ran.output;
}

}  // namespace
}  // namespace atelier::launcher
