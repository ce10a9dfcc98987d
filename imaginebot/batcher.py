"""A worker's device side: continuous batching over the engine's step API.

A ``Batcher`` runs the jobs it is given together, one denoising step at a time; all jobs of one latent
shape (a group) share one UNet call per step (``Engine.step``), and groups take turns. Between two steps
it asks ``admit`` for the jobs that join (whoever owns the queue decides who fits the capacity), drops
cancelled jobs and finishes done ones; nothing waits for a batch to fill. When a call runs out of memory
it is split in two and the capacity lowered; only a job that runs out of memory alone fails.

The jobs that end at one step are decoded, then, with a safety checker on the device, checked in one
batch: their results carry the images it flagged (``GenerateResult.flagged``). Each UNet call's size and
time go to ``Dispatch.measured``, for the operator's /metrics.

The same class runs in a local worker thread (``executor``) and inside a Ray actor (``ray_workers``): it
knows nothing of queues, users or the event loop, only of jobs and the events it reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from PIL import Image

from imaginebot.engine.api import Engine, GenerateResult, Plan, Preview, SafetyCheck, StepState
from imaginebot.errors import ImagineError, OutOfMemory
from imaginebot.eta import Line, StepTimes, joins_batch
from imaginebot.work import (
    UNEXPECTED_ERROR,
    Cancelled,
    Done,
    Event,
    Failed,
    FinalEvent,
    Interrupted,
    JobRequest,
    Progress,
    UnetCall,
)

log = logging.getLogger(__name__)


@dataclass(eq=False)
class BatchJob:
    """A job on a worker. ``cancel`` may be set from any thread; the rest is the worker thread's."""

    request: JobRequest
    plan: Plan
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: Literal["user", "stop"] = "user"
    state: StepState | None = None  # prepared
    ended: bool = False  # its final event is reported
    overhead_s: float = 0.0  # preparing and finishing, for the estimates

    @property
    def job_id(self) -> int:
        return self.request.job_id

    @property
    def steps_left(self) -> int:
        state = self.state  # read once: the worker thread may drop it meanwhile
        return self.plan.steps - (state.steps_done if state is not None else 0)


Report = Callable[[BatchJob, Event], None]


@dataclass(frozen=True)
class Dispatch:
    """What a worker may ask of whoever owns the queue (the executor)."""

    # At a step boundary: blocks while there is nothing to do, then gives the jobs that join now;
    # None: stop (once nothing of this worker's is running). Its argument: the jobs running here.
    admit: Callable[[Sequence[BatchJob]], list[BatchJob] | None]
    # A job's previews (from any thread) and its final event.
    report: Report
    # A job that was lost with its worker (a remote one): back to the front of the queue.
    requeue: Callable[[BatchJob], None]
    # Something changed that ``admit`` may be waiting for (a remote worker is back).
    wake: Callable[[], None]
    # Each UNet call's rows and seconds, as it ends (on the worker's thread).
    measured: Callable[[UnetCall], None] = lambda call: None


