"""The GPU executor: the one bridge between the event loop and the engine's worker threads.

One worker thread per engine (one engine per GPU) takes jobs from a queue that is fair across users.
Everything a job goes through comes back to the event loop as typed events, handed over only with
``loop.call_soon_threadsafe``: the worker never waits on the loop, let alone on Discord.

Fairness: the next job is the oldest queued job of the user who was served least recently (users never
served first, in the order they arrived). With A's ten jobs queued, B's two run 2nd and 4th. Positions
are computed by simulating that same rule, so "position 2" is the job that will start second.

Workers: one per engine, each a thread running a ``Batcher`` (continuous batching, see ``batcher``). At
each of its step boundaries a worker takes queued jobs, in the fair order, while the head of the queue
fits its group's capacity (samples of native size per UNet call); the head never gets skipped. Queue
positions carry an estimated start (``eta``), played forward from measured step times.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from imaginebot.batcher import Batcher, BatchJob
from imaginebot.engine.api import Engine
from imaginebot.errors import QueueFull
from imaginebot.eta import StepTimes, Work, estimate_starts, fits
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


@dataclass(frozen=True)
class QueueSnapshot:
    running: tuple[QueueEntry, ...]
    queued: tuple[QueueEntry, ...]  # in the order they will start


class JobHandle:
    """The event loop's side of one job. Its methods are for the loop thread only."""

    def __init__(self, executor: Executor, request: JobRequest, on_event: EventCallback | None) -> None:
        self.request = request
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
    # Thread-side preview coalescing: at most one preview hand-over is ever pending on the loop.
    preview_lock: threading.Lock = field(default_factory=threading.Lock)
    latest_preview: Progress | None = None
    preview_pending: bool = False


