"""When will a queued job start? Measured step times, and the batcher's own rules played forward.

A UNet call's time is nearly a line in its batch's cost (a fixed part for launching the model, a part per
sample), so ``StepTimes`` fits that line to the latest calls. ``estimate_starts`` then plays the workers'
rules forward on paper: admit in queue order while the head fits its group's capacity, step one group per
turn, let jobs leave when their steps are done. Rough by design ("about 12 s"): jobs are cancelled, new
ones of other users are put ahead by the fair queue, and preparing and decoding vary.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

HISTORY = 64  # UNet calls remembered
SIMULATED_STEPS = 100_000  # a bound on the play-forward, far above any real queue


@dataclass(frozen=True)
class Work:
    """A job as the estimate sees it."""

    group: Hashable
    cost: float
    steps_left: int
    model: str = ""  # only a worker that holds it takes it ("": any)


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


@dataclass(frozen=True)
class Forecast:
    """When a queued job starts, and ends (None: not played that far)."""

    start: float
    end: float | None = None


Line = tuple[float, float]  # a UNet call's seconds: fixed, and per unit of cost


def estimate_starts(
    running: Sequence[Sequence[Work]],
    queued: Sequence[Work],
    capacities: Sequence[float],
    line: Line | Sequence[Line],
    job_overhead: float = 0.0,
    models: Sequence[frozenset[str] | None] | None = None,
) -> list[float]:
    """Seconds from now until each queued job (in queue order) starts, one list of running jobs and one
    capacity per worker; one line for all workers or one each; ``models``: those each worker holds (None:
    any job's)."""
    return [f.start for f in play_forward(running, queued, capacities, line, job_overhead, models=models)]


def play_forward(
    running: Sequence[Sequence[Work]],
    queued: Sequence[Work],
    capacities: Sequence[float],
    line: Line | Sequence[Line],
    job_overhead: float = 0.0,
    *,
    to_the_end: bool = False,
    models: Sequence[frozenset[str] | None] | None = None,
) -> list[Forecast]:
    """The workers' rules played forward: each queued job's start, and with ``to_the_end`` its end too.
    A worker takes the first queued job of a model it holds (``models``, one per worker)."""
    lines: list[Line] = _per_worker(line, len(running))
    held = list(models) if models is not None else [None] * len(running)

    def serves(worker: int, job: Work) -> bool:
        mine = held[worker]
        return mine is None or not job.model or job.model in mine

    # (index in queued, or -1 for a job already running; the job)
    active: list[list[tuple[int, Work]]] = [[(-1, job) for job in jobs] for jobs in running]
    clocks = [0.0] * len(active)
    turns = [0] * len(active)
    queue = deque(enumerate(queued))
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    for _ in range(SIMULATED_STEPS):
        if not queue and not (to_the_end and len(ends) < len(starts)):
            break
        # the first worker to reach a step boundary, of those with work left or a queued job they can take
        candidates = [w for w in range(len(active)) if active[w] or any(serves(w, j) for _, j in queue)]
        if not candidates:
            break  # what is queued is of models no worker holds
        worker = min(candidates, key=clocks.__getitem__)
        jobs = active[worker]
        while (head := next((item for item in queue if serves(worker, item[1])), None)) is not None:
            index, job = head
            if not _takes(active, worker, job, capacities, serves):
                break
            queue.remove(head)
            starts[index] = clocks[worker]
            jobs.append((index, job))
            clocks[worker] += job_overhead
        groups = list(dict.fromkeys(job.group for _, job in jobs))
        group = groups[turns[worker] % len(groups)]
        turns[worker] += 1
        fixed, per_cost = lines[worker]
        clocks[worker] += fixed + per_cost * sum(job.cost for _, job in jobs if job.group == group)
        left: list[tuple[int, Work]] = []
        for index, job in jobs:
            if job.group != group:
                left.append((index, job))
            elif job.steps_left > 1:
                left.append((index, replace(job, steps_left=job.steps_left - 1)))
            elif index >= 0:
                ends[index] = clocks[worker]
        active[worker] = left
    # a queue longer than the bound: the rest start no sooner than the last estimate
    last = max(starts.values(), default=0.0)
    return [Forecast(starts.get(i, last), ends.get(i)) for i in range(len(queued))]


def _per_worker(line: Line | Sequence[Line], workers: int) -> list[Line]:
    if len(line) == 2 and all(isinstance(x, float | int) for x in line):
        fixed, per_cost = line
        return [(float(fixed), float(per_cost))] * workers  # type: ignore[arg-type]
    return list(line)  # type: ignore[arg-type]


def joins_batch(load: float, cost: float, capacity: float) -> bool:
    """The batcher's admission rule: a job joins its group (``load``: the cost already running there) while
    the group stays within capacity; a job alone always runs, however big."""
    return load == 0 or load + cost <= capacity


def _takes(
    active: list[list[tuple[int, Work]]],
    worker: int,
    job: Work,
    capacities: Sequence[float],
    serves: Callable[[int, Work], bool],
) -> bool:
    """The executor's rule: a worker takes the head of the queue (its models') if it fits there and no
    other worker that holds its model, with less work, has room for it."""
    if not joins_batch(_load(active[worker], job.group), job.cost, capacities[worker]):
        return False
    mine = _load(active[worker])
    return not any(
        _load(jobs) < mine and joins_batch(_load(jobs, job.group), job.cost, capacities[other])
        for other, jobs in enumerate(active)
        if other != worker and serves(other, job)
    )


def _load(jobs: Sequence[tuple[int, Work]], group: Hashable | None = None) -> float:
    return sum(job.cost for _, job in jobs if group is None or job.group == group)
