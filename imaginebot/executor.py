"""The GPU executor: the one bridge between the event loop and the engine's worker threads.

One worker thread per engine (one engine per GPU) takes jobs from a queue that is fair across users and
runs them. Everything a job goes through comes back to the event loop as typed events, handed over only
with ``loop.call_soon_threadsafe``: the worker never waits on the loop, let alone on Discord.

Fairness: the next job is the oldest queued job of the user who was served least recently (users never
served first, in the order they arrived). With A's ten jobs queued, B's two run 2nd and 4th. Positions
are computed by simulating that same rule, so "position 2" is the job that will start second.

Not done: sharing one UNet batch between compatible jobs (each job already batches its four tiles).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from imaginebot.engine.api import Engine, GenerateResult, GenerateSpec, Preview
from imaginebot.errors import GenerationCancelled, ImagineError, OutOfMemory, QueueFull
from imaginebot.store_models import JobKind

log = logging.getLogger(__name__)

UNEXPECTED_ERROR = "Something went wrong while making the images; the error is in the bot's log."


@dataclass(frozen=True)
class JobRequest:
    """What the executor runs. Variations and upscales start from ``spec.init_image``."""

    job_id: int
    user_id: int
    kind: JobKind
    spec: GenerateSpec


# -- events, in the order a job can produce them -------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """Waiting; ``position`` 1 means next to start. Sent again whenever the position changes."""

    job_id: int
    position: int


@dataclass(frozen=True)
class Started:
    job_id: int


@dataclass(frozen=True)
class Progress:
    """A preview; a slow consumer only gets the latest one."""

    job_id: int
    preview: Preview


@dataclass(frozen=True)
class Done:
    job_id: int
    result: GenerateResult


@dataclass(frozen=True)
class Failed:
    job_id: int
    message: str  # for the user
    out_of_memory: bool = False


@dataclass(frozen=True)
class Cancelled:
    job_id: int


@dataclass(frozen=True)
class Interrupted:
    """The executor stopped first; the job is in the list ``Executor.stop`` returned."""

    job_id: int


Event = Queued | Started | Progress | Done | Failed | Cancelled | Interrupted
FinalEvent = Done | Failed | Cancelled | Interrupted
EventCallback = Callable[[Event], None]


@dataclass(frozen=True)
class QueueEntry:
    job_id: int
    user_id: int
    kind: JobKind
    prompt: str
    position: int | None  # None: running


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


@dataclass(eq=False)
class _Entry:
    """Executor-side state of a live job; shared with the worker thread under the executor's lock."""

    request: JobRequest
    handle: JobHandle
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: Literal["user", "stop"] = "user"
    sent_position: int | None = None
    # Thread-side preview coalescing: at most one preview hand-over is ever pending on the loop.
    preview_lock: threading.Lock = field(default_factory=threading.Lock)
    latest_preview: Preview | None = None
    preview_pending: bool = False


