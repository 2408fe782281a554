// Shared by the shard, sampler and service tests: a temporary folder with
// tiny real images (synthetic PNG patterns and opencv-doc photographs),
// their shards, and loader servers on 127.0.0.1 ephemeral ports.
#pragma once

#include "data/data.h"
#include "tests/support/image_files.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "../support/pattern_images.h"

namespace atelier::data_tests {

namespace fs = std::filesystem;

constexpr const char* kToken = "job-token-0123456789abcdef";

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    root_ = fs::temp_directory_path() / ("atelier-service-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    testing_support::write_pattern_images(root_ / "content", 7, 1);
    testing_support::write_pattern_images(root_ / "style", 3, 2);
  }
  void TearDown() override {
    servers_.clear();
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  fs::path path(const std::string& name) const { return root_ / name; }

  // Shards the content and style folders into shards/content and shards/style.
  void shard_all() {
    for (const char* what : {"content", "style"}) {
      data::ShardOptions options;
      options.input = path(what).string();
      options.output = path(std::string("shards/") + what).string();
      options.shard_bytes = 1024;  // several shards even for tiny images
      data::write_shards(options);
    }
  }

  // A server of the shards; `queue` bounds each client's requests in flight.
  data::LoaderServer& start_server(int64_t queue = 4, int64_t workers = 2, double frame_timeout_s = 30) {
    data::ServerOptions options;
    options.content = path("shards/content").string();
    options.style = path("shards/style").string();
    options.host = "127.0.0.1";
    options.port = 0;
    options.token = kToken;
    options.workers = workers;
    options.queue_batches = queue;
    options.frame_timeout_s = frame_timeout_s;
    servers_.push_back(std::make_unique<data::LoaderServer>(options));
    return *servers_.back();
  }

  static std::string address(const data::LoaderServer& server) {
    return "127.0.0.1:" + std::to_string(server.port());
  }

  data::LoaderOptions folder_options() const {
    data::LoaderOptions o;
    o.content = data::list_images({path("content").string()});
    o.style = data::list_images({path("style").string()});
    o.augment = {24, 16, true};
    o.batch_size = 2;
    o.workers = 2;
    o.prefetch = 3;
    o.seed = 11;
    return o;
  }

  // The same stream as folder_options(), from `servers`.
  data::ServiceOptions service_options(std::vector<std::string> servers) const {
    const auto f = folder_options();
    data::ServiceOptions o;
    o.servers = std::move(servers);
    o.token = kToken;
    o.augment = f.augment;
    o.batch_size = f.batch_size;
    o.prefetch = f.prefetch;
    o.seed = f.seed;
    o.timeout_s = 30;
    return o;
  }

  fs::path root_;
  std::vector<std::unique_ptr<data::LoaderServer>> servers_;
};

inline void expect_same_batch(const data::ContentStyleBatch& a, const data::ContentStyleBatch& b, int number) {
  EXPECT_TRUE(a.start == b.start) << "batch " << number << ": start (" << a.start.epoch << ", " << a.start.index
                                  << ") vs (" << b.start.epoch << ", " << b.start.index << ")";
  EXPECT_TRUE(torch::equal(a.content, b.content)) << "batch " << number << " content differs";
  EXPECT_TRUE(torch::equal(a.style, b.style)) << "batch " << number << " style differs";
}

inline std::vector<unsigned char> read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_bytes(const fs::path& file, const std::vector<unsigned char>& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace atelier::data_tests
