"""Rows the store hands out and takes in: frozen dataclasses and the job enums.

Kept apart from ``store.py`` so the executor and the cogs can import the types without the SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from imaginebot.engine.api import GenerateSpec
from imaginebot.engine.canvas import Direction


class JobKind(StrEnum):
    IMAGINE = "imagine"
    VARIATION = "variation"  # V1–V4: img2img of one tile of the parent
    UPSCALE = "upscale"  # U1–U4: one tile of the parent, enlarged and refined
    REROLL = "reroll"  # 🔄: the parent's prompt with new seeds
    EDIT = "edit"  # Zoom Out, Pan, Make Square, Vary (Region) of an upscale: what, in ``Job.edit``


class EditKind(StrEnum):
    ZOOM = "zoom"  # Zoom Out 2x, 1.5x, Custom Zoom
    PAN = "pan"  # ⬅️ ➡️ ⬆️ ⬇️
    SQUARE = "square"  # Make Square
    REGION = "region"  # Vary (Region)


@dataclass(frozen=True)
class Edit:
    """How an edit job redraws its parent (an upscale): the canvas and mask come from this and the parent's
    picture (``imaginebot.engine.canvas``), so nothing but this is stored."""

    kind: EditKind
    factor: float = 1.0  # ZOOM: 1.0-2.0
    direction: Direction | None = None  # PAN
    cells: tuple[int, ...] = ()  # REGION: cells 1-9 of a 3×3 grid

    def to_json(self) -> str:
        data: dict[str, Any] = {"kind": self.kind.value}
        if self.kind is EditKind.ZOOM:
            data["factor"] = self.factor
        if self.direction is not None:
            data["direction"] = self.direction.value
        if self.cells:
            data["cells"] = list(self.cells)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Edit:
        data = json.loads(text)
        direction = data.get("direction")
        return cls(
            EditKind(data["kind"]),
            factor=float(data.get("factor", 1.0)),
            direction=None if direction is None else Direction(direction),
            cells=tuple(data.get("cells", ())),
        )


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


class Delivery(StrEnum):
    """Whether the user has seen how a job ended; None while it runs (previews are not deliveries)."""

    PENDING = "pending"  # ended; the final state is not in its message yet
    DELIVERED = "delivered"
    GONE = "gone"  # the message was deleted: nobody is waiting for it
    EXPIRED = "expired"  # not delivered within the bound (IMAGINEBOT_DELIVERY_GIVE_UP_HOURS); given up


class Review(StrEnum):
    """A moderator's review of the images the safety checker flagged; None where it flagged none."""

    WAITING = "waiting"  # posted blurred, as a spoiler; its flagged tiles can't be upscaled or varied
    RELEASED = "released"  # a moderator found them fine: the clear grid, usable as any other
    REMOVED = "removed"  # a moderator took the job down: hidden, its message a notice


@dataclass(frozen=True)
class NewJob:
    """A job about to be reserved; quota is taken for ``spec.num_images``. ``spec.init_image`` is never
    stored: a variation or an upscale starts from its parent's tile ``tile_index``."""

    user_id: int
    guild_id: int  # 0 for direct messages
    channel_id: int
    message_id: int | None  # the message that shows the job; it exists before the job does
    kind: JobKind
    prompt_text: str  # the canonical /imagine text, flags included
    spec: GenerateSpec
    parent_id: int | None = None
    tile_index: int | None = None  # 0-based tile of the parent, for V and U
    edit: Edit | None = None  # kind EDIT
    source: str | None = None  # an image prompt's picture, relative to the data directory
    relax: bool = False  # asked for relax (--relax, /settings); out of quota, the store may make it relax


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
    spec: GenerateSpec  # what the engine runs, less the source picture
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
    delivery: Delivery | None  # None until the job ends
    delivered_at: datetime | None
    edit: Edit | None = None  # kind EDIT: what it does to its parent
    source: str | None = None  # an image prompt's picture (/imagine with an image), relative to the data dir
    flagged: tuple[int, ...] = ()  # 0-based tiles the safety checker flagged
    review: Review | None = None  # where a moderator's review of ``flagged`` stands
    reviewed_by: int | None = None
    reviewed_at: datetime | None = None
    hidden_at: datetime | None = None  # taken down by a moderator (the gallery and Discord no longer show it)
    hidden_by: int | None = None  # the moderator who took it down
    purged_at: datetime | None = None  # its files were deleted from disk, a day after the takedown: no undo
    relax: bool = False  # waits until no fast job does, costs no quota

    @property
    def hidden(self) -> bool:
        return self.hidden_at is not None

    def held_back(self, tile: int) -> bool:
        """Whether 0-based ``tile`` may not be shown in clear nor worked on (U, V, the tools): the job was
        taken down, or the tile is flagged and no moderator released it."""
        if self.hidden:
            return True
        return tile in self.flagged and self.review is not Review.RELEASED


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
    remix: bool = False  # V, 🔄, Vary, Zoom and Pan first open the prompt for editing
    model: str | None = None  # a name of IMAGINEBOT_MODELS: the model when the prompt has no --model
    relax: bool = False  # Relax mode: jobs wait until no fast job does, and cost no quota


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
    action: str  # e.g. "quota.set", "usage.reset", "block", "unblock", "word.add", "image.take-down"
    target_id: int | None
    detail: str
    at: datetime


@dataclass(frozen=True)
class UsageRow:
    user_id: int
    images: int


class BatchState(StrEnum):
    ASKED = "asked"  # the Yes/No question is out
    QUEUED = "queued"  # Yes: its jobs were reserved
    DECLINED = "declined"  # No


@dataclass(frozen=True)
class Batch:
    """Several jobs from one /imagine (permutations, --repeat), waiting for the student's Yes."""

    id: int
    user_id: int
    guild_id: int
    channel_id: int
    texts: tuple[str, ...]  # one canonical prompt per job, seeds drawn
    source: str | None  # an image prompt's picture the jobs share
    state: BatchState
    created_at: datetime
