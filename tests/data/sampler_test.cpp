// The shared sampler: per-rank slices are disjoint and cover the stream, each
// epoch uses every content image once, and the order is a pure function of
// (seed, sample) so that any slice can be rebuilt on its own.
#include "data/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

namespace {

using atelier::data::detail::BadImages;
using atelier::data::detail::ImageList;
using atelier::data::detail::rank_first_sample;
using atelier::data::detail::Sampler;

// A list of `count` names; the sampler's order never decodes.
class NamedImages : public ImageList {
 public:
  explicit NamedImages(int64_t count) : count_(count) {}
  int64_t size() const override { return count_; }
  std::string name(int64_t index) const override { return "image-" + std::to_string(index); }
  cv::Mat decode(int64_t, int64_t, std::string& why) const override {
    why = "not decodable";
    return {};
  }

 private:
  int64_t count_;
};

TEST(Sampler, RankSlicesAreDisjointAndCoverTheEpochForWorldSizesOneToEight) {
  const int64_t images = 23, batch = 2;
  NamedImages list(images);
  BadImages bad;
  Sampler sampler(list, "content", 5, bad);
  for (int64_t world = 1; world <= 8; ++world) {
    const int64_t batches = (images + batch * world - 1) / (batch * world);  // at least one epoch
    std::vector<int64_t> taken;
    for (int64_t rank = 0; rank < world; ++rank) {
      std::set<int64_t> mine;
      for (int64_t b = 0; b < batches; ++b) {
        const int64_t first = rank_first_sample(0, b, batch, rank, world);
        for (int64_t i = 0; i < batch; ++i) mine.insert(first + i);
      }
      EXPECT_EQ(mine.size(), static_cast<size_t>(batches * batch)) << "world " << world << " rank " << rank;
      taken.insert(taken.end(), mine.begin(), mine.end());
    }
    std::sort(taken.begin(), taken.end());
    std::vector<int64_t> expected(static_cast<size_t>(batches * batch * world));
    std::iota(expected.begin(), expected.end(), int64_t{0});
    EXPECT_EQ(taken, expected) << "world " << world << ": slices overlap or leave gaps";
    // The first epoch's samples name every image exactly once.
    std::set<int64_t> epoch;
    for (int64_t sample = 0; sample < images; ++sample) epoch.insert(sampler.image_of(sample));
    EXPECT_EQ(epoch.size(), static_cast<size_t>(images)) << "world " << world;
  }
}

TEST(Sampler, EpochsArePermutationsThatDifferAndDependOnlyOnTheSeed) {
  NamedImages list(16);
  BadImages bad;
  Sampler a(list, "content", 3, bad), again(list, "content", 3, bad), other(list, "content", 4, bad);
  Sampler style(list, "style", 3, bad);
  std::vector<int64_t> epoch0, epoch1, repeat, seeded, styled;
  for (int64_t s = 0; s < 16; ++s) {
    epoch0.push_back(a.image_of(s));
    epoch1.push_back(a.image_of(16 + s));
    repeat.push_back(again.image_of(s));
    seeded.push_back(other.image_of(s));
    styled.push_back(style.image_of(s));
  }
  EXPECT_EQ(epoch0, repeat);
  EXPECT_NE(epoch0, epoch1) << "each epoch draws a new permutation";
  EXPECT_NE(epoch0, seeded) << "the seed changes the order";
  EXPECT_NE(epoch0, styled) << "content and style are sampled independently";
  // Asking for a late sample first gives the same answer as walking there.
  Sampler fresh(list, "content", 3, bad);
  EXPECT_EQ(fresh.image_of(16 + 7), epoch1[7]);
}

TEST(Sampler, ReportsWhenNoImageDecodes) {
  NamedImages list(3);
  BadImages bad;
  Sampler sampler(list, "style", 0, bad);
  std::vector<uint8_t> out(8 * 8 * 3);
  try {
    sampler.draw(0, {8, 8, false}, out.data());
    ADD_FAILURE() << "expected a DataError";
  } catch (const atelier::data::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("style"), std::string::npos) << e.what();
  }
  EXPECT_EQ(bad.count(), 3);
}

}  // namespace
