// A BatchSource without files, for the loader's wrappers: batch i holds the
// value i everywhere, its cursor is (0, i + 1), and next() throws DataError
// once `fail_at` batches have been handed out.
#pragma once

#include <torch/torch.h>

#include <string>

#include "data/data.h"

namespace atelier::testing_support {

class CountingSource : public data::BatchSource {
 public:
  explicit CountingSource(int64_t fail_at = -1, bool pinned = false) : fail_at_(fail_at), pinned_(pinned) {}
  data::ContentStyleBatch next() override {
    if (handed_ == fail_at_) throw data::DataError("counting source: batch " + std::to_string(handed_) + " is broken");
    data::ContentStyleBatch batch;
    batch.content = torch::full({2, 3, 8, 8}, static_cast<float>(handed_));
    batch.style = -batch.content;
    if (pinned_) {
      batch.content = batch.content.pin_memory();
      batch.style = batch.style.pin_memory();
    }
    batch.first_sample = 2 * handed_;
    ++handed_;
    return batch;
  }
  data::Cursor cursor() const override { return {0, handed_}; }
  int64_t skipped_files() const override { return handed_ / 2; }
  double wait_seconds() const override { return 0; }

 private:
  int64_t handed_ = 0;
  int64_t fail_at_;
  bool pinned_;
};

}  // namespace atelier::testing_support
