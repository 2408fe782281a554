// Checkpoints appear only when complete, verify their bytes, and a failed
// save leaves the previous checkpoint in charge.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <iterator>
#include <random>

#include "checkpoint/checkpoint.h"
#include "checkpoint/files.h"

namespace atelier::checkpoint {
namespace {
namespace fs = std::filesystem;

class CheckpointDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("atelier-ckpt-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }

  fs::path save_step(int64_t step, const std::string& payload) {
    return save(dir, {step, 0, 1, "hash"}, [&](const fs::path& staging) {
      std::ofstream(staging / "weights.bin", std::ios::binary) << payload;
      fs::create_directories(staging / "ranks");
      std::ofstream(staging / "ranks" / "rank-0.json") << "{}";
    });
  }

  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::string s;
    in >> s;
    return s;
  }

  fs::path dir;
};

TEST_F(CheckpointDir, SaveWritesManifestWithSizesAndChecksumsAndPointsLatestAtIt) {
  const auto path = save_step(10, "abcdef");
  EXPECT_EQ(path, dir / "step-10");
  EXPECT_EQ(read(dir / "LATEST"), "step-10");
  const auto m = read_manifest(path);
  EXPECT_EQ(m.step, 10);
  EXPECT_EQ(m.config_hash, "hash");
  ASSERT_EQ(m.files.size(), 2u);
  EXPECT_EQ(m.files[1].name, "weights.bin");
  EXPECT_EQ(m.files[1].size, 6u);
  EXPECT_EQ(m.files[1].crc32c, file_crc32c(path / "weights.bin"));
  EXPECT_NO_THROW(verify(path));
}

TEST_F(CheckpointDir, Crc32cOfKnownBytesIsTheStandardCheckValue) {
  std::ofstream(dir / "check", std::ios::binary) << "123456789";
  EXPECT_EQ(file_crc32c(dir / "check"), 0xE3069283u);
}

// The SSE4.2 instruction and Boost's table agree on every length and split.
TEST(Crc32c, HardwareAndTableAgreeAcrossChunkBoundaries) {
  std::mt19937 rng(7);
  std::string bytes(10007, '\0');
  for (auto& b : bytes) b = static_cast<char>(rng());
  for (size_t split : {0, 1, 7, 8, 9, 4096, 10006}) {
    detail::Crc32c hardware, table(false);
    for (auto* crc : {&hardware, &table}) {
      crc->update(bytes.data(), split);
      crc->update(bytes.data() + split, bytes.size() - split);
    }
    EXPECT_EQ(hardware.value(), table.value()) << split;
    EXPECT_EQ(hardware.value(), detail::crc32c(bytes)) << split;
  }
  detail::Crc32c check;
  check.update("123456789", 9);
  EXPECT_EQ(check.value(), 0xE3069283u);
}

// A CPU that has the instruction gets it (it once fell back silently).
TEST(Crc32c, TheInstructionIsUsedWhereTheCpuHasIt) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string text((std::istreambuf_iterator<char>(cpuinfo)), {});
  if (text.find(" sse4_2") == std::string::npos) GTEST_SKIP() << "no SSE4.2 on this CPU";
  EXPECT_TRUE(detail::Crc32c::hardware_available());
}

TEST_F(CheckpointDir, VerifyRejectsAFlippedByteAndAMissingFile) {
  const auto path = save_step(1, "abcdef");
  {
    std::fstream f(path / "weights.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2);
    f.put('X');
  }
  EXPECT_THROW(verify(path), CheckpointError);
  fs::remove(path / "weights.bin");
  try {
    verify(path);
    FAIL() << "missing file not detected";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("weights.bin"), std::string::npos);
  }
}

TEST_F(CheckpointDir, FailedSaveLeavesPreviousCheckpointAndNoDebris) {
  save_step(1, "good");
  EXPECT_THROW(save(dir, {2, 0, 1, "h"},
                    [](const fs::path& staging) {
                      std::ofstream(staging / "partial.bin") << "half";
                      throw std::runtime_error("disk full");
                    }),
               std::runtime_error);
  EXPECT_FALSE(fs::exists(dir / "step-2"));
  EXPECT_EQ(read(dir / "LATEST"), "step-1");
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 2);  // step-1 and LATEST
}

TEST_F(CheckpointDir, LatestSkipsACorruptNewestCheckpoint) {
  save_step(1, "first");
  const auto newest = save_step(2, "second");
  std::ofstream(newest / "weights.bin", std::ios::trunc) << "tampered";
  EXPECT_EQ(latest(dir), dir / "step-1");
}

// Each kind of damage to the newest checkpoint makes resume fall back to the
// previous one.
TEST_F(CheckpointDir, LatestFallsBackOnTruncatedFlippedMissingFileOrMissingManifest) {
  const std::vector<std::pair<std::string, std::function<void(const fs::path&)>>> damages = {
      {"truncated", [](const fs::path& p) { fs::resize_file(p / "weights.bin", 3); }},
      {"flipped byte",
       [](const fs::path& p) {
         std::fstream f(p / "weights.bin", std::ios::in | std::ios::out | std::ios::binary);
         f.seekp(0);
         f.put('#');
       }},
      {"missing file", [](const fs::path& p) { fs::remove(p / "ranks" / "rank-0.json"); }},
      {"missing manifest", [](const fs::path& p) { fs::remove(p / "manifest.json"); }},
  };
  for (const auto& [what, damage] : damages) {
    fs::remove_all(dir);
    save_step(1, "first");
    const auto newest = save_step(2, "second");
    damage(newest);
    EXPECT_FALSE(verifies(newest)) << what;
    EXPECT_EQ(latest(dir), dir / "step-1") << what;
    EXPECT_EQ(resolve(dir), dir / "step-1") << what;
  }
}

