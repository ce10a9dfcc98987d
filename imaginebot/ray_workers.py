"""Workers as Ray actors: one per GPU of a Ray cluster (a lab of GPU PCs, or a box with several GPUs).

The bot keeps Discord, the store, quotas, the fair queue and the job service; an actor
(``imaginebot-worker-<n>`` in namespace ``imaginebot``, ``num_gpus=1``, or some CPUs on a cluster without
GPUs) loads the model once and runs the same ``Batcher`` as a local worker.

Per job the bot calls the actor's ``run``, a streaming generator: the job's events (previews, its end
with the images) come back one by one, in order, as the batcher reports them, and the end of the stream
is the job's end. Streaming rather than polling or calling back into the bot: Ray keeps the order and
applies backpressure, the bot needs no address the actors can reach, and a dead actor shows up on the
stream itself (``RayActorError``). Then the job goes back to the front of the queue and runs elsewhere;
the actor is restarted by Ray (``max_restarts=-1``, the model loaded again), and its worker takes jobs
again once it answers. Cancel is a call of its own (``cancel``); the batcher sees it at the next step.

Ray is imported only when ``IMAGINEBOT_RAY_ADDRESS`` is set (the ``[ray]`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorDiedError, AuthenticationError, RayActorError

from imaginebot.batcher import Batcher, BatchJob, Dispatch
from imaginebot.catalog import ModelEntry
from imaginebot.engine.api import Plan
from imaginebot.errors import ConfigError
from imaginebot.eta import Line
from imaginebot.work import Event, FinalEvent, JobRequest, UnetCall

log = logging.getLogger(__name__)

NAMESPACE = "imaginebot"
ACTOR_PREFIX = "imaginebot-worker-"
RETRY_S = 2.0  # between two tries to reach a worker that is down


@dataclass(frozen=True)
class WorkerConfig:
    """What an actor needs to load its engine (picklable: it travels to the node)."""

    models: tuple[ModelEntry, ...] = ()  # the first is the default; empty: the embedded model
    lora_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    upscale_max_side: int = 2048
    capacity: float | None = None
    preview_every: int = 5
    safety_checker: str | None = None  # a folder on the node (IMAGINEBOT_SAFETY_CHECKER): checks every image


class WorkerActor:
    """The remote side (an async Ray actor): an engine, its batcher on a thread, an inbox of jobs."""

    def __init__(self, config: WorkerConfig) -> None:
        from imaginebot.config import embedded_entry
        from imaginebot.engine.models import load_models  # torch and the models load on the node

        engine = load_models(
            config.models or (embedded_entry(),),  # the embedded model of this node's own install
            device=config.device,
            dtype=config.dtype,
            upscale_max_side=config.upscale_max_side,
            lora_dir=config.lora_dir,
            safety_checker=config.safety_checker,
        )
        capacity = config.capacity or engine.default_capacity()
        self._batcher = Batcher(
            engine,
            capacity=capacity,
            preview_every=config.preview_every,
            models=frozenset(engine.names),
            safety=engine.safety,
        )
        self._models = engine.names  # those its GPU holds, which may be fewer than configured
        self._device = str(getattr(engine.engine(""), "device", config.device))
        self._cond = threading.Condition()
        self._inbox: list[BatchJob] = []
        self._jobs: dict[int, BatchJob] = {}
        self._streams: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]] = {}
        # UNet calls since the bot last asked (info), for its /metrics; bounded, should it stop asking
        self._calls: deque[UnetCall] = deque(maxlen=10_000)
        dispatch = Dispatch(
            admit=self._admit,
            report=self._report,
            requeue=_nothing,
            wake=_nothing,
            measured=self._calls.append,  # deque's append and popleft are thread-safe
        )
        threading.Thread(target=self._batcher.run, args=(dispatch,), name="batcher", daemon=True).start()

    async def info(self) -> dict[str, Any]:
        times = self._batcher.step_times
        return {
            "capacity": self._batcher.capacity,
            "device": self._device,
            "models": list(self._models),
            "pid": os.getpid(),
            "line": times.line(),  # for the bot's estimates of when queued jobs start
            "job_overhead": times.job_overhead,
            "calls": [self._calls.popleft() for _ in range(len(self._calls))],  # for its /metrics
        }

    async def run(self, request: JobRequest, plan: Plan) -> AsyncIterator[Event]:
        """The job's events, ending with its final one (the bot decided it fits this worker)."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        job = BatchJob(request, plan)
        with self._cond:
            self._streams[job.job_id] = (asyncio.get_running_loop(), queue)
            self._jobs[job.job_id] = job
            self._inbox.append(job)
            self._cond.notify_all()
        ended = False
        try:
            while not ended:
                event = await queue.get()
                ended = isinstance(event, FinalEvent)
                yield event
        finally:
            if not ended:  # the bot stopped listening: nobody wants the images
                job.cancel_reason = "stop"
                job.cancel.set()

    async def cancel(self, job_id: int, reason: str) -> None:
        with self._cond:
            job = self._jobs.get(job_id)
        if job is not None:
            job.cancel_reason = "stop" if reason == "stop" else "user"
            job.cancel.set()

    def _admit(self, running: Sequence[BatchJob]) -> list[BatchJob]:
        with self._cond:
            while not running and not self._inbox:
                self._cond.wait()
            admitted, self._inbox = self._inbox, []
            return admitted

    def _report(self, job: BatchJob, event: Event) -> None:
        with self._cond:
            loop, queue = self._streams[job.job_id]
            if isinstance(event, FinalEvent):
                del self._streams[job.job_id], self._jobs[job.job_id]
        loop.call_soon_threadsafe(queue.put_nowait, event)


