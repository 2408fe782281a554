// The CycleGAN step: every term against a hand computation, all four
// networks learn, and a resumed run (history pools included) ends where an
// uninterrupted one does.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <random>
#include <torch/torch.h>

#include "tests/support/pattern_images.h"
#include "tests/support/short_run.h"
#include "tests/support/tiny_run.h"
#include "trainer/cycle_gan.h"
#include "trainer/trainer.h"

namespace atelier::trainer {
namespace {
namespace fs = std::filesystem;

Config tiny_cyclegan() {
  Config c;
  c.model.family = "cyclegan";
  c.model.resnet = {4, 1};
  c.model.discriminator.width = 4;
  c.model.pool_size = 3;
  c.loss.adversarial = models::Adversarial::LSGAN;
  c.train.threads = 1;
  return c;
}

double term(const StepLosses& l, const std::string& name) {
  for (const auto& [key, value] : l.terms)
    if (key == name) return value;
  ADD_FAILURE() << "no term " << name;
  return 0;
}

// The losses written out with plain tensor arithmetic, on a second model
// built from the same seed (so with the same weights) that takes no step.
TEST(CycleGANStep, EveryTermMatchesAHandComputation) {
  const auto config = tiny_cyclegan();
  torch::manual_seed(5);
  CycleGAN stepped(config);
  torch::manual_seed(5);
  CycleGAN reference(config);
  const auto a = torch::rand({2, 3, 32, 32}) * 2 - 1;
  const auto b = torch::rand({2, 3, 32, 32}) * 2 - 1;
  const auto losses = stepped.step(a, b, 1.0);

  torch::NoGradGuard no_grad;
  const auto fake_b = reference.g_a->forward(a);
  const auto fake_a = reference.g_b->forward(b);
  const auto mse_to = [](const torch::Tensor& x, double target) { return (x - target).pow(2).mean().item<double>(); };
  const auto l1 = [](const torch::Tensor& x, const torch::Tensor& y) { return (x - y).abs().mean().item<double>(); };
  const double adv_a = mse_to(reference.d_a->forward(fake_b), 1);
  const double adv_b = mse_to(reference.d_b->forward(fake_a), 1);
  const double cycle_a = l1(reference.g_b->forward(fake_b), a);
  const double cycle_b = l1(reference.g_a->forward(fake_a), b);
  const double idt_a = l1(reference.g_a->forward(b), b);
  const double idt_b = l1(reference.g_b->forward(a), a);
  // The pools are still filling, so the critics see this step's fakes.
  const double d_a = 0.5 * (mse_to(reference.d_a->forward(b), 1) + mse_to(reference.d_a->forward(fake_b), 0));
  const double d_b = 0.5 * (mse_to(reference.d_b->forward(a), 1) + mse_to(reference.d_b->forward(fake_a), 0));

  const double tol = 1e-5;
  EXPECT_NEAR(term(losses, "adv_a"), adv_a, tol);
  EXPECT_NEAR(term(losses, "adv_b"), adv_b, tol);
  EXPECT_NEAR(term(losses, "cycle_a"), cycle_a, tol);
  EXPECT_NEAR(term(losses, "cycle_b"), cycle_b, tol);
  EXPECT_NEAR(term(losses, "idt_a"), idt_a, tol);
  EXPECT_NEAR(term(losses, "idt_b"), idt_b, tol);
  EXPECT_NEAR(term(losses, "d_a"), d_a, tol);
  EXPECT_NEAR(term(losses, "d_b"), d_b, tol);
  // lambda = 10, identity 0.5 * lambda, as the paper.
  EXPECT_NEAR(losses.g, adv_a + adv_b + 10 * (cycle_a + cycle_b) + 5 * (idt_a + idt_b), 1e-4);
  EXPECT_NEAR(losses.d, d_a + d_b, tol);
  EXPECT_EQ(stepped.pool_a.size(), 2);
  EXPECT_EQ(stepped.pool_b.size(), 2);
}

TEST(CycleGANStep, WithoutIdentityWeightTheIdentityTermsAreZero) {
  auto config = tiny_cyclegan();
  config.loss.identity_weight = 0;
  torch::manual_seed(6);
  CycleGAN gan(config);
  const auto losses = gan.step(torch::rand({1, 3, 32, 32}) * 2 - 1, torch::rand({1, 3, 32, 32}) * 2 - 1, 1.0);
  EXPECT_EQ(term(losses, "idt_a"), 0.0);
  EXPECT_EQ(term(losses, "idt_b"), 0.0);
  EXPECT_NEAR(losses.g,
              term(losses, "adv_a") + term(losses, "adv_b") + 10 * (term(losses, "cycle_a") + term(losses, "cycle_b")),
              1e-4);
}

// Every weight of all four networks moves in one step (the biases in front
// of instance norm have no gradient by construction, so only weights count).
TEST(CycleGANStep, OneStepChangesAllFourNetworks) {
  torch::manual_seed(7);
  CycleGAN gan(tiny_cyclegan());
  std::map<std::string, torch::Tensor> before;
  const std::map<std::string, torch::nn::Module*> networks = {
      {"G_A", gan.g_a.get()}, {"G_B", gan.g_b.get()}, {"D_A", gan.d_a.get()}, {"D_B", gan.d_b.get()}};
  for (const auto& [net, module] : networks)
    for (const auto& p : module->named_parameters()) before[net + "." + p.key()] = p.value().clone();
  gan.step(torch::rand({2, 3, 32, 32}) * 2 - 1, torch::rand({2, 3, 32, 32}) * 2 - 1, 1.0);
  for (const auto& [net, module] : networks) {
    int weights = 0;
    for (const auto& p : module->named_parameters()) {
      if (p.key().find("weight") == std::string::npos) continue;
      ++weights;
      EXPECT_FALSE(torch::equal(before.at(net + "." + p.key()), p.value())) << net << "." << p.key();
    }
    EXPECT_GT(weights, 3) << net;
  }
}

TEST(CycleGANStep, SampleColumnsAreTheTranslationsAndTheirRoundTrips) {
  torch::manual_seed(8);
  CycleGAN gan(tiny_cyclegan());
  const auto a = torch::rand({2, 3, 32, 32}) * 2 - 1;
  const auto b = torch::rand({2, 3, 32, 32}) * 2 - 1;
  const auto columns = gan.sample_columns(a, b);
  ASSERT_EQ(columns.size(), 6u);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(columns[0], a));
  EXPECT_TRUE(torch::allclose(columns[1], gan.g_a->forward(a)));
  EXPECT_TRUE(torch::allclose(columns[2], gan.g_b->forward(gan.g_a->forward(a))));
  EXPECT_TRUE(torch::equal(columns[3], b));
  EXPECT_TRUE(torch::allclose(columns[4], gan.g_b->forward(b)));
}

// snapshot() copies the state now and serialises it on the checkpoint's
// writer thread, later: its files must hold the moment of the snapshot, not
// the state after the steps that ran meanwhile. A twin that took the same
// first step and no second one is that moment.
TEST(CycleGANSnapshot, FilesHoldTheStateOfTheMomentTheyWereTaken) {
  const auto config = tiny_cyclegan();
  const auto dir = fs::temp_directory_path() / ("atelier-snapshot-" + std::to_string(std::random_device{}()));
  const auto write_all = [](const fs::path& to, const std::vector<checkpoint::StateFile>& files) {
    fs::create_directories(to);
    for (const auto& f : files) {
      const auto bytes = f.produce ? f.produce() : f.bytes;
      std::ofstream(to / f.name, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
  };
  const auto a = torch::rand({2, 3, 32, 32}) * 2 - 1;
  const auto b = torch::rand({2, 3, 32, 32}) * 2 - 1;
  torch::manual_seed(5);
  CycleGAN gan(config);
  torch::manual_seed(5);
  CycleGAN twin(config);
  for (auto* model : {&gan, &twin}) {
    torch::manual_seed(7);  // the pools draw from the global generator
    model->step(a, b, 1.0);  // the optimisers have moments now
  }
  const auto copies = gan.snapshot();
  gan.step(b, a, 1.0);  // moves every network and both optimisers on
  write_all(dir / "copied", copies);
  write_all(dir / "twin", twin.snapshot());
  for (const char* which : {"copied", "twin"}) write_all(dir / which / "rank-0", twin.snapshot_own());

  std::ostringstream generator_now;
  torch::save(twin.g_a, generator_now);
  EXPECT_EQ(copies[0].name, "generator_a.pt");
  ASSERT_TRUE(copies[0].produce);
  EXPECT_TRUE(copies[0].produce() == generator_now.str()) << "a module's bytes are torch::save's of that moment";
  // The twin's optimisers reached the same state in other tensors (other
  // TensorImpl addresses): their files are the same bytes all the same.
  const auto twin_files = twin.snapshot();
  for (const size_t i : {4u, 5u}) {
    ASSERT_EQ(copies[i].name, twin_files[i].name);
    EXPECT_TRUE(copies[i].produce() == twin_files[i].produce()) << copies[i].name << " differs from the twin's";
  }
  // Both resume to the same state: one more step from each ends
  // bit-identical (Adam's moments and step counts included).
  std::vector<std::vector<torch::Tensor>> after;
  for (const char* which : {"copied", "twin"}) {
    torch::manual_seed(9);
    CycleGAN resumed(config);
    resumed.load(dir / which, RankShare{1, 0, 1});
    torch::manual_seed(11);
    resumed.step(a, b, 1.0);
    after.emplace_back();
    for (const auto& t : resumed.state_tensors()) after.back().push_back(t.detach().clone());
  }
  ASSERT_EQ(after[0].size(), after[1].size());
  for (size_t i = 0; i < after[0].size(); ++i) EXPECT_TRUE(torch::equal(after[0][i], after[1][i])) << i;
  std::vector<torch::Tensor> moved;
  for (const auto& t : gan.state_tensors()) moved.push_back(t.detach().clone());
  EXPECT_FALSE(torch::equal(moved[0], twin.state_tensors()[0])) << "the second step must have moved gan on";
  fs::remove_all(dir);
}

class CycleGANRun : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("atelier-cyclegan-" + std::to_string(std::random_device{}()));
    testing_support::write_pattern_images(root / "content", 5, 1);
    testing_support::write_pattern_images(root / "style", 3, 2);
  }
  void TearDown() override { fs::remove_all(root); }

  Config tiny(const std::string& name, int64_t steps) const {
    Config c = testing_support::short_run(tiny_cyclegan(), root, name, steps);
    c.checkpoint.every_steps = 4;
    return c;
  }

  // Every parameter of a checkpoint's four networks, then rank 0's pools.
  static std::vector<torch::Tensor> saved(const fs::path& ckpt) {
    const auto config = tiny_cyclegan();
    std::vector<torch::Tensor> out;
    for (const auto& [name, value] :
         testing_support::cyclegan_parameters(ckpt, config.model.resnet, config.model.discriminator))
      out.push_back(value);
    std::vector<torch::Tensor> pools;
    torch::load(pools, (ckpt / "rank-0" / "pools.pt").string());
    out.insert(out.end(), pools.begin(), pools.end());
    return out;
  }

  fs::path root;
};

// Ten steps straight against six, then a resume for four: the pools (full
// after two steps, so swapping at random from then on) are restored with the
// weights, optimisers and RNG, and the two runs end bit-identical.
TEST_F(CycleGANRun, ResumedRunEndsBitIdenticalPoolsIncluded) {
  const auto full = train(tiny("full", 10), "a", false);
  train(tiny("split", 6), "b", false);
  const auto resumed = train(tiny("split", 10), "b", true);
  EXPECT_EQ(resumed.first_step, 6);
  const auto expected = saved(full.checkpoint);
  const auto actual = saved(resumed.checkpoint);
  ASSERT_EQ(expected.size(), actual.size());
  ASSERT_GT(expected.size(), 20u);
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_TRUE(torch::equal(expected[i], actual[i])) << i;
  EXPECT_EQ(actual.back().size(0), 3);  // a full pool of pool_size images
  EXPECT_TRUE(fs::exists(fs::path(full.run_dir) / "samples" / "step-000004.png"));
}

}  // namespace
}  // namespace atelier::trainer
