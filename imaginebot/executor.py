"""The GPU executor: the one bridge between the event loop and the engine's worker threads.

One worker thread per engine (one engine per GPU) takes jobs from a queue that is fair across users.
Everything a job goes through comes back to the event loop as typed events, handed over only with
``loop.call_soon_threadsafe``: the worker never waits on the loop, let alone on Discord.

Fairness (``fairqueue``): the next job is the oldest queued job of the user who was served least recently.
Positions are computed by simulating that same rule, so "position 2" is the job that will start second.

Relax: a priority class of the same queue, not a second queue. A relax job starts only when no fast job
waits (for that worker's models); among relax jobs the same fairness holds. Nothing is ever stopped for a
fast job: a relax job that has started runs to its end. Positions and start estimates come from the same
order, so a relax job's position counts every fast job ahead of it.

Workers: one per engine, each a thread running a ``Batcher`` (continuous batching, see ``batcher``). At
each of its step boundaries a worker takes queued jobs, in the fair order, while the head of the queue
fits its group's capacity (samples of native size per UNet call); the head never gets skipped. Queue
positions carry an estimated start (``eta``), played forward from measured step times.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from imaginebot.batcher import Batcher, BatchJob, Dispatch
from imaginebot.engine.api import Engine, GenerateSpec, Plan, Task
from imaginebot.engine.models import safety_of, served
from imaginebot.errors import ParamError, QueueFull
from imaginebot.eta import Line, StepTimes, Work, estimate_starts, joins_batch
from imaginebot.fairqueue import FairQueue
from imaginebot.metrics import Metrics
from imaginebot.store_models import JobKind
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
    Queued,
    Started,
    WorkerStatus,
)

__all__ = [  # the events are defined in ``work`` and used by the job service from here
    "UNEXPECTED_ERROR",
    "Cancelled",
    "Done",
    "Event",
    "EventCallback",
    "Executor",
    "Failed",
    "FinalEvent",
    "Interrupted",
    "JobHandle",
    "JobRequest",
    "Progress",
    "QueueEntry",
    "QueueSnapshot",
    "Queued",
    "Started",
]

log = logging.getLogger(__name__)

EventCallback = Callable[[Event], None]


@dataclass(frozen=True)
class QueueEntry:
    job_id: int
    user_id: int
    kind: JobKind
    prompt: str
    position: int | None  # None: running
    eta_s: float | None = None  # queued: seconds until it starts, roughly
    relax: bool = False


@dataclass(frozen=True)
class QueueSnapshot:
    running: tuple[QueueEntry, ...]
    queued: tuple[QueueEntry, ...]  # in the order they will start


class JobHandle:
    """The event loop's side of one job. Its methods are for the loop thread only."""

    def __init__(
        self, executor: Executor, request: JobRequest, plan: Plan, on_event: EventCallback | None
    ) -> None:
        self.request = request
        self.plan = plan  # what it takes of a UNet call, and the steps that will run (an img2img's fewer)
        self.position: int | None = None  # the latest Queued position; None once started
        self._executor = executor
        self._on_event = on_event
        self._pending: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._final: asyncio.Future[FinalEvent] = asyncio.get_running_loop().create_future()

    @property
    def job_id(self) -> int:
        return self.request.job_id

    @property
    def final(self) -> FinalEvent | None:
        """How the job ended, once it has."""
        return self._final.result() if self._final.done() else None

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the job, ending with its final one. One consumer per job."""
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            event = self._pending.popleft()
            yield event
            if isinstance(event, FinalEvent):
                return

    async def wait(self) -> FinalEvent:
        """The final event, without consuming ``events()``."""
        return await asyncio.shield(self._final)

    def cancel(self) -> bool:
        return self._executor.cancel(self.job_id)

    def _deliver(self, event: Event) -> None:
        if self._final.done():
            return  # a preview that was still on its way when the job failed
        if isinstance(event, Queued):
            self.position = event.position
        elif isinstance(event, Started):
            self.position = None
        last = self._pending[-1] if self._pending else None
        if isinstance(event, Progress | Queued) and type(last) is type(event):
            self._pending[-1] = event  # coalesce: only the latest preview / position is worth showing
        else:
            self._pending.append(event)
        self._wakeup.set()
        if isinstance(event, FinalEvent):
            self._final.set_result(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("job %s: event callback failed on %s", self.job_id, type(event).__name__)


@dataclass(eq=False, kw_only=True)
class _Entry(BatchJob):
    """A live job as the executor sees it; shared with the worker threads under the executor's lock."""

    handle: JobHandle
    sent_position: int | None = None
    sent_eta: float | None = None
    worker: int | None = None  # running on this worker
    queued_at: float | None = field(default_factory=time.monotonic)  # None once started: waited
    # Thread-side preview coalescing: at most one preview hand-over is ever pending on the loop.
    preview_lock: threading.Lock = field(default_factory=threading.Lock)
    latest_preview: Progress | None = None
    preview_pending: bool = False


