// Checkpoint state copied in the step and serialised on the writer thread:
// an asynchronous save then costs the step a copy of the tensors (~5 ms for
// the demo model) instead of torch::save's pickling and zip CRCs (~20 ms).
// The bytes are what torch::save of the live module or optimiser would
// have written at the moment of the copy.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trainer/gan_model.h"

namespace atelier::trainer {
namespace {

torch::Tensor copy_of(const torch::Tensor& t) {
  if (!t.defined()) return t;
  return t.detach().clone().requires_grad_(t.requires_grad());
}

// A module's tensors in the layout Module::save writes: its own parameters,
// its buffers, then each serialisable child in registration order.
struct ModuleCopy {
  std::vector<std::pair<std::string, torch::Tensor>> parameters, buffers;
  std::vector<std::pair<std::string, ModuleCopy>> children;
};

ModuleCopy copy_module(const torch::nn::Module& module) {
  ModuleCopy copy;
  for (const auto& p : module.named_parameters(/*recurse=*/false)) copy.parameters.emplace_back(p.key(), copy_of(p.value()));
  for (const auto& b : module.named_buffers(/*recurse=*/false)) copy.buffers.emplace_back(b.key(), copy_of(b.value()));
  for (const auto& child : module.named_children())
    if (child.value()->is_serializable()) copy.children.emplace_back(child.key(), copy_module(*child.value()));
  return copy;
}

void write_module(torch::serialize::OutputArchive& archive, const ModuleCopy& copy) {
  for (const auto& [key, tensor] : copy.parameters) archive.write(key, tensor);
  for (const auto& [key, tensor] : copy.buffers) archive.write(key, tensor, /*is_buffer=*/true);
  for (const auto& [key, child] : copy.children) {
    torch::serialize::OutputArchive nested(archive.compilation_unit());
    write_module(nested, child);
    archive.write(key, nested);
  }
}

std::string bytes_of(torch::serialize::OutputArchive& archive) {
  std::string bytes;
  archive.save_to([&bytes](const void* data, size_t size) -> size_t {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  return bytes;
}

// The optimiser's state is keyed by its parameters' TensorImpl addresses.
std::string state_key(const torch::Tensor& parameter) {
  return c10::guts::to_string(parameter.unsafeGetTensorImpl());
}

std::unique_ptr<torch::optim::AdamParamState> copy_state(const torch::optim::AdamParamState& from) {
  auto to = std::make_unique<torch::optim::AdamParamState>();
  to->step(from.step());
  to->exp_avg(copy_of(from.exp_avg()));
  to->exp_avg_sq(copy_of(from.exp_avg_sq()));
  to->max_exp_avg_sq(copy_of(from.max_exp_avg_sq()));
  return to;
}

// Adam's parameter groups (their options) and the state of each parameter
// that has one. The parameters' values are not copied: an optimiser's file
// names its parameters by key and position only (the modules' files hold the
// values), so the writer rebuilds the groups around placeholders.
struct AdamCopy {
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
  std::vector<std::vector<std::unique_ptr<torch::optim::AdamParamState>>> states;  // null: no state yet
};

}  // namespace

checkpoint::StateFile copied(const std::string& name, const torch::nn::Module& module) {
  auto copy = std::make_shared<const ModuleCopy>(copy_module(module));
  checkpoint::StateFile file{name, {}, {}};
  file.produce = [copy] {
    torch::serialize::OutputArchive archive(std::make_shared<torch::jit::CompilationUnit>());
    write_module(archive, *copy);
    return bytes_of(archive);
  };
  return file;
}

checkpoint::StateFile copied(const std::string& name, const torch::optim::Adam& optimizer) {
  auto copy = std::make_shared<AdamCopy>();
  for (const auto& group : optimizer.param_groups()) {
    copy->options.push_back(group.options().clone());
    copy->states.emplace_back();
    for (const auto& p : group.params()) {
      const auto found = optimizer.state().find(state_key(p));
      copy->states.back().push_back(
          found == optimizer.state().end()
              ? nullptr
              : copy_state(static_cast<const torch::optim::AdamParamState&>(*found->second)));
    }
  }
  checkpoint::StateFile file{name, {}, {}};
  file.produce = [copy] {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    for (size_t g = 0; g < copy->states.size(); ++g) {
      std::vector<torch::Tensor> placeholders;
      for (size_t i = 0; i < copy->states[g].size(); ++i) placeholders.push_back(torch::empty({0}));
      groups.emplace_back(std::move(placeholders), copy->options[g]->clone());
    }
    torch::optim::Adam shadow(std::move(groups));
    for (size_t g = 0; g < copy->states.size(); ++g)
      for (size_t i = 0; i < copy->states[g].size(); ++i)
        if (const auto& state = copy->states[g][i])  // a private copy: the shadow may share its tensors
          shadow.state()[state_key(shadow.param_groups()[g].params()[i])] =
              static_cast<const torch::optim::OptimizerParamState&>(*state).clone();
    torch::serialize::OutputArchive archive(std::make_shared<torch::jit::CompilationUnit>());
    shadow.save(archive);
    return bytes_of(archive);
  };
  return file;
}

}  // namespace atelier::trainer
