"""What both Python step baselines share (adain_step.py, cyclegan_step.py):
the timing, and the --precision / --channels-last options."""
import contextlib
import statistics
import time

import torch


def forward_passes(precision):
    """The context of the step's forward passes: bf16 autocast, as atelier's train.precision: bf16."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
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
        step()
        times.append((time.perf_counter() - t0) * 1000)
    print(f"python median_ms={statistics.median(times):.3f} steps={steps}")
