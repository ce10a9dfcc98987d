"""Dispatch overhead: the same job through one Ray worker and through one local worker, in one process.

    .venv/bin/python bench/dispatch.py                  # 4 images x 10 steps at 64x64, 5 runs a side
    .venv/bin/python bench/dispatch.py --runs 11 --steps 20

The embedded model on the CPU, two executors alive at once: one with a local worker (the engine on a thread
of this process), one with a single Ray worker (an actor on a Ray cluster started in this process by
``ray.init``, with its own copy of the model). Both have the same capacity and preview interval. The same
job (fixed prompt and seeds) goes through each, one job at a time, after one warm-up job a side; the sides
take turns (ABBA), so that background load hits both alike. A job is timed from submit to ``Done``.

The difference of the medians is what going through Ray costs a job: the request and plan pickled to the
actor, every event (the previews, then the images) streamed back, the actor's inbox and event loop.
The runs are listed too: where their spread is wider than the difference (a small or busy machine), take
more ``--runs``.

Ray gives an actor of ``num_cpus=1`` OMP_NUM_THREADS=1, so its torch runs on one thread; the local side
is set to one torch thread too (``torch.set_num_threads(1)``), so both compute alike. The output says both.
The last line:

    dispatch overhead: one Ray worker vs one local worker: ratio R (+D ms per job)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
import time
from itertools import count
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imaginebot.config import EMBEDDED_MODEL
from imaginebot.engine import load_engine
from imaginebot.engine.api import GenerateSpec
from imaginebot.engine.planning import Planner
from imaginebot.executor import Done, Executor, JobRequest
from imaginebot.ray_workers import NAMESPACE, RayWorkers, WorkerConfig
from imaginebot.store_models import JobKind

PROMPT = "a red circle on a blue background"
PREVIEW_EVERY = 5
READY_TIMEOUT_S = 300


def torch_threads(_actor: object) -> int:
    """Run on the actor by ``__ray_call__``: its torch threads, as its jobs run there."""
    return torch.get_num_threads()


async def timed_job(executor: Executor, spec: GenerateSpec, job_ids: count[int]) -> float:
    """Seconds from submit to ``Done``."""
    started = time.perf_counter()
    handle = executor.submit(JobRequest(next(job_ids), 1, JobKind.IMAGINE, spec))
    final = await handle.wait()
    elapsed = time.perf_counter() - started
    if not isinstance(final, Done):
        raise RuntimeError(f"job {handle.job_id} ended with {final}")
    return elapsed


async def bench(args: argparse.Namespace) -> None:
    local_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = load_engine(str(EMBEDDED_MODEL), device="cpu")
    capacity = engine.default_capacity()
    spec = GenerateSpec(
        PROMPT,
        width=args.size,
        height=args.size,
        num_inference_steps=args.steps,
        seeds=tuple(range(1, args.images + 1)),
    )
    local = Executor(engine, capacity=capacity, preview_every=PREVIEW_EVERY)
    remote = Executor(planner=Planner.from_folder(EMBEDDED_MODEL), preview_every=PREVIEW_EVERY)
    async with local, remote:
        config = WorkerConfig(device="cpu", capacity=capacity, preview_every=PREVIEW_EVERY)
        workers = RayWorkers(config, remote.add_worker, workers=1)
        workers.top_up()
        worker = workers.placed[0]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not worker.accepting:  # the actor is loading the model
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Ray worker was not ready after {READY_TIMEOUT_S} s")
            await asyncio.sleep(0.1)
        remote_threads = await worker.actor.__ray_call__.remote(torch_threads)
        print(
            f"job: {args.images} images x {args.steps} steps at {args.size}x{args.size}, the embedded model "
            f"on the CPU, capacity {capacity:g}, a preview every {PREVIEW_EVERY} steps; "
            f"{args.runs} runs a side after one warm-up"
        )
        print(
            f"torch threads: local {torch.get_num_threads()} (set from this process's {local_threads}), "
            f"Ray worker {remote_threads} (Ray's OMP_NUM_THREADS for num_cpus=1)"
        )
        job_ids = count(1)
        sides = {"local": local, "ray": remote}
        times: dict[str, list[float]] = {"local": [], "ray": []}
        for side in sides.values():
            await timed_job(side, spec, job_ids)  # warm-up
        for run in range(args.runs):
            order = ("local", "ray") if run % 2 == 0 else ("ray", "local")
            for name in order:
                times[name].append(await timed_job(sides[name], spec, job_ids))

    for name, values in times.items():
        print(
            f"{name:<6} median {statistics.median(values):.3f} s   "
            f"runs {', '.join(f'{v:.3f}' for v in values)}"
        )
    local_s, ray_s = statistics.median(times["local"]), statistics.median(times["ray"])
    print(
        f"dispatch overhead: one Ray worker vs one local worker: ratio {ray_s / local_s:.2f} "
        f"({(ray_s - local_s) * 1000:+.0f} ms per job)"
    )


def main(args: argparse.Namespace) -> None:
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(
        address="local",  # a cluster of its own, never one found on this machine
        num_cpus=2,
        namespace=NAMESPACE,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _temp_dir=temp_dir,
    )
    try:
        asyncio.run(bench(args))
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="timed jobs a side, after one warm-up")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    main(parser.parse_args())
