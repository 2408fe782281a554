// TransposedConv2d: ConvTranspose2d computed as the input gradient of the
// convolution it undoes, so that it runs on oneDNN's convolution kernels.
#include "models/models.h"

#include <ATen/autocast_mode.h>

#include <ostream>

namespace atelier::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Contiguous in the image's own memory order (NCHW or channels-last), which
// oneDNN then keeps.
torch::Tensor dense(const torch::Tensor& t) { return t.contiguous(t.suggest_memory_format()); }

// The convolution whose input gradient the transposed convolution is: same
// weight, stride, padding, dilation and groups, mapping an output-sized
// image back to the input's size.
struct Geometry {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;

  torch::Tensor input_gradient(const torch::Tensor& grad_out, const torch::Tensor& like_input,
                               const torch::Tensor& weight) const {
    return std::get<0>(at::convolution_backward(grad_out, like_input, weight, c10::nullopt, stride, padding,
                                                dilation, /*transposed=*/false, {0, 0}, groups,
                                                {true, false, false}));
  }
  torch::Tensor weight_gradient(const torch::Tensor& grad_out, const torch::Tensor& input,
                                const torch::Tensor& weight) const {
    return std::get<1>(at::convolution_backward(grad_out, input, weight, c10::nullopt, stride, padding, dilation,
                                                /*transposed=*/false, {0, 0}, groups, {false, true, false}));
  }
  torch::Tensor convolve(const torch::Tensor& image, const torch::Tensor& weight) const {
    return at::conv2d(image, weight, {}, stride, padding, dilation, groups);
  }
};

// y = A^T x, where A is the convolution above. Then dL/dx = A (dL/dy), and
// dL/dW is the convolution's weight gradient with the roles of image and
// output gradient swapped. (The bias is added outside, by autograd's add.)
struct TransposedConvFunction : torch::autograd::Function<TransposedConvFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input, const torch::Tensor& weight,
                               const Geometry& geometry,
                               const std::vector<int64_t>& output_size) {
    const auto image = dense(input);
    ctx->save_for_backward({image, weight});
    ctx->saved_data["stride"] = geometry.stride;
    ctx->saved_data["padding"] = geometry.padding;
    ctx->saved_data["dilation"] = geometry.dilation;
    ctx->saved_data["groups"] = geometry.groups;
    const auto like_output = at::empty(output_size, image.options().memory_format(image.suggest_memory_format()));
    return geometry.input_gradient(image, like_output, weight);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& input = saved[0];
    const auto& weight = saved[1];
    const Geometry geometry{ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
                            ctx->saved_data["dilation"].toIntVector(), ctx->saved_data["groups"].toInt()};
    const auto grad = dense(grads[0]);
    torch::Tensor grad_input, grad_weight;
    if (ctx->needs_input_grad(0)) grad_input = geometry.convolve(grad, weight);
    if (ctx->needs_input_grad(1)) grad_weight = geometry.weight_gradient(input, grad, weight);
    return {grad_input, grad_weight, torch::Tensor(), torch::Tensor()};
  }
};

std::vector<int64_t> as_vector(const torch::ExpandingArray<2>& a) { return {(*a)[0], (*a)[1]}; }

}  // namespace

TransposedConv2dImpl::TransposedConv2dImpl(torch::nn::ConvTranspose2dOptions options_) : options(std::move(options_)) {
  if (!c10::holds_alternative<torch::enumtype::kZeros>(options.padding_mode()))
    throw ModelError("transposed convolution supports zero padding only");
  const auto extra = as_vector(options.output_padding()), s = as_vector(options.stride()),
             d = as_vector(options.dilation());
  // torch allows output_padding below the dilation too; the convolution
  // this layer differentiates maps the output back to the input's size only
  // when it is below the stride.
  for (int i = 0; i < 2; ++i)
    if (extra[i] >= s[i])
      throw ModelError("transposed convolution: output_padding " + std::to_string(extra[i]) +
                       " must be smaller than the stride " + std::to_string(s[i]));
  reset();
}

// Weights made by torch's own ConvTranspose2d, so shapes, names and the
// default initialisation (and its draws from the global generator) match it.
void TransposedConv2dImpl::reset() {
  torch::nn::ConvTranspose2d made(options);
  weight = register_parameter("weight", made->weight.detach());
  if (options.bias()) bias = register_parameter("bias", made->bias.detach());
}

void TransposedConv2dImpl::pretty_print(std::ostream& stream) const {
  stream << "atelier::models::TransposedConv2d(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride() << ")";
}

torch::Tensor TransposedConv2dImpl::forward(const torch::Tensor& input) {
  if (input.dim() != 4 || input.size(1) != options.in_channels())
    throw ModelError("transposed convolution over " + std::to_string(options.in_channels()) +
                     " channels takes [N, " + std::to_string(options.in_channels()) + ", H, W], got " +
                     c10::str(input.sizes()));
  const auto k = as_vector(options.kernel_size()), s = as_vector(options.stride()), p = as_vector(options.padding()),
             d = as_vector(options.dilation()), extra = as_vector(options.output_padding());
  if (!input.is_cpu())  // cuDNN runs the transposed convolution well itself
    return torch::conv_transpose2d(input, weight, bias, s, p, extra, options.groups(), d);
  std::vector<int64_t> size = {input.size(0), options.out_channels(), 0, 0};
  for (int i = 0; i < 2; ++i)
    size[2 + i] = (input.size(2 + i) - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + extra[i] + 1;
  // Under autocast the layer computes in the autocast type like every other
  // convolution (CUDA autocast lowers conv_transpose2d too; LibTorch 1.13's
  // CPU autocast leaves it fp32). The casts are autograd's, so the gradients
  // reach the fp32 weights as fp32.
  auto x = input, w = weight, b = bias;
  if (at::autocast::is_cpu_enabled()) {
    const auto low = at::autocast::get_autocast_cpu_dtype();
    x = at::autocast::cached_cast(low, input, c10::DeviceType::CPU);
    w = at::autocast::cached_cast(low, weight, c10::DeviceType::CPU);
    if (b.defined()) b = at::autocast::cached_cast(low, bias, c10::DeviceType::CPU);
  }
  const auto out = TransposedConvFunction::apply(x, w, Geometry{s, p, d, options.groups()}, size);
  return b.defined() ? out + b.view({1, -1, 1, 1}) : out;
}

}  // namespace atelier::models
