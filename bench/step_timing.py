"""The timing both Python step baselines share (adain_step.py, cyclegan_step.py)."""
import statistics
import time


def report_median_step(step, steps):
    """Runs `step` `steps` times and prints the line bench/compare_step.sh reads."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    print(f"python median_ms={statistics.median(times):.3f} steps={steps}")
