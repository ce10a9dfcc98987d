"""Rows the store hands out and takes in: frozen dataclasses and the job enums.

Kept apart from ``store.py`` so the executor and the cogs can import the types without the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class JobKind(StrEnum):
    IMAGINE = "imagine"
    VARIATION = "variation"  # V1–V4: img2img of one tile of the parent
    UPSCALE = "upscale"  # U1–U4: one tile of the parent, enlarged and refined
    REROLL = "reroll"  # 🔄: the parent's prompt with new seeds


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the bot stopped while the job was queued or running

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class JobParams:
    """What the engine needs to re-make the job's images (``GenerateSpec`` without the pixels)."""

    prompt: str
    negative_prompt: str
    steps: int
    cfg: float
    sampler: str
    width: int
    height: int
    seeds: tuple[int, ...]
    strength: float = 1.0  # img2img: how far a variation may move from its source (1.0: the engine's choice)

    @property
    def num_images(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class NewJob:
    """A job about to be reserved; ``images`` quota is taken for ``params.num_images``."""

    user_id: int
    guild_id: int  # 0 for direct messages
    channel_id: int
    kind: JobKind
    prompt_text: str  # the canonical /imagine text, flags included
    params: JobParams
    parent_id: int | None = None
    tile_index: int | None = None  # 0-based tile of the parent, for V and U


@dataclass(frozen=True)
class Job:
    id: int
    user_id: int
    guild_id: int
    channel_id: int
    message_id: int | None
    kind: JobKind
    parent_id: int | None
    tile_index: int | None
    prompt_text: str
    params: JobParams
    status: JobStatus
    error: str
    note: str
    images: tuple[str, ...]  # paths relative to the data directory, one per tile
    grid: str | None
    charged: int  # images taken from the quota and not refunded
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_s: float | None


@dataclass(frozen=True)
class QuotaStatus:
    limit: int | None  # None: unlimited
    used: int
    resets_at: datetime  # the next UTC midnight

    @property
    def left(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)


@dataclass(frozen=True)
class UserSettings:
    """Per-user defaults for /imagine; None means "use the bot's default"."""

    steps: int | None = None
    cfg: float | None = None
    aspect: str | None = None  # "W:H", as in --ar
    sampler: str | None = None
    images: int | None = None


@dataclass(frozen=True)
class BlockedUser:
    guild_id: int
    user_id: int
    blocked_by: int
    reason: str
    blocked_at: datetime


@dataclass(frozen=True)
class ModAction:
    id: int
    guild_id: int
    actor_id: int
    action: str  # e.g. "quota.set", "usage.reset", "block", "unblock", "word.add", "word.remove"
    target_id: int | None
    detail: str
    at: datetime


@dataclass(frozen=True)
class UsageRow:
    user_id: int
    images: int