class Executor:
    """``async with Executor(engine) as ex: handle = ex.submit(request)``; ``engine`` may be a list, one
    worker thread per engine."""

    def __init__(
        self, engine: Engine | Sequence[Engine], *, max_queued_per_user: int = 3, preview_every: int = 5
    ) -> None:
        self._engines: list[Engine] = list(engine) if isinstance(engine, Sequence) else [engine]
        if not self._engines:
            raise ValueError("the executor needs at least one engine")
        self.max_queued_per_user = max_queued_per_user
        self.preview_every = preview_every
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
        for i, engine in enumerate(self._engines):
            finished: asyncio.Future[None] = loop.create_future()
            name = f"imaginebot-worker-{i}"
            threading.Thread(target=self._work, args=(engine, finished), name=name, daemon=True).start()
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
                del self._entries[entry.request.job_id]
                self._emit(entry, Interrupted(entry.request.job_id))
            for entry in self._running.values():
                if cancel_running:
                    entry.cancel_reason = "stop"
                    entry.cancel.set()
            self._cond.notify_all()
        await asyncio.gather(*self._workers)
        # The workers' last events were scheduled before their futures resolved, so they are delivered.
        return [*self._interrupted, *(entry.request for entry in queued)]

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
            entry = _Entry(request, handle)
            queue.append(entry)
            self._entries[request.job_id] = entry
            self._publish_positions()
            self._cond.notify()
        log.info("job %s: queued (user %s, %s)", request.job_id, request.user_id, request.kind)
        return handle

    def cancel(self, job_id: int) -> bool:
        """Remove a queued job, or ask a running one to stop at its next step (``Cancelled`` follows).
        False when the job is neither queued nor running."""
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
            return {entry.request.job_id: i for i, entry in enumerate(self._order(), start=1)}

    def queue_snapshot(self) -> QueueSnapshot:
        def row(entry: _Entry, position: int | None) -> QueueEntry:
            r = entry.request
            return QueueEntry(r.job_id, r.user_id, r.kind, r.spec.prompt, position)

        with self._cond:
            return QueueSnapshot(
                running=tuple(row(entry, None) for entry in self._running.values()),
                queued=tuple(row(entry, i) for i, entry in enumerate(self._order(), start=1)),
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

    def _pop(self) -> _Entry:
        user = min(self._queues, key=lambda u: (self._last_served.get(u, -1), self._arrival[u]))
        entry = self._queues[user][0]
        self._remove_queued(entry)
        self._dispatches += 1
        self._last_served[user] = self._dispatches
        return entry

    def _remove_queued(self, entry: _Entry) -> None:
        user = entry.request.user_id
        self._queues[user].remove(entry)
        if not self._queues[user]:
            del self._queues[user], self._arrival[user]

    def _publish_positions(self) -> None:
        for position, entry in enumerate(self._order(), start=1):
            if entry.sent_position != position:
                entry.sent_position = position
                self._emit(entry, Queued(entry.request.job_id, position))

    def _emit(self, entry: _Entry, event: Event) -> None:
        # Called from either thread, always under _cond, so a job's events are scheduled in order.
        assert self._loop is not None
        if self._loop.is_closed():  # nobody is listening any more
            log.warning("job %s: %s dropped, the event loop is closed", entry.request.job_id, event)
            return
        self._loop.call_soon_threadsafe(entry.handle._deliver, event)

    # -- the worker threads ----------------------------------------------------------------------------

    def _work(self, engine: Engine, finished: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            while True:
                with self._cond:
                    while not self._stopping and not self._queues:
                        self._cond.wait()
                    if self._stopping:
                        return
                    entry = self._pop()
                    self._running[entry.request.job_id] = entry
                    self._emit(entry, Started(entry.request.job_id))
                    self._publish_positions()
                outcome = self._run(engine, entry)
                with self._cond:
                    del self._running[entry.request.job_id], self._entries[entry.request.job_id]
                    if isinstance(outcome, Interrupted):
                        self._interrupted.append(entry.request)
                    self._emit(entry, outcome)
        finally:
            self._loop.call_soon_threadsafe(finished.set_result, None)

    def _run(self, engine: Engine, entry: _Entry) -> FinalEvent:
        job = entry.request
        log.info("job %s: started on %s", job.job_id, threading.current_thread().name)
        t0 = time.perf_counter()

        def on_preview(preview: Preview) -> None:
            with entry.preview_lock:
                entry.latest_preview = preview
                if entry.preview_pending:
                    return
                entry.preview_pending = True
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._deliver_preview, entry)

        try:
            if job.kind in (JobKind.IMAGINE, JobKind.REROLL):
                result = engine.generate(
                    job.spec,
                    on_preview=on_preview,
                    preview_every=self.preview_every,
                    should_cancel=entry.cancel.is_set,
                )
            elif job.kind is JobKind.VARIATION:
                assert job.spec.init_image is not None
                result = engine.vary(
                    job.spec.init_image,
                    job.spec,
                    on_preview=on_preview,
                    preview_every=self.preview_every,
                    should_cancel=entry.cancel.is_set,
                )
            else:
                assert job.spec.init_image is not None
                result = engine.upscale(job.spec.init_image, job.spec, should_cancel=entry.cancel.is_set)
        except GenerationCancelled:
            log.info("job %s: cancelled after %.1f s", job.job_id, time.perf_counter() - t0)
            return Interrupted(job.job_id) if entry.cancel_reason == "stop" else Cancelled(job.job_id)
        except OutOfMemory as e:
            log.warning("job %s: out of GPU memory: %s", job.job_id, e)
            return Failed(job.job_id, str(e), out_of_memory=True)
        except ImagineError as e:
            log.warning("job %s: failed: %s", job.job_id, e)
            return Failed(job.job_id, str(e))
        except Exception:
            log.exception("job %s: the engine raised", job.job_id)
            return Failed(job.job_id, UNEXPECTED_ERROR)
        log.info("job %s: done in %.1f s", job.job_id, time.perf_counter() - t0)
        return Done(job.job_id, result)

    @staticmethod
    def _deliver_preview(entry: _Entry) -> None:
        # On the loop thread. Scheduled before the job's final event, so a preview never follows it.
        with entry.preview_lock:
            preview, entry.latest_preview, entry.preview_pending = entry.latest_preview, None, False
        if preview is not None:
            entry.handle._deliver(Progress(entry.request.job_id, preview))
