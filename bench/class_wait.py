"""What a class waits: 30 students send /imagine (a four-image grid) at once, with 1, 2, 4 and 8 GPUs.

    .venv/bin/python bench/class_wait.py               # step times measured here: the embedded model
    .venv/bin/python bench/class_wait.py --h100-sd15   # SD 1.5 at 512x512 on an H100, measured figures

It plays the workers' own rules forward (``imaginebot.eta.play_forward``, the code behind the queue's
"starts in about ...") over the time of one UNet call as a line in its batch: a fixed part and a part
per sample.
- Here, the line is fitted to ``engine.step`` timed at 1, 4 and 16 jobs per call. Preparing and
  decoding a job are timed too.
- ``--h100-sd15`` takes the figures of shared/docs/anchors.md: stock diffusers, eager, makes four
  images x 30 steps in 1.5 s (batch 8: 50 ms a call) and 4.7 images/s at batch 16 (batch 32:
  113 ms a call); 60 ms to decode four images.
Prints a Markdown table: per number of GPUs, when the last student's job starts, and the median and
last grid.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imaginebot.engine.api import GenerateSpec
from imaginebot.eta import StepTimes, Work, play_forward

STUDENTS = 30
GPUS = (1, 2, 4, 8)
H100_SD15_LINE = (0.029, 0.0026)  # seconds: through (8 samples, 50 ms) and (32 samples, 113 ms)
H100_SD15_OVERHEAD = 0.07  # a job's text encoding and VAE decode of four images


def measured_line(steps: int) -> tuple[tuple[float, float], float, float, int]:
    """(line, job overhead, capacity, samples per job) of the embedded model on this machine."""
    from imaginebot.config import EMBEDDED_MODEL
    from imaginebot.engine import load_engine

    engine = load_engine(EMBEDDED_MODEL, device="cpu")
    side = engine.native_size
    spec = GenerateSpec(
        "a red circle", width=side, height=side, num_inference_steps=steps, seeds=(1, 2, 3, 4)
    )
    times = StepTimes()
    for jobs in (1, 4, 16, 1, 4, 16):
        states = [engine.prepare(spec) for _ in range(jobs)]
        engine.step(states)  # warm: the first call of a batch size picks its kernels
        t0 = time.perf_counter()
        engine.step(states)
        times.add_call(sum(s.plan.cost for s in states), time.perf_counter() - t0)
    overheads = []
    for _ in range(3):
        t0 = time.perf_counter()
        state = engine.prepare(spec)
        while not state.done:
            skipped = time.perf_counter()
            engine.step([state])
            t0 += time.perf_counter() - skipped  # count preparing and finishing only
        engine.finish(state)
        overheads.append(time.perf_counter() - t0)
    line = times.line()
    assert line is not None
    return line, statistics.median(overheads), engine.default_capacity(), engine.plan(spec).samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--h100-sd15", action="store_true", help="SD 1.5 on an H100, from measured figures")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--capacity", type=float, help="samples per UNet call (default: the engine's; 64 for --h100-sd15)"
    )
    args = parser.parse_args()
    if args.h100_sd15:
        line, overhead, capacity, samples = H100_SD15_LINE, H100_SD15_OVERHEAD, 64.0, 8
        what = "SD 1.5, 512x512, H100 (stock diffusers' measured step times)"
    else:
        line, overhead, capacity, samples = measured_line(args.steps)
        what = "the embedded model, 64x64, this machine's CPU (measured)"
    capacity = args.capacity or capacity
    print(
        f"{STUDENTS} students, one four-image grid each ({samples} samples with guidance),"
        f" {args.steps} steps;"
        f" {what}; a UNet call takes {line[0] * 1000:.1f} ms + {line[1] * 1000:.2f} ms per sample;"
        f" {overhead * 1000:.0f} ms per job outside the calls; capacity {capacity:g} samples per call\n"
    )
    print("| GPUs | last job starts | median grid | last grid |")
    print("|---|---|---|---|")
    for gpus in GPUS:
        queued = [Work("native", float(samples), args.steps)] * STUDENTS
        forecast = play_forward([[]] * gpus, queued, [capacity] * gpus, line, overhead, to_the_end=True)
        ends = [f.end for f in forecast if f.end is not None]
        print(
            f"| {gpus} | {max(f.start for f in forecast):.1f} s | {statistics.median(ends):.1f} s"
            f" | {max(ends):.1f} s |"
        )


if __name__ == "__main__":
    main()
