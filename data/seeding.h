// Private to data/: every random choice the loader makes is derived from
// (seed, stream, counter) by hashing, never from a shared generator, so any
// sample can be rebuilt on its own by any worker, after any resume.
#pragma once

#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

namespace atelier::data::detail {

// Independent random streams; the values are part of the sample order, so
// changing them changes every run's batches.
enum class Stream : uint64_t {
  kContentOrder = 1,    // permutation of the content images per epoch
  kStyleOrder = 2,      // permutation of the style images per cycle
  kContentAugment = 3,  // crop/flip of content sample n
  kStyleAugment = 4,    // crop/flip of style sample n
};

// Steele, Lea & Flood's SplitMix64 finaliser: a bijection on 64 bits that
// turns nearby inputs (seed 0, 1, 2...) into unrelated outputs.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Seed for item `counter` (an epoch, a cycle or a sample number) of `stream`.
inline uint64_t derive_seed(uint64_t seed, Stream stream, uint64_t counter) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(stream)) ^ counter);
}

// Uniform integer in [0, n). std::uniform_int_distribution is not used
// because its algorithm differs between standard libraries, and a checkpoint
// must resume to the same batches wherever it is loaded. The modulo bias is
// below n / 2^64, far beneath anything an image crop can show.
inline uint64_t uniform_below(std::mt19937_64& generator, uint64_t n) { return generator() % n; }

// Fisher-Yates shuffle of 0..n-1 driven by `seed`.
inline std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::mt19937_64 generator(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(uniform_below(generator, static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

}  // namespace atelier::data::detail
