#!/usr/bin/python3
"""Python reference of atelier's CycleGAN training step (bench baseline).

The step of the CycleGAN reference implementation (models/cycle_gan_model.py
of junyanz/pytorch-CycleGAN-and-pix2pix, optimize_parameters) with the
networks of python/atelier_models.py, which mirror models/ layer for layer:
G update (LSGAN, cycle L1 x 10, identity L1 x 5, D frozen), then D_A and
D_B on images from 50-image pools, Adam 2e-4 (0.5, 0.999), on random images.
Run by bench/compare_step.sh with Debian's python3-torch, which runs the
same LibTorch kernels as the C++ build. Prints one line:
"python median_ms=<ms> steps=<n>".

--transposed-conv conv-gradient computes the generators' ConvTranspose2d
layers the way atelier's C++ TransposedConv2d does (as the input gradient
of the convolution they undo, models/transposed_conv.cpp) instead of
torch's own CPU kernel: the baseline for what the language alone is worth.
--precision bf16 runs the forward passes under torch.autocast to bfloat16
and --channels-last keeps weights and images NHWC, as atelier's
train.precision and train.channels_last do.
"""
import argparse
import os
import random
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import atelier_models  # noqa: E402
from step_timing import channels_last, forward_passes, report_median_step, use_device  # noqa: E402


class ImagePool:
    """The reference's ImagePool."""

    def __init__(self, size):
        self.size, self.images = size, []

    def query(self, images):
        out = []
        for image in images:
            image = image.detach().unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.size - 1)
                out.append(self.images[i].clone())
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out, 0)


class ConvGradientTranspose(torch.autograd.Function):
    """conv_transpose2d(x, w) as the input gradient of conv2d(., w), as in models/transposed_conv.cpp."""

    @staticmethod
    def forward(ctx, x, w, out_size, stride, padding, dilation, groups):
        x = dense(x)
        ctx.save_for_backward(x, w)
        ctx.geometry = (stride, padding, dilation, groups)
        like_output = torch.empty(out_size, dtype=x.dtype, memory_format=memory_format(x))
        return torch.ops.aten.convolution_backward(x, like_output, w, None, stride, padding,
                                                   dilation, False, [0, 0], groups, [True, False, False])[0]

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        grad = dense(grad)
        gx = F.conv2d(grad, w, None, stride, padding, dilation, groups) if ctx.needs_input_grad[0] else None
        gw = None
        if ctx.needs_input_grad[1]:
            gw = torch.ops.aten.convolution_backward(x, grad, w, None, stride, padding, dilation, False,
                                                     [0, 0], groups, [False, True, False])[1]
        return gx, gw, None, None, None, None, None


def memory_format(x):
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def dense(x):
    return x.contiguous(memory_format=memory_format(x))


def use_conv_gradient(module):
    """Makes every ConvTranspose2d in `module` compute through ConvGradientTranspose."""
    for layer in module.modules():
        if not isinstance(layer, torch.nn.ConvTranspose2d):
            continue

        def forward(x, layer=layer):
            out_size = [x.shape[0], layer.out_channels] + [
                (x.shape[2 + i] - 1) * layer.stride[i] - 2 * layer.padding[i] +
                layer.dilation[i] * (layer.kernel_size[i] - 1) + layer.output_padding[i] + 1 for i in range(2)]
            w, b = layer.weight, layer.bias
            if torch.is_autocast_cpu_enabled():  # as atelier's layer (1.13's CPU autocast leaves it fp32)
                low = torch.get_autocast_cpu_dtype()
                x, w, b = x.to(low), w.to(low), None if b is None else b.to(low)
            y = ConvGradientTranspose.apply(x, w, out_size, list(layer.stride), list(layer.padding),
                                            list(layer.dilation), layer.groups)
            return y if b is None else y + b.view(1, -1, 1, 1)

        layer.forward = forward


def lsgan(logits, real):
    return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--transposed-conv", choices=["torch", "conv-gradient"], default="torch")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    random.seed(0)
    use_device(a.device)
    g_a, g_b = atelier_models.ResnetGenerator(a.width, a.blocks), atelier_models.ResnetGenerator(a.width, a.blocks)
    d_a, d_b = atelier_models.PatchDiscriminator(a.width), atelier_models.PatchDiscriminator(a.width)
    if a.transposed_conv == "conv-gradient":
        use_conv_gradient(g_a)
        use_conv_gradient(g_b)
    opt_g = torch.optim.Adam(list(g_a.parameters()) + list(g_b.parameters()), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(list(d_a.parameters()) + list(d_b.parameters()), 2e-4, betas=(0.5, 0.999))
    pool_a, pool_b = ImagePool(50), ImagePool(50)
    real_a = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    real_b = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    if a.channels_last:
        real_a, real_b = channels_last((g_a, g_b, d_a, d_b), (real_a, real_b))

    lam, lam_idt = 10.0, 5.0

    def set_requires_grad(nets, on):
        for net in nets:
            for p in net.parameters():
                p.requires_grad = on

    def step():
        set_requires_grad([d_a, d_b], False)
        opt_g.zero_grad()
        with forward_passes(a.precision, a.device):
            fake_b = g_a(real_a)
            rec_a = g_b(fake_b)
            fake_a = g_b(real_b)
            rec_b = g_a(fake_a)
            idt_a = F.l1_loss(g_a(real_b), real_b) * lam_idt
            idt_b = F.l1_loss(g_b(real_a), real_a) * lam_idt
            loss_g = (lsgan(d_a(fake_b), True) + lsgan(d_b(fake_a), True) + F.l1_loss(rec_a, real_a) * lam +
                      F.l1_loss(rec_b, real_b) * lam + idt_a + idt_b)
        loss_g.backward()
        opt_g.step()
        set_requires_grad([d_a, d_b], True)
        opt_d.zero_grad()
        with forward_passes(a.precision, a.device):
            pooled_b = pool_b.query(fake_b)
            loss_d_a = 0.5 * (lsgan(d_a(real_b), True) + lsgan(d_a(pooled_b.detach()), False))
        loss_d_a.backward()
        with forward_passes(a.precision, a.device):
            pooled_a = pool_a.query(fake_a)
            loss_d_b = 0.5 * (lsgan(d_b(real_a), True) + lsgan(d_b(pooled_a.detach()), False))
        loss_d_b.backward()
        opt_d.step()
        return loss_g.item() + loss_d_a.item() + loss_d_b.item()

    for _ in range(a.warmup):
        step()
    report_median_step(step, a.steps)


if __name__ == "__main__":
    main()