class Worker(Protocol):
    """A device: a ``Batcher`` on a thread of this process, or a remote one (``ray_workers.RayWorker``)."""

    capacity: float | None  # samples of native size per UNet call; None: not known yet
    models: frozenset[str] | None  # the models it holds (None: it takes any job); None also while unknown
    waits_for_room: bool  # remote: its jobs leave on their own, so it waits for the queue's head to fit

    @property
    def accepting(self) -> bool:
        """False while a remote worker is down: it gets no jobs."""
        ...

    @property
    def gone(self) -> bool:
        """A remote worker that will not come back: its thread ends."""
        ...

    def run(self, dispatch: Dispatch) -> None:
        """On a thread of its own, until ``dispatch.admit`` says stop."""
        ...

    def cancel(self, job: BatchJob) -> None:
        """``job.cancel`` was set: tell the device (a local batcher sees it by itself)."""
        ...

    def timing(self) -> tuple[Line | None, float]:
        """Its measured UNet-call line (None: no call timed yet) and seconds per job outside the calls."""
        ...


class SupportsPlan(Protocol):
    """Whatever plans jobs for the queue: an engine, or a model's configs when the engines are elsewhere."""

    def plan(self, spec: GenerateSpec, task: Task = "generate") -> Plan: ...


class Executor:
    """``async with Executor(engine) as ex: handle = ex.submit(request)``; ``engine`` may be a list, one
    local worker thread per engine. ``capacity``: samples of native size per UNet call on each local
    worker (None: each engine's ``default_capacity()``, measured on its worker thread at start). Remote
    workers come with ``workers`` (and then a ``planner``, the model's, when there is no engine here)."""

    def __init__(
        self,
        engine: Engine | Sequence[Engine] = (),
        *,
        workers: Sequence[Worker] = (),
        planner: SupportsPlan | None = None,
        max_queued_per_user: int = 3,
        preview_every: int = 5,
        capacity: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        engines: list[Engine] = list(engine) if isinstance(engine, Sequence) else [engine]
        if capacity is not None and capacity < 1:
            raise ValueError(f"the batch capacity must be at least 1 sample, got {capacity}")
        self.max_queued_per_user = max_queued_per_user
        self.preview_every = preview_every
        self.step_times = StepTimes()
        self.metrics = metrics or Metrics()  # the bot's registry: the job service records into it too
        local = [
            Batcher(
                e,
                capacity=capacity,
                preview_every=preview_every,
                step_times=self.step_times,
                models=served(e),
                safety=safety_of(e),
            )
            for e in engines
        ]
        self._workers: list[Worker] = [*local, *workers]
        if not self._workers and planner is None:
            raise ValueError("the executor needs an engine, or workers and a planner")
        self._planner: SupportsPlan = planner or _LocalPlanner(engines)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: list[asyncio.Future[None]] = []
        self._stopping = False
        # Everything below is shared with the worker threads and guarded by _cond.
        self._cond = threading.Condition()
        self._queue: FairQueue[_Entry] = FairQueue(lambda e: (e.request.relax, e.request.user_id))
        self._entries: dict[int, _Entry] = {}  # queued and running, by job id
        self._running: dict[int, _Entry] = {}
        self._interrupted: list[JobRequest] = []

    async def __aenter__(self) -> Executor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError("the executor was already started")
        self._loop = asyncio.get_running_loop()
        for i in range(len(self._workers)):
            self._start_worker(i)

    def add_worker(self, worker: Worker) -> None:
        """A new device (a node joined the cluster): it starts taking jobs at once."""
        if self._loop is None or self._stopping:
            raise RuntimeError("the executor is not running")
        with self._cond:
            self._workers.append(worker)
            index = len(self._workers) - 1
        self._start_worker(index)

    def _start_worker(self, index: int) -> None:
        assert self._loop is not None
        finished: asyncio.Future[None] = self._loop.create_future()
        name = f"imaginebot-worker-{index}"
        threading.Thread(target=self._work, args=(index, finished), name=name, daemon=True).start()
        self._finished.append(finished)

    async def stop(self, *, cancel_running: bool = True) -> list[JobRequest]:
        """Stop the workers and return the jobs that did not finish (running ones first, then the queue in
        order); each of them gets ``Interrupted``. With ``cancel_running=False`` running jobs may finish."""
        if self._loop is None or self._stopping:
            return []
        with self._cond:
            self._stopping = True
            queued = self._order()
            for entry in queued:
                self._queue.remove(entry)
                del self._entries[entry.job_id]
                self._emit(entry, Interrupted(entry.job_id))
            for entry in self._running.values():
                if cancel_running:
                    entry.cancel_reason = "stop"
                    entry.cancel.set()
                    self._forward_cancel(entry)
            self._cond.notify_all()
        await asyncio.gather(*self._finished)
        # The workers' last events were scheduled before their futures resolved, so they are delivered.
        return [*self._interrupted, *(entry.request for entry in queued)]

    def workers(self) -> list[WorkerStatus]:
        """Each worker as the operator sees it (/healthz, /metrics)."""
        with self._cond:
            return [
                WorkerStatus(
                    index,
                    str(getattr(worker, "name", f"imaginebot-worker-{index}")),
                    worker.accepting
                    and not worker.gone
                    and index < len(self._finished)
                    and not self._finished[index].done(),  # its thread runs
                    None if worker.models is None else tuple(sorted(worker.models)),
                    worker.capacity,
                )
                for index, worker in enumerate(self._workers)
            ]

    @property
    def capacities(self) -> list[float | None]:
        """Each worker's capacity now (None: not measured yet)."""
        with self._cond:
            return [worker.capacity for worker in self._workers]

    # -- the loop's side -------------------------------------------------------------------------------

    def submit(self, request: JobRequest, *, on_event: EventCallback | None = None) -> JobHandle:
        """Queue a job. Raises QueueFull when the user already has ``max_queued_per_user`` jobs waiting.

        ``on_event`` (optional) is called on the loop thread with every event as it arrives, before
        coalescing; ``handle.events()`` is the usual way to follow a job.
        """
        return self.submit_batch([request], on_event=on_event)[0]

    def submit_batch(
        self, requests: Sequence[JobRequest], *, on_event: EventCallback | None = None
    ) -> list[JobHandle]:
        """Queue several jobs at once, all or none (a student's confirmed permutations or --repeat).

        The cap on queued jobs is checked once, against what each user had waiting before the batch: a batch
        the student confirmed is queued whole (the fair queue still lets everyone else in between its jobs),
        or not at all with QueueFull. Planning errors (ParamError) also leave nothing queued.
        """
        if self._loop is None or self._stopping:
            raise RuntimeError("the executor is not running")
        for request in requests:
            if (
                request.kind in (JobKind.VARIATION, JobKind.UPSCALE, JobKind.EDIT)
                and request.spec.init_image is None
            ):
                raise ValueError(f"a {request.kind} job needs the source image")
        with self._cond:
            for request in requests:
                self._check_served(request.spec.model)
        handles = [
            JobHandle(self, request, self._planner.plan(request.spec, request.task), on_event)
            for request in requests
        ]
        with self._cond:
            ids = [request.job_id for request in requests]
            if len(set(ids)) != len(ids) or any(job_id in self._entries for job_id in ids):
                raise ValueError(f"jobs {ids}: one of them is already queued or running")
            for user in dict.fromkeys(request.user_id for request in requests):
                self._check_room(user)
            for handle in handles:
                entry = _Entry(handle.request, handle.plan, handle=handle)
                self._queue.push(entry)
                self._entries[entry.job_id] = entry
            self._publish_positions()
            self._cond.notify_all()
        for request in requests:
            log.info(
                "job %s: queued (user %s, %s%s)",
                request.job_id,
                request.user_id,
                request.kind,
                ", relax" if request.relax else "",
            )
        return handles

    def check_room(self, user_id: int) -> None:
        """QueueFull when the user already has ``max_queued_per_user`` jobs waiting."""
        with self._cond:
            self._check_room(user_id)

    def cancel(self, job_id: int) -> bool:
        """Remove a queued job, or ask a running one to leave its batch at the next step (``Cancelled``
        follows). False when the job is neither queued nor running."""
        with self._cond:
            entry = self._entries.get(job_id)
            if entry is None:
                return False
            if job_id in self._running:
                entry.cancel.set()
                self._forward_cancel(entry)
                log.info("job %s: cancel requested while running", job_id)
                return True
            self._queue.remove(entry)
            del self._entries[job_id]
            self._emit(entry, Cancelled(job_id))
            self._publish_positions()
        log.info("job %s: cancelled while queued", job_id)
        return True

    def positions(self) -> dict[int, int]:
        """Queued job id -> position (1: next to start)."""
        with self._cond:
            return {entry.job_id: i for i, entry in enumerate(self._order(), start=1)}

    def queue_snapshot(self) -> QueueSnapshot:
        def row(entry: _Entry, position: int | None, eta: float | None = None) -> QueueEntry:
            r = entry.request
            return QueueEntry(r.job_id, r.user_id, r.kind, r.spec.prompt, position, eta, r.relax)

        with self._cond:
            order = self._order()
            etas = self._etas(order)
            return QueueSnapshot(
                running=tuple(row(entry, None) for entry in self._running.values()),
                queued=tuple(
                    row(e, i, eta) for i, (e, eta) in enumerate(zip(order, etas, strict=True), start=1)
                ),
            )

    # -- queue internals (caller holds _cond) ----------------------------------------------------------

    def _check_room(self, user_id: int) -> None:
        waiting = self._queue.waiting(user_id)
        if waiting >= self.max_queued_per_user:
            raise QueueFull(
                f"You already have {waiting} jobs waiting, the most allowed is "
                f"{self.max_queued_per_user}; wait for one to start, or cancel one."
            )

    def _order(self) -> list[_Entry]:
        """Queued entries in the order the workers will take them."""
        return self._queue.order()

    def _check_served(self, model: str) -> None:
        """A job of a model no worker holds would wait forever: refuse it (workers still starting, whose
        models are not known yet, may hold it)."""
        if (
            not model
            or not self._workers
            or any(w.models is None or model in w.models for w in self._workers)
        ):
            return
        held = sorted({name for w in self._workers for name in w.models or ()})
        raise ParamError(
            f"No GPU of this bot has the model {model!r} loaded (they hold {', '.join(held)}); "
            "pick another with --model, or ask the bot's operator."
        )

    def _head(self, worker: int | None = None) -> _Entry | None:
        """The job the queue would give next: the first in the fair order, or with ``worker`` the first of the
        models that worker holds (None: it holds none of the queued jobs' models)."""
        first = self._queue.head()
        if worker is None or self._serves(worker, first):
            return first
        return next((entry for entry in self._order() if self._serves(worker, entry)), None)

    def _serves(self, worker: int, entry: _Entry) -> bool:
        models = self._workers[worker].models
        return models is None or not entry.request.spec.model or entry.request.spec.model in models

    def _etas(self, order: list[_Entry]) -> list[float | None]:
        timings = {
            i: w.timing() for i, w in enumerate(self._workers) if w.capacity is not None and w.accepting
        }
        known = [i for i, (line, _) in timings.items() if line is not None]
        if not order or not known:
            return [None] * len(order)
        running: dict[int, list[Work]] = {i: [] for i in known}
        for entry in self._running.values():
            if entry.worker in running:
                running[entry.worker].append(Work(entry.plan.group, entry.plan.cost, entry.steps_left))
        queued = [Work(e.plan.group, e.plan.cost, e.plan.steps, e.request.spec.model) for e in order]
        capacities = [self._workers[i].capacity or 1.0 for i in known]
        lines = [line for i in known if (line := timings[i][0]) is not None]
        overhead = max(timings[i][1] for i in known)
        models = [self._workers[i].models for i in known]
        return list(estimate_starts(list(running.values()), queued, capacities, lines, overhead, models))

    def _forward_cancel(self, entry: _Entry) -> None:
        if entry.worker is not None:
            self._workers[entry.worker].cancel(entry)

    def _publish_positions(self) -> None:
        order = self._order()
        for position, (entry, eta) in enumerate(zip(order, self._etas(order), strict=True), start=1):
            if entry.sent_position != position or _changed(entry.sent_eta, eta):
                entry.sent_position, entry.sent_eta = position, eta
                self._emit(entry, Queued(entry.job_id, position, eta))

    def _emit(self, entry: _Entry, event: Event) -> None:
        # Called from any thread, always under _cond, so a job's events are scheduled in order.
        assert self._loop is not None
        if self._loop.is_closed():  # nobody is listening any more
            log.warning("job %s: %s dropped, the event loop is closed", entry.job_id, event)
            return
        self._loop.call_soon_threadsafe(entry.handle._deliver, event)

    # -- the worker threads ----------------------------------------------------------------------------

    def _work(self, worker: int, finished: asyncio.Future[None]) -> None:
        assert self._loop is not None
        dispatch = Dispatch(
            admit=lambda running: self._admit(worker, running),
            report=self._report,
            requeue=self._requeue,
            wake=self._wake,
            measured=lambda call: self.metrics.observe_call(worker, call),
        )
        try:
            self._workers[worker].run(dispatch)
        except Exception:
            log.exception("worker %d stopped on an error; its jobs are put back", worker)
        finally:
            with self._cond:  # nothing may stay assigned to a worker that is gone
                for entry in [e for e in self._running.values() if e.worker == worker]:
                    self._requeue_locked(entry)
            self._loop.call_soon_threadsafe(finished.set_result, None)

    def _admit(self, worker: int, running: Sequence[BatchJob]) -> list[BatchJob] | None:
        """At a worker's step boundary: wait while there is nothing for it to do, then take the queued jobs
        that fit, in the fair order. None: stop, nothing of this worker's is left to run."""
        me = self._workers[worker]
        with self._cond:
            while True:
                mine = [e for e in self._running.values() if e.worker == worker]
                if self._stopping or me.gone:
                    return [] if mine else None
                admitted = self._take(worker, mine) if me.accepting else []
                if admitted:
                    self._publish_positions()
                    return admitted
                if mine and not me.waits_for_room:
                    return []  # a local batcher steps what it has
                self._cond.wait()

    def _take(self, worker: int, mine: list[_Entry]) -> list[BatchJob]:
        capacity = self._workers[worker].capacity
        assert capacity is not None
        admitted: list[BatchJob] = []
        while self._queue:
            head = self._head(worker)
            if head is None:
                break  # the queued jobs are of models this worker does not hold
            group = head.plan.group
            load = sum(j.plan.cost for j in (*mine, *admitted) if j.plan.group == group)
            if not joins_batch(load, head.plan.cost, capacity):
                break  # the head waits for room; nobody behind it jumps the queue
            if self._lighter_worker(worker, head, sum(j.plan.cost for j in (*mine, *admitted))):
                self._cond.notify_all()  # it is theirs to take
                break
            entry = self._queue.pop(head)
            entry.worker = worker
            if entry.queued_at is not None:  # its first start (not again after its worker was lost)
                self.metrics.queue_wait.observe(time.monotonic() - entry.queued_at)
                entry.queued_at = None
            log.info("job %s: starts on worker %d", entry.job_id, worker)
            self._running[entry.job_id] = entry
            self._emit(entry, Started(entry.job_id))
            admitted.append(entry)
        return admitted

    def _lighter_worker(self, worker: int, head: _Entry, load: float) -> bool:
        """Whether another worker has less work and room for ``head``: jobs spread over the devices
        rather than fill the first one (each step of a smaller batch is quicker)."""
        loads = dict.fromkeys(range(len(self._workers)), 0.0)
        same_group = dict.fromkeys(range(len(self._workers)), 0.0)
        for entry in self._running.values():
            if entry.worker is not None:
                loads[entry.worker] += entry.plan.cost
                if entry.plan.group == head.plan.group:
                    same_group[entry.worker] += entry.plan.cost
        return any(
            other != worker
            and self._serves(other, head)
            and w.accepting
            and w.capacity is not None
            and loads[other] < load
            and joins_batch(same_group[other], head.plan.cost, w.capacity)
            for other, w in enumerate(self._workers)
        )

    def _requeue(self, job: BatchJob) -> None:
        with self._cond:
            self._requeue_locked(job)

    def _requeue_locked(self, job: BatchJob) -> None:
        """A job lost with its worker: back to the front of the queue, to start again elsewhere (its
        user sees it wait, then start again); cancelled or stopping, it ends here."""
        assert isinstance(job, _Entry)
        if self._running.pop(job.job_id, None) is None:
            return  # it had ended already
        job.worker, job.state, job.ended = None, None, False
        if self._stopping or job.cancel.is_set():
            del self._entries[job.job_id]
            outcome = Cancelled(job.job_id) if job.cancel_reason == "user" else Interrupted(job.job_id)
            if isinstance(outcome, Interrupted):
                self._interrupted.append(job.request)
            self._emit(job, outcome)
        else:
            log.warning("job %s: its worker was lost; back to the front of the queue", job.job_id)
            job.sent_position = None
            self._queue.front.append(job)
            self._publish_positions()
        self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _report(self, job: BatchJob, event: Event) -> None:
        """A worker's event: a preview (coalesced, on the preview thread) or the job's end."""
        assert isinstance(job, _Entry) and self._loop is not None
        if isinstance(event, Progress):
            if self._loop.is_closed():  # a preview still on its way when the loop went
                return
            with job.preview_lock:
                job.latest_preview = event
                if job.preview_pending:
                    return
                job.preview_pending = True
            self._loop.call_soon_threadsafe(self._deliver_preview, job)
            return
        assert isinstance(event, FinalEvent)
        with self._cond:
            del self._running[job.job_id], self._entries[job.job_id]
            if isinstance(event, Interrupted):
                self._interrupted.append(job.request)
            self._emit(job, event)
            self._publish_positions()  # the estimates of who waits move with every job that ends
            self._cond.notify_all()

    @staticmethod
    def _deliver_preview(entry: _Entry) -> None:
        # On the loop thread. Scheduled before the job's final event, so a preview never follows it.
        with entry.preview_lock:
            progress, entry.latest_preview, entry.preview_pending = entry.latest_preview, None, False
        if progress is not None:
            entry.handle._deliver(progress)


@dataclass(frozen=True)
class _LocalPlanner:
    """Plans with the first local engine that holds the job's model."""

    engines: Sequence[Engine]

    def plan(self, spec: GenerateSpec, task: Task = "generate") -> Plan:
        for engine in self.engines:
            models = served(engine)
            if models is None or not spec.model or spec.model in models:
                return engine.plan(spec, task)
        raise ParamError(f"No engine of this bot has the model {spec.model!r}.")


def _changed(sent: float | None, eta: float | None) -> bool:
    """Whether an estimate moved enough to be worth another message (a quarter, and at least 5 s)."""
    if sent is None or eta is None:
        return sent != eta
    return abs(eta - sent) > max(5.0, 0.25 * sent)
