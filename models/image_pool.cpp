// The history of generated images a CycleGAN discriminator is trained on
// (Shrivastava et al. 2017), as the reference implementation's ImagePool.
#include "models/models.h"

namespace atelier::models {

ImagePool::ImagePool(int64_t capacity) : capacity_(capacity) {
  if (capacity < 0) throw ModelError("image pool size must be >= 0, got " + std::to_string(capacity));
}

torch::Tensor ImagePool::query(const torch::Tensor& images) {
  if (capacity_ == 0) return images;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  out.reserve(static_cast<size_t>(images.size(0)));
  for (int64_t i = 0; i < images.size(0); ++i) {
    auto image = images[i].detach().clone();
    if (static_cast<int64_t>(images_.size()) < capacity_) {
      images_.push_back(image);  // filling up: store it and return it
      out.push_back(image);
    } else if (torch::rand({1}).item<double>() > 0.5) {
      // Half the time: return an older image and keep the new one in its place.
      const int64_t slot = torch::randint(capacity_, {1}).item<int64_t>();
      out.push_back(images_[static_cast<size_t>(slot)]);
      images_[static_cast<size_t>(slot)] = image;
    } else {
      out.push_back(image);
    }
  }
  return torch::stack(out);
}

torch::Tensor ImagePool::state() const {
  if (images_.empty()) return torch::empty({0});
  return torch::stack(images_);
}

void ImagePool::load_state(const torch::Tensor& images) {
  if (images.numel() == 0) {
    images_.clear();
    return;
  }
  if (images.dim() != 4 || images.size(0) > capacity_)
    throw ModelError("image pool state of shape " + c10::str(images.sizes()) + " does not fit a pool of " +
                     std::to_string(capacity_) + " images");
  images_.clear();
  for (int64_t i = 0; i < images.size(0); ++i) images_.push_back(images[i].clone());
}

}  // namespace atelier::models
