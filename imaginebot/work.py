"""What flows between the executor and its workers, local threads or remote: a job, and its events.

Plain data (picklable, no locks), so the same objects cross a thread or a Ray call.
"""

from __future__ import annotations

from dataclasses import dataclass

from imaginebot.engine.api import GenerateResult, GenerateSpec, Preview, Task
from imaginebot.store_models import JobKind

UNEXPECTED_ERROR = "Something went wrong while making the images; the error is in the bot's log."


@dataclass(frozen=True)
class JobRequest:
    """What the executor runs. Variations and upscales start from ``spec.init_image``."""

    job_id: int
    user_id: int
    kind: JobKind
    spec: GenerateSpec
    relax: bool = False  # relax: starts only when no fast job waits (a priority class of the fair queue)

    @property
    def task(self) -> Task:
        if self.kind is JobKind.VARIATION:
            return "vary"
        return "upscale" if self.kind is JobKind.UPSCALE else "generate"


# -- events, in the order a job can produce them -------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """Waiting; ``position`` 1 means next to start, in about ``eta_s`` seconds (None: not known yet, no
    step has been timed). Sent again whenever the position or the estimate changes much."""

    job_id: int
    position: int
    eta_s: float | None = None


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


# -- what workers say about themselves, for the operator (/healthz, /metrics) ---------------------------


@dataclass(frozen=True)
class UnetCall:
    """One batched UNet call of a worker: rows of the batch (samples) and how long it took."""

    samples: int
    seconds: float


@dataclass(frozen=True)
class WorkerStatus:
    index: int  # the executor's number for it ("worker 1" in the log)
    name: str  # its thread's or its Ray actor's
    alive: bool  # taking jobs: its thread runs and, remote, its actor answers
    models: tuple[str, ...] | None  # the models it holds; None: it takes any job (one engine)
    capacity: float | None  # samples of native size per UNet call; None: not known yet