class Executor:
    """``async with Executor(engine) as ex: handle = ex.submit(request)``; ``engine`` may be a list, one
    worker thread per engine. ``capacity``: samples of native size per UNet call on each worker (None:
    each engine's ``default_capacity()``, measured on its worker thread at start)."""

    def __init__(
        self,
        engine: Engine | Sequence[Engine],
        *,
        max_queued_per_user: int = 3,
        preview_every: int = 5,
        capacity: float | None = None,
    ) -> None:
        self._engines: list[Engine] = list(engine) if isinstance(engine, Sequence) else [engine]
        if not self._engines:
            raise ValueError("the executor needs at least one engine")
        if capacity is not None and capacity < 1:
            raise ValueError(f"the batch capacity must be at least 1 sample, got {capacity}")
        self.max_queued_per_user = max_queued_per_user
        self.preview_every = preview_every
        self.step_times = StepTimes()
        self._batchers = [
            Batcher(e, capacity=capacity, preview_every=preview_every, step_times=self.step_times)
            for e in self._engines
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[asyncio.Future[None]] = []
        self._stopping = False
        # Everything below is shared with the worker threads and guarded by _cond.
        self._cond = threading.Condition()
        self._queues: dict[int, deque[_Entry]] = {}  # user id -> their queued jobs, oldest first
        self._arrival: dict[int, int] = {}  # user id -> when their queue last became non-empty
        self._last_served: dict[int, int] = {}  # user id -> dispatch number of their latest started job
        self._dispatches = 0
        self._arrivals = 0
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
        self._loop = loop = asyncio.get_running_loop()
        for i in range(len(self._batchers)):
            finished: asyncio.Future[None] = loop.create_future()
            name = f"imaginebot-worker-{i}"
            threading.Thread(target=self._work, args=(i, finished), name=name, daemon=True).start()
            self._workers.append(finished)

    async def stop(self, *, cancel_running: bool = True) -> list[JobRequest]:
        """Stop the workers and return the jobs that did not finish (running ones first, then the queue in
        order); each of them gets ``Interrupted``. With ``cancel_running=False`` running jobs may finish."""
        if self._loop is None or self._stopping:
            return []
        with self._cond:
            self._stopping = True
            queued = self._order()
            for entry in queued:
                self._remove_queued(entry)
                del self._entries[entry.job_id]
                self._emit(entry, Interrupted(entry.job_id))
            for entry in self._running.values():
                if cancel_running:
                    entry.cancel_reason = "stop"
                    entry.cancel.set()
            self._cond.notify_all()
        await asyncio.gather(*self._workers)
        # The workers' last events were scheduled before their futures resolved, so they are delivered.
        return [*self._interrupted, *(entry.request for entry in queued)]

    @property
    def capacities(self) -> list[float | None]:
        """Each worker's capacity now (None: not measured yet)."""
        with self._cond:
            return [batcher.capacity for batcher in self._batchers]

    # -- the loop's side -------------------------------------------------------------------------------

    def submit(self, request: JobRequest, *, on_event: EventCallback | None = None) -> JobHandle:
        """Queue a job. Raises QueueFull when the user already has ``max_queued_per_user`` jobs waiting.

        ``on_event`` (optional) is called on the loop thread with every event as it arrives, before
        coalescing; ``handle.events()`` is the usual way to follow a job.
        """
        if self._loop is None or self._stopping:
            raise RuntimeError("the executor is not running")
        if request.kind in (JobKind.VARIATION, JobKind.UPSCALE) and request.spec.init_image is None:
            raise ValueError(f"a {request.kind} job needs the source image")
        plan = self._engines[0].plan(request.spec, request.task)
        handle = JobHandle(self, request, on_event)
        with self._cond:
            if request.job_id in self._entries:
                raise ValueError(f"job {request.job_id} is already queued or running")
            queue = self._queues.get(request.user_id)
            if queue is not None and len(queue) >= self.max_queued_per_user:
                raise QueueFull(
                    f"You already have {len(queue)} jobs waiting, the most allowed is "
                    f"{self.max_queued_per_user}; wait for one to start, or cancel one."
                )
            if queue is None:
                queue = self._queues[request.user_id] = deque()
                self._arrivals += 1
                self._arrival[request.user_id] = self._arrivals
            entry = _Entry(request, plan, handle=handle)
            queue.append(entry)
            self._entries[request.job_id] = entry
            self._publish_positions()
            self._cond.notify_all()
        log.info("job %s: queued (user %s, %s)", request.job_id, request.user_id, request.kind)
        return handle

    def cancel(self, job_id: int) -> bool:
        """Remove a queued job, or ask a running one to leave its batch at the next step (``Cancelled``
        follows). False when the job is neither queued nor running."""
        with self._cond:
            entry = self._entries.get(job_id)
            if entry is None:
                return False
            if job_id in self._running:
                entry.cancel.set()
                log.info("job %s: cancel requested while running", job_id)
                return True
            self._remove_queued(entry)
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
            return QueueEntry(r.job_id, r.user_id, r.kind, r.spec.prompt, position, eta)

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

    def _order(self) -> list[_Entry]:
        """Queued entries in the order the workers will take them: the same rule as ``_pop``, simulated."""
        heap = [(self._last_served.get(u, -1), self._arrival[u], u) for u in self._queues]
        heapq.heapify(heap)
        taken = dict.fromkeys(self._queues, 0)
        dispatches, order = self._dispatches, list[_Entry]()
        while heap:
            _, arrival, user = heapq.heappop(heap)
            order.append(self._queues[user][taken[user]])
            taken[user] += 1
            dispatches += 1
            if taken[user] < len(self._queues[user]):
                heapq.heappush(heap, (dispatches, arrival, user))
        return order

    def _head(self) -> _Entry:
        """The job ``_pop`` would take."""
        user = min(self._queues, key=lambda u: (self._last_served.get(u, -1), self._arrival[u]))
        return self._queues[user][0]

    def _pop(self) -> _Entry:
        entry = self._head()
        self._remove_queued(entry)
        self._dispatches += 1
        self._last_served[entry.request.user_id] = self._dispatches
        return entry

    def _remove_queued(self, entry: _Entry) -> None:
        user = entry.request.user_id
        self._queues[user].remove(entry)
        if not self._queues[user]:
            del self._queues[user], self._arrival[user]

    def _etas(self, order: list[_Entry]) -> list[float | None]:
        line = self.step_times.line()
        capacities = [batcher.capacity for batcher in self._batchers]
        if line is None or not order or None in capacities:
            return [None] * len(order)
        running: list[list[Work]] = [[] for _ in self._engines]
        for entry in self._running.values():
            assert entry.worker is not None
            running[entry.worker].append(Work(entry.plan.group, entry.plan.cost, entry.steps_left))
        queued = [Work(e.plan.group, e.plan.cost, e.plan.steps) for e in order]
        known = [c for c in capacities if c is not None]
        overhead = self.step_times.job_overhead
        return list(estimate_starts(running, queued, known, line, overhead))

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
        try:
            self._batchers[worker].run(lambda running: self._admit(worker, running), self._report)
        finally:
            self._loop.call_soon_threadsafe(finished.set_result, None)

    def _admit(self, worker: int, running: Sequence[BatchJob]) -> list[BatchJob] | None:
        """At a worker's step boundary: wait while there is nothing to do, then take the queued jobs that
        fit, in the fair order. None: stopping, and nothing of this worker's is left to run."""
        with self._cond:
            while not running and not self._queues and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return [] if running else None
            capacity = self._batchers[worker].capacity
            assert capacity is not None
            admitted: list[BatchJob] = []
            while self._queues:
                head = self._head()
                group = head.plan.group
                load = sum(j.plan.cost for j in (*running, *admitted) if j.plan.group == group)
                if not fits(load, head.plan.cost, capacity):
                    break  # the head waits for room; nobody behind it jumps the queue
                entry = self._pop()
                entry.worker = worker
                self._running[entry.job_id] = entry
                self._emit(entry, Started(entry.job_id))
                admitted.append(entry)
            if admitted:
                self._publish_positions()
            return admitted

    def _report(self, job: BatchJob, event: Event) -> None:
        """A worker's event: a preview (coalesced, on the preview thread) or the job's end."""
        assert isinstance(job, _Entry) and self._loop is not None
        if isinstance(event, Progress):
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


def _changed(sent: float | None, eta: float | None) -> bool:
    """Whether an estimate moved enough to be worth another message (a quarter, and at least 5 s)."""
    if sent is None or eta is None:
        return sent != eta
    return abs(eta - sent) > max(5.0, 0.25 * sent)
