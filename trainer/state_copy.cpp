// Checkpoint state copied in the step and serialised on the writer thread:
// an asynchronous save then costs the step a copy of the tensors (~5 ms for
// the demo model) instead of torch::save's pickling and zip CRCs (~20 ms).
// A module's bytes are what torch::save of the live module would have
// written at the moment of the copy; an optimiser's are torch::save's with
// parameters named by position (write_adam), which torch::load reads.
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
  // On the host whatever the device: checkpoints are device-free, and the
  // writer thread must not touch the GPU.
  return t.detach().to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true).requires_grad_(t.requires_grad());
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

// Parameter i of group g, as the optimiser's file names it.
std::string position_key(size_t group, size_t index) {
  return "group_" + std::to_string(group) + "_param_" + std::to_string(index);
}

// The archive Adam::save writes (torch/optim/serialize.h: "pytorch_version",
// "state", "param_groups"), which torch::load(Adam&) reads back, with one
// difference: Adam::save names each parameter by its TensorImpl's address
// and writes the states in hash-map order, so two processes that reach the
// same state write different bytes. Here a parameter is named by its
// position and the states are written in that order: the same state gives
// the same file, whatever process or world size made it.
void write_adam(torch::serialize::OutputArchive& archive, const AdamCopy& copy) {
  const auto unit = archive.compilation_unit();
  archive.write("pytorch_version", c10::IValue("1.5.0"));
  torch::serialize::OutputArchive states(unit);
  for (size_t g = 0; g < copy.states.size(); ++g)
    for (size_t i = 0; i < copy.states[g].size(); ++i)
      if (const auto& state = copy.states[g][i]) {
        torch::serialize::OutputArchive one(unit);
        state->serialize(one);
        states.write(position_key(g, i), one);
      }
  archive.write("state", states);
  torch::serialize::OutputArchive groups(unit);
  groups.write("param_groups/size", torch::tensor(static_cast<int64_t>(copy.states.size())));
  for (size_t g = 0; g < copy.states.size(); ++g) {
    torch::serialize::OutputArchive group(unit);
    group.write("params/size", torch::tensor(static_cast<int64_t>(copy.states[g].size())));
    for (size_t i = 0; i < copy.states[g].size(); ++i)
      group.write("params/" + std::to_string(i), c10::IValue(position_key(g, i)));
    torch::serialize::OutputArchive options(unit);
    static_cast<const torch::optim::AdamOptions&>(*copy.options[g]).serialize(options);
    group.write("options", options);
    groups.write("param_groups/" + std::to_string(g), group);
  }
  archive.write("param_groups", groups);
}

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
    torch::serialize::OutputArchive archive(std::make_shared<torch::jit::CompilationUnit>());
    write_adam(archive, *copy);
    return bytes_of(archive);
  };
  return file;
}

}  // namespace atelier::trainer
