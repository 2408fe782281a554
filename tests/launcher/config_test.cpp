// Configuration: defaults are pinned, every error names the key.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "launcher/launcher.h"
#include "tests/launcher/run_atelier.h"

namespace atelier::launcher {
namespace {

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(yaml, overrides, "test.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, BuiltInDefaultsArePinned) {
  const auto c = parse_config("", {});
  EXPECT_EQ(c.optim.lr_g, 2e-4);
  EXPECT_EQ(c.optim.lr_d, 2e-4);
  EXPECT_EQ(c.optim.beta1, 0.5);
  EXPECT_EQ(c.optim.beta2, 0.999);
  EXPECT_EQ(c.optim.eps, 1e-8);
  EXPECT_EQ(c.model.generator.encoder.width, 64);
  EXPECT_EQ(c.model.discriminator.layers, 3);
  EXPECT_EQ(c.loss.adversarial, models::Adversarial::BCE);
}

TEST(Config, EmbeddedDemoConfigLoadsAndNamesItsImages) {
  const auto c = load_config("", {});
  EXPECT_EQ(c.run.name, "demo");
  EXPECT_GE(c.data.content.size(), 10u);
  EXPECT_NE(c.data.style[0].find("starry_night.jpg"), std::string::npos);
}

TEST(Config, UnknownKeyIsAnErrorNamingKeyAndKnownKeys) {
  const auto msg = error_of("train:\n  batchsize: 3\n");
  EXPECT_NE(msg.find("'train.batchsize'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("batch_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test.yaml"), std::string::npos) << msg;
}

TEST(Config, UnknownSectionIsAnError) {
  const auto msg = error_of("trian:\n  steps: 3\n");
  EXPECT_NE(msg.find("unknown section 'trian'"), std::string::npos) << msg;
}

// Shapes found by fuzzing parse_config (tests/fuzz/config_fuzz.cpp): each
// was a yaml-cpp exception escaping past every ConfigError handler.
TEST(Config, SectionsAndKeysOfTheWrongShapeAreConfigErrors) {
  auto msg = error_of("train: 5\n", {"train.device=cpu"});
  EXPECT_NE(msg.find("--set train.device: section 'train' of the config is not a mapping of keys"), std::string::npos)
      << msg;
  msg = error_of("[a, b]: 1\n");
  EXPECT_NE(msg.find("test.yaml: a key must be a plain name, got '[a, b]'"), std::string::npos) << msg;
  msg = error_of("train:\n  [steps]: 3\n");
  EXPECT_NE(msg.find("a key must be a plain name"), std::string::npos) << msg;
  msg = error_of("model:\n  family: cyclegan\nloss: 3\n");
  EXPECT_NE(msg.find("test.yaml: "), std::string::npos) << msg;
  EXPECT_EQ(error_of("train:\n", {"train.steps=7"}), "");  // an empty section takes --set keys
}

TEST(Config, BadChoiceNamesAllowedValues) {
  const auto msg = error_of("", {"loss.adversarial=wgan"});
  EXPECT_NE(msg.find("loss.adversarial"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bce, lsgan, hinge"), std::string::npos) << msg;
}

TEST(Config, OutOfRangeAndWrongTypeNameTheKey) {
  EXPECT_NE(error_of("train:\n  steps: 0\n").find("train.steps: 0 is out of range"), std::string::npos);
  EXPECT_NE(error_of("", {"train.batch_size=abc"}).find("train.batch_size: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of("", {"data.flip=maybe"}).find("data.flip: expected true or false"), std::string::npos);
}

TEST(Config, SetOverridesFileValuesAndTakesLists) {
  const auto c = parse_config("train:\n  steps: 5\n", {"train.steps=7", "data.content=[a, b]", "data.style=s"});
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_EQ(c.data.content, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c.data.style, (std::vector<std::string>{"s"}));
}

TEST(Config, SetOfUnknownKeyOrWithoutValueIsAnError) {
  EXPECT_NE(error_of("", {"train.stepz=3"}).find("'train.stepz'"), std::string::npos);
  EXPECT_NE(error_of("", {"train.steps"}).find("key=value"), std::string::npos);
}

TEST(Config, CrossKeyChecksNameBothKeys) {
  const auto msg = error_of("", {"data.load_size=32", "data.crop_size=64"});
  EXPECT_NE(msg.find("data.crop_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.load_size"), std::string::npos) << msg;
  EXPECT_NE(error_of("", {"data.crop_size=60", "data.load_size=80"}).find("multiple of 8"), std::string::npos);
  EXPECT_NE(error_of("", {"model.vgg_weights=/nonexistent/vgg19.pth"}).find("does not exist"), std::string::npos);
}

TEST(Config, ServiceSourceNeedsServersAndATokenFile) {
  EXPECT_EQ(parse_config("", {}).data.source, "folder");
  EXPECT_NE(error_of("", {"data.source=cloud"}).find("data.source: unknown value 'cloud' (allowed: folder, service)"),
            std::string::npos);
  EXPECT_NE(error_of("", {"data.source=service", "data.token_file=t"}).find("data.servers"), std::string::npos);
  EXPECT_NE(error_of("", {"data.source=service", "data.servers=[localhost]", "data.token_file=t"})
                .find("'localhost' is not host:port"),
            std::string::npos);
  EXPECT_NE(error_of("", {"data.source=service", "data.servers=[a:1]"}).find("data.token_file"), std::string::npos);
  const auto c = parse_config("", {"data.source=service", "data.servers=[a:1, b:2]", "data.token_file=job.token"});
  EXPECT_EQ(c.data.servers, (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_EQ(c.data.token_file, "job.token");
}

TEST(Config, DumpedConfigParsesBackToTheSameConfig) {
  const auto c = load_config("", {"train.steps=11", "loss.adversarial=hinge", "optim.schedule=linear"});
  const auto yaml = dump_config(c);
  EXPECT_EQ(dump_config(parse_config(yaml, {})), yaml);
  EXPECT_NE(yaml.find("steps: 11"), std::string::npos);
  EXPECT_NE(yaml.find("adversarial: hinge"), std::string::npos);
}

// The binary turns a configuration error into exit code 2 and a message.
TEST(Cli, BadKeyExitsWithUsageCodeAndMessage) {
  const auto ran = run_atelier("train --set train.bogus=1");
  EXPECT_EQ(ran.status, 2) << ran.output;
  EXPECT_NE(ran.output.find("'train.bogus'"), std::string::npos) << ran.output;
}

TEST(Cli, HelpListsTrainAndConfigKeys) {
  const auto top = run_atelier("--help");
  EXPECT_EQ(top.status, 0);
  EXPECT_NE(top.output.find("train"), std::string::npos) << top.output;
  const auto ran = run_atelier("train --help");
  EXPECT_NE(ran.output.find("--resume"), std::string::npos) << ran.output;
  EXPECT_NE(ran.output.find("train.batch_size"), std::string::npos) << ran.output;
}

TEST(Cli, MalformedCommandLineExitsWithUsageCode) {
  EXPECT_EQ(run_atelier("train --no-such-flag").status, 2);
  EXPECT_EQ(run_atelier("checkpoints").status, 2);  // --run is required
  EXPECT_EQ(run_atelier("").status, 2);             // a subcommand is required
  EXPECT_EQ(run_atelier("--version").status, 0);
}

TEST(Cli, PrintConfigShowsOverriddenValue) {
  const auto ran = run_atelier("train --print-config --set train.steps=17");
  EXPECT_EQ(ran.status, 0) << ran.output;
  EXPECT_NE(ran.output.find("steps: 17"), std::string::npos) << ran.output;
}

}  // namespace
}  // namespace atelier::launcher
