"""When will a queued job start? Measured step times, and the batcher's own rules played forward.

A UNet call's time is nearly a line in its batch's cost (a fixed part for launching the model, a part per
sample), so ``StepTimes`` fits that line to the latest calls. ``estimate_starts`` then plays the workers'
rules forward on paper: admit in queue order while the head fits its group's capacity, step one group per
turn, let jobs leave when their steps are done. Rough by design ("about 12 s"): jobs are cancelled, new
ones of other users are put ahead by the fair queue, and preparing and decoding vary.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

HISTORY = 64  # UNet calls remembered
SIMULATED_STEPS = 100_000  # a bound on the play-forward, far above any real queue


@dataclass(frozen=True)
class Work:
    """A job as the estimate sees it."""

    group: Hashable
    cost: float
    steps_left: int


class StepTimes:
    """Seconds per UNet call against the call's cost, and seconds per job outside the calls (prepare and
    finish). Thread-safe: workers add, the queue's owner predicts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: deque[tuple[float, float]] = deque(maxlen=HISTORY)  # (cost, seconds)
        self._job_overhead: float | None = None

    def add_call(self, cost: float, seconds: float) -> None:
        with self._lock:
            self._calls.append((cost, seconds))

    def add_job_overhead(self, seconds: float) -> None:
        with self._lock:
            old = self._job_overhead
            self._job_overhead = seconds if old is None else 0.8 * old + 0.2 * seconds

    @property
    def job_overhead(self) -> float:
        return self._job_overhead or 0.0

    def line(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per unit of cost) of a call, or None before the first call."""
        with self._lock:
            calls = list(self._calls)
        if not calls:
            return None
        n = len(calls)
        mean_cost = sum(c for c, _ in calls) / n
        mean_seconds = sum(s for _, s in calls) / n
        spread = sum((c - mean_cost) ** 2 for c, _ in calls)
        if spread > 1e-9:  # least squares
            slope = sum((c - mean_cost) * (s - mean_seconds) for c, s in calls) / spread
            fixed = mean_seconds - slope * mean_cost
            if slope > 0 and fixed >= 0:
                return fixed, slope
        # one cost seen (or a noisy fit): proportional
        return 0.0, mean_seconds / max(mean_cost, 1e-9)


def estimate_starts(
    running: Sequence[Sequence[Work]],
    queued: Sequence[Work],
    capacities: Sequence[float],
    line: tuple[float, float],
    job_overhead: float = 0.0,
) -> list[float]:
    """Seconds from now until each queued job (in queue order) starts, one list of running jobs and one
    capacity per worker."""
    fixed, per_cost = line
    active = [list(jobs) for jobs in running]
    clocks = [0.0] * len(active)
    turns = [0] * len(active)
    queue = deque(queued)
    starts: list[float] = []
    for _ in range(SIMULATED_STEPS):
        if not queue:
            break
        worker = min(range(len(active)), key=clocks.__getitem__)  # the first to reach a step boundary
        jobs = active[worker]
        while queue and fits(_load(jobs, queue[0].group), queue[0].cost, capacities[worker]):
            starts.append(clocks[worker])
            jobs.append(queue.popleft())
            clocks[worker] += job_overhead
        groups = list(dict.fromkeys(job.group for job in jobs))
        group = groups[turns[worker] % len(groups)]
        turns[worker] += 1
        batch = [job for job in jobs if job.group == group]
        clocks[worker] += fixed + per_cost * sum(job.cost for job in batch)
        active[worker] = [
            replace(job, steps_left=job.steps_left - 1) if job.group == group else job
            for job in jobs
            if job.group != group or job.steps_left > 1
        ]
    # a queue longer than the bound: the rest start no sooner than the last estimate
    last = starts[-1] if starts else 0.0
    return starts + list(itertools.repeat(last, len(queue)))


def fits(load: float, cost: float, capacity: float) -> bool:
    """The batcher's admission rule: a job joins its group (``load``: the cost already running there) while
    the group stays within capacity; a job alone always runs, however big."""
    return load == 0 or load + cost <= capacity


def _load(jobs: Sequence[Work], group: Hashable) -> float:
    return sum(job.cost for job in jobs if job.group == group)
