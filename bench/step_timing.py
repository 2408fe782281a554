"""What both Python step baselines share (adain_step.py, cyclegan_step.py):
the timing, and the --precision / --channels-last / --device options."""
import contextlib
import statistics
import time

import torch


def use_device(device):
    """Creates every later tensor and module on `device` ("cpu", "cuda", "cuda:N"):
    the default device of PyTorch 2 (Debian's 1.13, CPU-only, needs none)."""
    if torch.device(device).type != "cpu":
        torch.set_default_device(device)
    return torch.device(device)


def forward_passes(precision, device="cpu"):
    """The context of the step's forward passes: bf16 autocast, as atelier's train.precision: bf16."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(nets, images):
    """The networks and images in NHWC memory order, as atelier's train.channels_last; returns the images."""
    for net in nets:
        net.to(memory_format=torch.channels_last)
    return [x.contiguous(memory_format=torch.channels_last) for x in images]


def report_median_step(step, steps):
    """Runs `step` `steps` times and prints the line bench/compare_step.sh reads."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()  # returns a loss .item(): the device has finished the step
        times.append((time.perf_counter() - t0) * 1000)
    print(f"python median_ms={statistics.median(times):.3f} steps={steps}")