def _nothing(*args: object) -> None:
    """A worker on its own has no queue to wake or put jobs back into: the bot does that."""


class RayWorker:
    """The bot's side of one actor: a ``Worker`` for the executor. Its thread only waits for room and
    starts jobs; each job's stream is followed on the bot's event loop."""

    waits_for_room = True

    def __init__(self, actor: Any, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.actor, self.name = actor, name
        self.capacity: float | None = None
        self.models: frozenset[str] | None = None  # known once it answers
        self._loop = loop
        self._up = False
        self._gone = False
        self._dispatch: Dispatch | None = None
        self._recovering = False
        self._line: Line | None = None  # the actor's step times, as of its latest finished job
        self._job_overhead = 0.0

    @property
    def accepting(self) -> bool:
        return self._up

    @property
    def gone(self) -> bool:
        return self._gone

    def run(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        asyncio.run_coroutine_threadsafe(self._recover(), self._loop)
        while (admitted := dispatch.admit(())) is not None:
            for job in admitted:
                asyncio.run_coroutine_threadsafe(self._follow(job), self._loop)

    def cancel(self, job: BatchJob) -> None:
        self.actor.cancel.remote(job.job_id, job.cancel_reason)

    def timing(self) -> tuple[Line | None, float]:
        return self._line, self._job_overhead

    async def _follow(self, job: BatchJob) -> None:
        assert self._dispatch is not None
        try:
            stream = self.actor.run.options(num_returns="streaming").remote(job.request, job.plan)
            async for ref in stream:
                event = await ref
                self._dispatch.report(job, event)
                if isinstance(event, FinalEvent):
                    info = await self.actor.info.remote()
                    self._line, self._job_overhead = info["line"], info["job_overhead"]
                    self._replay(info)
                    return
            raise RayActorError("the stream ended before the job did")
        except RayActorError as e:
            log.warning("%s: lost job %s (%s)", self.name, job.job_id, type(e).__name__)
            self._up = False
            self._dispatch.requeue(job)
            await self._recover()

    def _replay(self, info: dict[str, Any]) -> None:
        """The actor's UNet calls since it was last asked, into the bot's /metrics as this worker's."""
        assert self._dispatch is not None
        for call in info.get("calls", ()):
            self._dispatch.measured(call)

    async def _recover(self) -> None:
        """Until the actor answers (loaded, or restarted by Ray): then it takes jobs again."""
        assert self._dispatch is not None
        if self._recovering:
            return
        self._recovering = True
        try:
            while True:
                try:
                    info = await self.actor.info.remote()
                    break
                except ActorDiedError as e:  # dead for good: Ray will not restart it
                    log.error("%s is gone: %s", self.name, e)
                    self._gone = True
                    self._dispatch.wake()
                    return
                except RayActorError:  # restarting, or its node is unreachable for now
                    pass
                await asyncio.sleep(RETRY_S)
            self.capacity = float(info["capacity"])
            self.models = frozenset(info["models"])
            self._replay(info)
            self._up = True
            log.info(
                "%s ready on %s (pid %s) with %s, %.0f samples per UNet call",
                self.name,
                info["device"],
                info["pid"],
                ", ".join(info["models"]),
                self.capacity,
            )
            self._dispatch.wake()
        finally:
            self._recovering = False


def place_worker(index: int, config: WorkerConfig, *, num_gpus: float, num_cpus: float) -> Any:
    """Create actor ``imaginebot-worker-<index>``; Ray places it where a GPU (or the CPUs) is free, at
    once or when a node with one joins."""
    actor_class: Any = ray.remote(WorkerActor)
    return actor_class.options(
        name=f"{ACTOR_PREFIX}{index}",
        namespace=NAMESPACE,
        num_gpus=num_gpus,
        num_cpus=num_cpus,
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=1000,  # every job's stream is a call that stays open
    ).remote(config)


class RayWorkers:
    """Places workers on the cluster and keeps their number: one per GPU (or a fixed number on a cluster
    without GPUs), more as GPU nodes join."""

    def __init__(
        self,
        config: WorkerConfig,
        add_worker: Callable[[RayWorker], None],
        *,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        poll_s: float = 10.0,
    ) -> None:
        self.config, self.add_worker = config, add_worker
        self.fixed, self.cpus_per_worker, self.poll_s = workers, cpus_per_worker, poll_s
        self.placed: list[RayWorker] = []

    def wanted(self) -> tuple[int, float]:
        """(how many workers, GPUs each)."""
        gpus = int(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]
        if self.fixed is not None:
            return self.fixed, 1.0 if gpus else 0.0
        return (gpus, 1.0) if gpus else (1, 0.0)

    def top_up(self, wanted: tuple[int, float] | None = None) -> None:
        count, gpus = wanted or self.wanted()
        loop = asyncio.get_running_loop()
        while len([w for w in self.placed if not w.gone]) < count:  # a gone worker is replaced
            index = len(self.placed)
            try:
                actor = place_worker(index, self.config, num_gpus=gpus, num_cpus=self.cpus_per_worker)
            except ValueError as e:  # the name is still taken by the last run's actor, on its way out
                log.warning("%s%d: %s; trying again in %.0f s", ACTOR_PREFIX, index, e, self.poll_s)
                return
            worker = RayWorker(actor, f"{ACTOR_PREFIX}{index}", loop)
            self.placed.append(worker)
            log.info("placed %s (%s)", worker.name, "1 GPU" if gpus else f"{self.cpus_per_worker:g} CPU")
            self.add_worker(worker)

    async def watch(self) -> None:
        """Add workers as GPUs join the cluster (run as a task for the bot's lifetime)."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:  # asking the cluster blocks while it does not answer: not on the event loop
                wanted = await asyncio.to_thread(self.wanted)
            except Exception as e:  # a cluster that does not answer now may later
                log.warning("the Ray cluster did not say what it has: %s", e)
                continue
            self.top_up(wanted)


def probe(address: str) -> None:
    """Raise ConnectionError unless something answers at ``address``: Ray's own connect retries for
    minutes with a log line every few seconds; this lets the bot say "unreachable" in one line per try."""
    if address == "auto":
        return  # the cluster this machine is part of: ray.init finds it or says there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port} ({e.strerror or e})") from None


def connect(address: str) -> None:
    """Join the cluster at ``address`` (``auto``, ``host:port`` or ``ray://host:10001``); its token
    authentication applies (``RAY_AUTH_MODE=token``, the token in ``~/.ray/auth_token`` or the file
    ``RAY_AUTH_TOKEN_PATH`` names). On the main thread: Ray sets its signal handlers there. A token the
    cluster wants and this machine lacks is a ConfigError saying where to put it (never the token)."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    except AuthenticationError as error:
        where = os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"
        raise ConfigError(
            f"The Ray cluster at {address} refused the bot: {_first_sentence(error)} Copy the cluster's "
            f"token file from the head machine to {where} here (or point RAY_AUTH_TOKEN_PATH at it), "
            "with RAY_AUTH_MODE=token."
        ) from None


def _first_sentence(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text.split(". ")[0].rstrip(".") + "."


@dataclass(frozen=True)
class LocalHead:
    """A ``ray start --head`` cluster on this machine, with token authentication on."""

    address: str
    token_path: Path

    @property
    def client_env(self) -> dict[str, str]:
        """What a process joining it needs in its environment (the token's path, not the token)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}


@contextlib.contextmanager
def local_head(
    *, cpus: int = 2, port: int | None = None, token_path: Path | None = None
) -> Iterator[LocalHead]:
    """A ``ray start --head`` cluster on 127.0.0.1 for tests and benchmarks, with token authentication as
    the lab's (README): its token is ``token_path`` (made, readable by this user alone, where it is
    missing; default: in the cluster's temp dir), never ``~/.ray/auth_token``, so that nothing depends on
    what an earlier Ray left in the home directory.

    Stopped at the end, errors included, by ending its ``--block`` process: that takes down this cluster
    only, where ``ray stop`` would end every Ray cluster of this user on the machine.
    """
    ray_cli = str(Path(sys.executable).with_name("ray"))
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    token_path = token_path or Path(temp_dir) / "auth_token"
    if not token_path.exists():
        token_path.parent.mkdir(parents=True, exist_ok=True)
        token_path.touch(mode=0o600)
        token_path.write_text(secrets.token_hex(32))
    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
    head = LocalHead(f"127.0.0.1:{port}", token_path)
    log_path = Path(temp_dir) / "ray-start.log"
    command = [
        *(ray_cli, "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}"),
        *("--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"),
    ]
    env = {
        **os.environ,
        **head.client_env,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind to 127.0.0.1, not the machine's other address
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # nothing to drain at the end
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield head
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()  # its reaper process ends the rest
            process.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