class Batcher:
    """A local worker: ``run(dispatch)`` on one thread of this process."""

    waits_for_room = False  # it steps its running jobs rather than wait for the queue

    def __init__(
        self,
        engine: Engine,
        *,
        capacity: float | None = None,
        preview_every: int = 5,
        step_times: StepTimes | None = None,
        models: frozenset[str] | None = None,
        safety: SafetyCheck | None = None,
    ) -> None:
        self.engine = engine
        self.models = models  # the models its engine holds; None: it takes any job
        self.safety = safety  # the image moderator on the engine's device
        self.capacity = capacity  # None until run() measures it; lowered when memory runs out
        self.preview_every = preview_every
        self.step_times = step_times or StepTimes()

    accepting = True
    gone = False

    def cancel(self, job: BatchJob) -> None:
        """Nothing to forward: the loop sees ``job.cancel`` at its next step boundary."""

    def timing(self) -> tuple[Line | None, float]:
        return self.step_times.line(), self.step_times.job_overhead

    def run(self, dispatch: Dispatch) -> None:
        admit, report = dispatch.admit, dispatch.report
        if self.capacity is None:
            self.capacity = self.engine.default_capacity()
            log.info("%s: up to %.0f samples per UNet call", threading.current_thread().name, self.capacity)
        running: list[BatchJob] = []  # in the order they joined
        turn = 0
        while (admitted := admit(running)) is not None:
            for job in admitted:
                self._prepare(job, report)
            running += admitted
            for job in running:
                if job.cancel.is_set() and not job.ended:
                    self._leave(job, report)
            running = [job for job in running if not job.ended]
            if not running:
                continue
            groups = list(dict.fromkeys(job.plan.group for job in running))  # in joining order
            group, turn = groups[turn % len(groups)], turn + 1
            batch = [job for job in running if job.plan.group == group]
            self._step(batch, report, dispatch.measured)
            self._finish(
                [job for job in batch if not job.ended and job.state is not None and job.state.done], report
            )
            running = [job for job in running if not job.ended]

    def _prepare(self, job: BatchJob, report: Report) -> None:
        request = job.request
        log.info("job %s: joins the batch on %s", job.job_id, threading.current_thread().name)
        t0 = time.perf_counter()

        def on_preview(preview: Preview) -> None:
            report(job, Progress(job.job_id, preview))

        try:
            job.state = self.engine.prepare(
                request.spec, request.task, on_preview=on_preview, preview_every=self.preview_every
            )
        except Exception as e:
            self._end(job, _outcome(job.job_id, e), report)
        job.overhead_s += time.perf_counter() - t0

    def _leave(self, job: BatchJob, report: Report) -> None:
        """Cancelled by its user, or by a stop: the job leaves the batch at this step boundary."""
        steps = job.state.steps_done if job.state is not None else 0
        cancelled = job.cancel_reason == "user"
        log.info("job %s: %s after %d steps", job.job_id, "cancelled" if cancelled else "interrupted", steps)
        self._end(job, Cancelled(job.job_id) if cancelled else Interrupted(job.job_id), report)

    def _step(self, batch: list[BatchJob], report: Report, measured: Callable[[UnetCall], None]) -> None:
        """One step of every job of ``batch`` (one group), in UNet calls within the capacity. A call that
        runs out of memory is split in two and the capacity lowered; a job alone that runs out fails."""
        assert self.capacity is not None
        pending = deque(_calls(batch, self.capacity))
        while pending:
            call = pending.popleft()
            cost = sum(job.plan.cost for job in call)
            t0 = time.perf_counter()
            try:
                self.engine.step([job.state for job in call if job.state is not None])
            except OutOfMemory as e:
                if len(call) == 1:
                    self._end(call[0], _outcome(call[0].job_id, e), report)
                    continue
                self.capacity = max(1.0, min(self.capacity, cost / 2))
                log.warning("out of memory at %.0f samples; capacity now %.0f", cost, self.capacity)
                pending.extendleft([call[len(call) // 2 :], call[: len(call) // 2]])
            except Exception as e:
                # Not memory: the schedulers may have moved, so no retry; the jobs of this call fail.
                for job in call:
                    self._end(job, _outcome(job.job_id, e), report)
            else:
                seconds = time.perf_counter() - t0
                self.step_times.add_call(cost, seconds)
                measured(UnetCall(sum(job.plan.samples for job in call), seconds))

    def _finish(self, jobs: list[BatchJob], report: Report) -> None:
        """Decode the jobs whose steps are done, check their images in one batch, and report them."""
        finished: list[tuple[BatchJob, GenerateResult]] = []
        for job in jobs:
            assert job.state is not None
            t0 = time.perf_counter()
            try:
                finished.append((job, self.engine.finish(job.state)))
            except Exception as e:
                self._end(job, _outcome(job.job_id, e), report)
            job.overhead_s += time.perf_counter() - t0
        if not finished:
            return
        t0 = time.perf_counter()
        flags = self._check([image for _, result in finished for image in result.images], finished)
        checking_s = (time.perf_counter() - t0) / len(finished)
        for job, result in finished:
            mine, flags = flags[: len(result.images)], flags[len(result.images) :]
            flagged = tuple(i for i, flag in enumerate(mine) if flag)
            if flagged:
                log.warning("job %s: the safety checker flagged image(s) %s", job.job_id, flagged)
            job.overhead_s += checking_s
            self.step_times.add_job_overhead(job.overhead_s)
            log.info("job %s: done in %.1f s", job.job_id, result.elapsed_s)
            self._end(job, Done(job.job_id, replace(result, flagged=flagged)), report)

    def _check(
        self, images: list[Image.Image], finished: list[tuple[BatchJob, GenerateResult]]
    ) -> list[bool]:
        """The safety checker's flags, one per image (none flagged without a checker). A checker that fails
        holds every image back for a moderator rather than let one through unchecked."""
        if self.safety is None:
            return [False] * len(images)
        try:
            flags = list(self.safety.check(images))
            if len(flags) != len(images):
                raise ValueError(f"the safety checker gave {len(flags)} flags for {len(images)} images")
        except Exception:
            jobs = ", ".join(str(job.job_id) for job, _ in finished)
            log.exception("jobs %s: the safety checker failed; holding their images for review", jobs)
            return [True] * len(images)
        return flags

    @staticmethod
    def _end(job: BatchJob, outcome: FinalEvent, report: Report) -> None:
        job.ended, job.state = True, None
        report(job, outcome)


def _calls(batch: list[BatchJob], capacity: float) -> list[list[BatchJob]]:
    """The batch cut into UNet calls within ``capacity`` (a job bigger than it alone), in order."""
    calls: list[list[BatchJob]] = [[]]
    load = 0.0
    for job in batch:
        if not joins_batch(load, job.plan.cost, capacity):
            calls.append([])
            load = 0.0
        calls[-1].append(job)
        load += job.plan.cost
    return calls


def _outcome(job_id: int, error: Exception) -> Done | Failed:
    """How a job ends on an error: the engine's fallback if it has one (an upscale short of memory gives
    the plain resize), our errors in the user's words; anything else is a bug, logged in full."""
    if isinstance(error, OutOfMemory) and error.fallback is not None:
        log.warning("job %s: %s; giving the fallback", job_id, error)
        return Done(job_id, error.fallback)
    if isinstance(error, OutOfMemory):
        log.warning("job %s: out of memory: %s", job_id, error)
        return Failed(job_id, str(error), out_of_memory=True)
    if isinstance(error, ImagineError):
        log.warning("job %s: failed: %s", job_id, error)
        return Failed(job_id, str(error))
    log.error("job %s: the engine raised", job_id, exc_info=error)
    return Failed(job_id, UNEXPECTED_ERROR)