TEST_F(CheckpointDir, LatestIsEmptyWithoutCheckpointsAndIgnoresStagingDirectories) {
  EXPECT_FALSE(latest(dir).has_value());
  fs::create_directories(dir / ".staging-step-5");
  EXPECT_FALSE(latest(dir).has_value());
}

TEST_F(CheckpointDir, RetainKeepsTheNewestAndRemovesStaging) {
  for (int step : {1, 2, 3, 4}) save_step(step, "x" + std::to_string(step));
  fs::create_directories(dir / ".staging-step-9");
  retain(dir, 2);
  EXPECT_FALSE(fs::exists(dir / "step-1"));
  EXPECT_FALSE(fs::exists(dir / "step-2"));
  EXPECT_TRUE(fs::exists(dir / "step-3"));
  EXPECT_TRUE(fs::exists(dir / "step-4"));
  EXPECT_FALSE(fs::exists(dir / ".staging-step-9"));
}

TEST_F(CheckpointDir, RetainAlsoKeepsEveryKeepEveryStep) {
  for (int step : {100, 200, 300, 400, 500}) save_step(step, "x");
  retain(dir, 1, 200);
  EXPECT_FALSE(fs::exists(dir / "step-100"));
  EXPECT_TRUE(fs::exists(dir / "step-200"));
  EXPECT_FALSE(fs::exists(dir / "step-300"));
  EXPECT_TRUE(fs::exists(dir / "step-400"));
  EXPECT_TRUE(fs::exists(dir / "step-500"));
}

TEST_F(CheckpointDir, RetainNeverDeletesTheOnlyIntactCheckpoint) {
  save_step(1, "intact");
  save_step(2, "damaged");
  save_step(3, "damaged");
  for (int step : {2, 3}) fs::remove(dir / ("step-" + std::to_string(step)) / "weights.bin");
  retain(dir, 1);
  EXPECT_TRUE(fs::exists(dir / "step-1"));  // the run's only way back
  EXPECT_FALSE(fs::exists(dir / "step-2"));
  EXPECT_TRUE(fs::exists(dir / "step-3"));  // newest and LATEST: kept by policy
  EXPECT_EQ(latest(dir), dir / "step-1");
}

TEST_F(CheckpointDir, ResolveAcceptsStepDirLatestFileAndRunDir) {
  save_step(1, "a");
  save_step(2, "b");
  EXPECT_EQ(resolve(dir / "step-1"), dir / "step-1");
  EXPECT_EQ(resolve(dir / "LATEST"), dir / "step-2");
  EXPECT_EQ(resolve(dir), dir / "step-2");
  EXPECT_EQ(resolve(dir.parent_path() / dir.filename()), dir / "step-2");
  try {
    resolve(dir / "step-7");
    FAIL() << "no error";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("step-7"), std::string::npos);
  }
}

// A manifest from another machine names files; none may lie outside the
// checkpoint, and numbers the writer never writes are refused by name
// (found by fuzzing read_manifest, tests/fuzz/manifest_fuzz.cpp).
TEST_F(CheckpointDir, ManifestsNamingFilesOutsideTheCheckpointOrImpossibleWorldsAreRefused) {
  const auto path = save_step(3, "abc");
  std::ifstream in(path / "manifest.json");
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto refused = [&](const std::string& from, const std::string& to, const std::string& why) {
    std::string text = good;
    const auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::ofstream(path / "manifest.json", std::ios::trunc) << text;
    try {
      verify(path, Check::Sizes);
      ADD_FAILURE() << "accepted " << to;
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  refused("\"weights.bin\"", "\"../weights.bin\"", "'../weights.bin' is not a path inside the checkpoint");
  refused("\"weights.bin\"", "\"/etc/hostname\"", "'/etc/hostname' is not a path inside the checkpoint");
  refused("\"weights.bin\"", "\"ranks/../..\"", "is not a path inside the checkpoint");
  refused("\"weights.bin\"", "\"\"", "'' is not a path inside the checkpoint");
  refused("\"weights.bin\"", "\"ranks/rank-0.json\"", "file 'ranks/rank-0.json' is listed twice");
  refused("\"world_size\": 1", "\"world_size\": 0", "not a number of ranks");
  refused("\"step\": 3", "\"step\": -3", "negative step");
  refused("\"step\": 3", "\"step\": 3.5", "\"step\" is 3.5, not an integer in range");
  refused("\"size\": 3", "\"size\": 2e50", "not an integer in range");  // was a float-to-int cast (UBSan)
  refused("\"size\": 3", "\"size\": -3", "\"size\" is -3, not an integer in range");
  std::ofstream(path / "manifest.json", std::ios::trunc) << good;
  EXPECT_NO_THROW(verify(path));
}

}  // namespace
}  // namespace atelier::checkpoint
