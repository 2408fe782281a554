#!/usr/bin/python3
"""Python reference of atelier's AdaIN-GAN training step (bench baseline).

The same architecture as models/ (VGG-19 encoder to relu4_1 with zero
padding, AdaIN, reflection-padded decoder with nearest upsampling and tanh,
PatchGAN with instance norm), the same losses as trainer/adain_gan.cpp (BCE
adversarial, content MSE on relu4_1, mean/std style loss at relu1_1..relu4_1)
and the same Adam settings, on random images. Run by bench/compare_adain_step.sh
with Debian's python3-torch, which runs the same LibTorch kernels as the C++
build. Prints one line: "python median_ms=<ms> steps=<n>".
--precision bf16 runs the forward passes under torch.autocast to bfloat16
and --channels-last keeps weights and images NHWC, as atelier's
train.precision and train.channels_last do.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from step_timing import channels_last, forward_passes, report_median_step, use_device

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class Encoder(nn.Module):
    def __init__(self, w):
        super().__init__()
        conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1)
        self.slices = nn.ModuleList([
            nn.Sequential(conv(3, w), nn.ReLU()),
            nn.Sequential(conv(w, w), nn.ReLU(), nn.MaxPool2d(2, 2), conv(w, 2 * w), nn.ReLU()),
            nn.Sequential(conv(2 * w, 2 * w), nn.ReLU(), nn.MaxPool2d(2, 2), conv(2 * w, 4 * w), nn.ReLU()),
            nn.Sequential(conv(4 * w, 4 * w), nn.ReLU(), conv(4 * w, 4 * w), nn.ReLU(), conv(4 * w, 4 * w),
                          nn.ReLU(), nn.MaxPool2d(2, 2), conv(4 * w, 8 * w), nn.ReLU()),
        ])
        for p in self.parameters():
            p.requires_grad_(False)

    def features(self, x):
        x = ((x + 1) / 2 - MEAN) / STD
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out


def decoder(w):
    def conv(i, o, relu=True):
        return [nn.ReflectionPad2d(1), nn.Conv2d(i, o, 3)] + ([nn.ReLU()] if relu else [])
    up = lambda: [nn.Upsample(scale_factor=2, mode="nearest")]
    layers = conv(8 * w, 4 * w) + up()
    for _ in range(3):
        layers += conv(4 * w, 4 * w)
    layers += conv(4 * w, 2 * w) + up() + conv(2 * w, 2 * w) + conv(2 * w, w) + up() + conv(w, w)
    layers += conv(w, 3, relu=False) + [nn.Tanh()]
    return nn.Sequential(*layers)


def discriminator(w, n_layers=3):
    layers = [nn.Conv2d(3, w, 4, 2, 1), nn.LeakyReLU(0.2)]
    ch = lambda n: w * min(2 ** n, 8)
    for n in range(1, n_layers):
        layers += [nn.Conv2d(ch(n - 1), ch(n), 4, 2, 1, bias=False), nn.InstanceNorm2d(ch(n)), nn.LeakyReLU(0.2)]
    layers += [nn.Conv2d(ch(n_layers - 1), ch(n_layers), 4, 1, 1, bias=False), nn.InstanceNorm2d(ch(n_layers)),
               nn.LeakyReLU(0.2), nn.Conv2d(ch(n_layers), 1, 4, 1, 1)]
    return nn.Sequential(*layers)


def mean_std(f, eps=1e-5):
    return f.mean((2, 3), keepdim=True), (f.var((2, 3), unbiased=False, keepdim=True) + eps).sqrt()


def adain(c, s):
    cm, cs = mean_std(c)
    sm, ss = mean_std(s)
    return (c - cm) / cs * ss + sm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    global MEAN, STD
    MEAN, STD = MEAN.to(use_device(a.device)), STD.to(a.device)
    enc, dec, disc = Encoder(a.width), decoder(a.width), discriminator(a.width)
    opt_g = torch.optim.Adam(dec.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    content = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    style = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    if a.channels_last:
        content, style = channels_last((enc, dec, disc), (content, style))

    def step():
        with forward_passes(a.precision, a.device):
            with torch.no_grad():
                sf = enc.features(style)
                t = adain(enc.features(content)[-1], sf[-1])
            fake = dec(t)
            real_logits, fake_logits = disc(style), disc(fake.detach())
            loss_d = 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) +
                            F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        with forward_passes(a.precision, a.device):
            g_logits = disc(fake)
            adv = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
            of = enc.features(fake)
            content_loss = F.mse_loss(of[-1], t)
            style_loss = sum(F.mse_loss(mean_std(o)[0], mean_std(s)[0]) + F.mse_loss(mean_std(o)[1], mean_std(s)[1])
                             for o, s in zip(of, sf))
            loss_g = 1.0 * adv + 1.0 * content_loss + 10.0 * style_loss
        loss_g.backward()
        opt_g.step()
        return loss_g.item()

    for _ in range(a.warmup):
        step()
    if a.profile:
        with torch.autograd.profiler.profile() as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    report_median_step(step, a.steps)


if __name__ == "__main__":
    main()
