"""SQLite persistence (aiosqlite, WAL): jobs, daily quotas, per-user settings, moderation; images on disk.

One ``Store`` owns one connection. Every write is one ``BEGIN IMMEDIATE`` transaction, so several
``Store`` instances (or processes) on the same file stay consistent: quota is checked and taken in the
same transaction that inserts the job, and two simultaneous requests can't overspend.

Layout of the data directory::

    <data_dir>/imaginebot.db
    <data_dir>/images/<job_id>/tile-<i>.png, grid.png
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite
from PIL import Image

from imaginebot.engine.api import GenerateSpec
from imaginebot.errors import ConfigError, Forbidden, QuotaExceeded
from imaginebot.migrations import migrate, user_version
from imaginebot.params import normalise_words
from imaginebot.store_habits import RELAX_OFF, HabitsStore
from imaginebot.store_models import (
    BlockedUser,
    Delivery,
    Edit,
    Job,
    JobKind,
    JobStatus,
    ModAction,
    NewJob,
    QuotaStatus,
    Review,
    UsageRow,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
DB_NAME = "imaginebot.db"
# jobs' columns -> GenerateSpec's fields (a job stores what the engine runs, less the source picture)
_SPEC_COLUMNS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "steps": "num_inference_steps",
    "cfg": "guidance_scale",
    "sampler": "sampler",
    "width": "width",
    "height": "height",
    "strength": "strength",
    "tile": "tile",
    "model": "model",
    "chaos": "chaos",
    "stop": "stop",
}
_REFUNDED = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)


def utc_now() -> datetime:
    return datetime.now(UTC)


def next_reset(now: datetime) -> datetime:
    """Quotas reset at the next UTC midnight."""
    return datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(0), UTC)


# -- rows ----------------------------------------------------------------------------------------------


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _job(row: aiosqlite.Row) -> Job:
    d = dict(row)
    del d["charged_day"]  # internal: the day whose usage a refund goes back to
    spec = GenerateSpec(
        **{field: d.pop(column) for column, field in _SPEC_COLUMNS.items()},
        seeds=tuple(json.loads(d.pop("seeds"))),
        loras=tuple((str(name), float(weight)) for name, weight in json.loads(d.pop("loras"))),
        parts=tuple((str(text), float(weight)) for text, weight in json.loads(d.pop("parts"))),
    )
    d.update(
        kind=JobKind(d["kind"]),
        status=JobStatus(d["status"]),
        images=tuple(json.loads(d["images"])),
        created_at=datetime.fromisoformat(d["created_at"]),
        started_at=_dt(d["started_at"]),
        finished_at=_dt(d["finished_at"]),
        delivery=None if d["delivery"] is None else Delivery(d["delivery"]),
        delivered_at=_dt(d["delivered_at"]),
        edit=None if d["edit"] is None else Edit.from_json(d["edit"]),
        flagged=tuple(json.loads(d["flagged"])),
        review=None if d["review"] is None else Review(d["review"]),
        reviewed_at=_dt(d["reviewed_at"]),
        hidden_at=_dt(d["hidden_at"]),
        purged_at=_dt(d["purged_at"]),
        relax=bool(d["relax"]),
    )
    return Job(**d, spec=replace(spec, tile=bool(spec.tile)))


def _relaxed(job: Job) -> str:
    return " (relax)" if job.relax else ""


def _write_png_atomically(path: Path, image: Image.Image) -> None:
    # A crash mid-write must never leave a half PNG under the final name: write aside, fsync, rename.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            image.save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _quota_message(needed: int, status: QuotaStatus, now: datetime) -> str:
    if status.limit == 0:
        return "Your daily image quota on this server is 0; ask a moderator if that's a mistake."
    wait = status.resets_at - now
    hours, minutes = divmod(int(wait.total_seconds()) // 60, 60)
    images = "image" if needed == 1 else "images"
    return (
        f"Not enough quota: this needs {needed} {images} and you have {status.left} of your "
        f"{status.limit} left today. Your quota resets at {status.resets_at:%H:%M} UTC "
        f"(in {hours} h {minutes:02d} min)."
    )


# -- the store -----------------------------------------------------------------------------------------


async def _enable_wal(db: aiosqlite.Connection, timeout_s: float = 10.0) -> None:
    """Switch the database file to WAL mode (persistent: a no-op once any connection has done it).

    The switch needs the file to itself, and SQLite answers "database is locked" at once, without waiting
    out busy_timeout, while another connection is opening it: so when several processes or Stores open a
    new database together, the ones that lose the race retry here for up to ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.01
    while True:
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)


SQLITE_NEEDED = (3, 35, 0)  # ALTER TABLE ... DROP COLUMN (migration 0003); SQLite 3.35 is from March 2021


def require_sqlite(version: tuple[int, int, int]) -> None:
    """Raise ConfigError, in one sentence the operator can act on, when Python's SQLite is too old."""
    if version < SQLITE_NEEDED:
        have, need = ".".join(map(str, version)), ".".join(map(str, SQLITE_NEEDED))
        raise ConfigError(
            f"imaginebot needs SQLite {need} or newer; this Python's sqlite3 module has {have}. Use a Python "
            "built against a newer SQLite (a current Linux distribution's, python.org's, or pyenv's on one)."
        )


class Store(HabitsStore):
    """Open with ``await Store.open(data_dir)``; close with ``await store.close()`` (or ``async with``)."""

    def __init__(
        self, db: aiosqlite.Connection, data_dir: Path, *, default_daily_images: int | None, clock: Clock
    ) -> None:
        self._db = db
        self.data_dir = data_dir
        self.default_daily_images = (
            default_daily_images  # when neither user nor guild has a quota; None: unlimited
        )
        self._clock = clock
        # One connection can hold one transaction: coroutines sharing this Store take turns.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        data_dir: Path | str,
        *,
        default_daily_images: int | None = 25,
        clock: Clock = utc_now,
    ) -> Store:
        require_sqlite(sqlite3.sqlite_version_info)
        data_dir = Path(data_dir)
        (data_dir / "images").mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(data_dir / DB_NAME, isolation_level=None)  # we BEGIN ourselves
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA busy_timeout = 10000")
            await _enable_wal(db)
            await db.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable at checkpoints, much faster
            await db.execute("PRAGMA foreign_keys = ON")
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db, data_dir, default_daily_images=default_daily_images, clock=clock)

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def schema_version(self) -> int:
        async with self._lock:
            return await user_version(self._db)

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock, self._db.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    @staticmethod
    async def _one(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with db.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    # For the store's companions, which keep their SQL next to their code on this connection
    # (store_gallery.py): a read, a write transaction, and a job from its row.
    fetch = _all
    transaction = _tx
    job_from_row = staticmethod(_job)

    # -- jobs and quota --------------------------------------------------------------------------------

    async def reserve_job(self, new: NewJob) -> Job:
        """Check the user may make ``new.spec.num_images`` images, take them from today's quota and
        insert the job as queued, all in one transaction (``reserve_jobs`` of one job)."""
        return (await self.reserve_jobs([new]))[0]

    async def reserve_jobs(self, news: Sequence[NewJob], *, batch: int | None = None) -> list[Job]:
        """Reserve several jobs of one user at once, all or none, in one transaction: their images are
        checked against today's quota together. A job asking for relax costs nothing (the server must allow
        relax); when the fast ones don't fit the quota and the server allows relax (and the user's quota is
        not 0), they all become relax. ``batch``: the question they answer, marked queued in the same
        transaction (ImagineError when it was answered already).

        Raises Forbidden (blocked on this server, or relax off) or QuotaExceeded (saying what is left and
        when it resets); nothing is taken then.
        """
        if not news or len({(new.guild_id, new.user_id) for new in news}) != 1:
            raise ValueError("reserve_jobs takes one or more jobs of one user on one server")
        guild_id, user_id, now = news[0].guild_id, news[0].user_id, self._now()
        day = now.date().isoformat()
        needed = sum(new.spec.num_images for new in news if not new.relax)
        async with self._tx() as db:
            if batch is not None:
                await self._claim_batch(db, batch)
            out_of_quota = await self._admit(db, guild_id, user_id, needed, any(new.relax for new in news))
            ids = [await self._insert_job(db, new, relax=new.relax or out_of_quota, day=day) for new in news]
            if not out_of_quota and needed:
                await db.execute(
                    "INSERT INTO usage (guild_id, user_id, day, images) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (guild_id, user_id, day) DO UPDATE SET images = images + excluded.images",
                    (guild_id, user_id, day, needed),
                )
            rows = [await self._one(db, "SELECT * FROM jobs WHERE id = ?", (i,)) for i in ids]
        jobs = [_job(row) for row in rows if row is not None]
        for job in jobs:
            log.info("job %s reserved: user %s, %d images%s", job.id, user_id, job.charged, _relaxed(job))
        return jobs

    async def check_reservation(self, guild_id: int, user_id: int, images: int, *, relax: bool) -> bool:
        """What ``reserve_jobs`` would say now, taking nothing: it raises as that would, else says whether
        ``images`` fast images would run in relax for want of quota. ``relax``: some jobs ask for relax."""
        async with self._lock:
            return await self._admit(self._db, guild_id, user_id, images, relax)

    async def _admit(
        self, db: aiosqlite.Connection, guild_id: int, user_id: int, needed: int, relax: bool
    ) -> bool:
        """The checks of a reservation: not blocked, relax allowed where asked, ``needed`` fast images within
        today's quota. True: they don't fit, but may run in relax."""
        if await self._one(
            db, "SELECT 1 FROM blocked_users WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        ):
            raise Forbidden("You are blocked from making images on this server; ask a moderator.")
        relax_on = await self._relax_on(db, guild_id)
        if relax and not relax_on:
            raise Forbidden(RELAX_OFF)
        now = self._now()
        status = await self._quota(db, guild_id, user_id, now)
        out_of_quota = status.limit is not None and status.used + needed > status.limit
        if out_of_quota and (not relax_on or status.limit == 0):
            raise QuotaExceeded(_quota_message(needed, status, now))
        return out_of_quota

    async def _insert_job(self, db: aiosqlite.Connection, new: NewJob, *, relax: bool, day: str) -> int:
        """Insert a job as queued; a relax job is charged nothing."""
        needed, now = (0 if relax else new.spec.num_images), self._now()
        s = new.spec
        cursor = await db.execute(
            "INSERT INTO jobs (user_id, guild_id, channel_id, message_id, kind, parent_id, tile_index,"
            " prompt_text, prompt, negative_prompt, steps, cfg, sampler, width, height, seeds, strength,"
            " tile, model, loras, parts, chaos, stop, edit, source, relax, charged, charged_day, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (new.user_id, new.guild_id, new.channel_id, new.message_id, new.kind.value, new.parent_id,
             new.tile_index, new.prompt_text, s.prompt, s.negative_prompt, s.num_inference_steps,
             s.guidance_scale, s.sampler, s.width, s.height, json.dumps(list(s.seeds)), s.strength,
             s.tile, s.model, json.dumps([list(lora) for lora in s.loras]),
             json.dumps([list(part) for part in s.parts]), s.chaos, s.stop,
             None if new.edit is None else new.edit.to_json(), new.source,
             relax, needed, day, now.isoformat()),
        )  # fmt: skip
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def get_job(self, job_id: int) -> Job | None:
        rows = await self._all("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def recent_jobs(self, guild_id: int, user_id: int, *, limit: int = 10) -> list[Job]:
        rows = await self._all(
            "SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, user_id, limit),
        )
        return [_job(row) for row in rows]

    async def unfinished_jobs(self) -> list[Job]:
        """Jobs left queued or running by the last run, oldest first: re-queue or mark them interrupted."""
        rows = await self._all("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY id")
        return [_job(row) for row in rows]

    async def undelivered_jobs(self) -> list[Job]:
        """Jobs that ended but whose message does not show it yet, oldest first."""
        rows = await self._all("SELECT * FROM jobs WHERE delivery = 'pending' ORDER BY id")
        return [_job(row) for row in rows]

    async def mark_running(self, job_id: int) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
                (self._now().isoformat(), job_id),
            )

    async def requeue_job(self, job_id: int) -> None:
        """Put a job left running by a stop back to queued (its quota stays taken)."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL WHERE id = ? AND status = 'running'",
                (job_id,),
            )

    async def finish_job(
        self,
        job_id: int,
        status: JobStatus,
        *,
        error: str = "",
        note: str = "",
        elapsed_s: float | None = None,
        images: Sequence[str] = (),
        grid: str | None = None,
        delivery: Delivery = Delivery.PENDING,
        flagged: Sequence[int] = (),
    ) -> Job:
        """Record how a job ended; its delivery is then pending (unless told otherwise). Failed, cancelled and
        interrupted jobs give their images back to the quota of the day they were taken from. A job already
        finished is left as it is (no double refund)."""
        if not status.finished:
            raise ValueError(f"{status} is not a final status")
        async with self._tx() as db:
            row = await self._one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
            if row is None:
                raise KeyError(job_id)
            if JobStatus(row["status"]).finished:
                return _job(row)
            if status in _REFUNDED and row["charged"]:
                await db.execute(
                    "UPDATE usage SET images = MAX(0, images - ?)"
                    " WHERE guild_id = ? AND user_id = ? AND day = ?",
                    (row["charged"], row["guild_id"], row["user_id"], row["charged_day"]),
                )
            refunded = status in _REFUNDED
            review = Review.WAITING.value if flagged else None  # done and held back in one step
            await db.execute(
                "UPDATE jobs SET status = ?, error = ?, note = ?, elapsed_s = ?, images = ?, grid = ?,"
                " finished_at = ?, charged = CASE WHEN ? THEN 0 ELSE charged END, delivery = ?, flagged = ?,"
                " review = ? WHERE id = ?",
                (status.value, error, note, elapsed_s, json.dumps(list(images)), grid,
                 self._now().isoformat(), refunded, delivery.value, json.dumps(sorted(flagged)), review,
                 job_id),
            )  # fmt: skip
            row = await self._one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
        assert row is not None
        log.info("job %s %s", job_id, status)
        return _job(row)

    async def complete_job(
        self,
        job_id: int,
        images: Sequence[Image.Image],
        *,
        grid: Image.Image | None = None,
        elapsed_s: float | None = None,
        note: str = "",
        flagged: Sequence[int] = (),
    ) -> Job:
        """Write the job's images (``tile-<i>.png``, ``grid.png``) and mark it done; with ``flagged`` tiles
        (the safety checker's), it waits for a moderator's review."""
        tiles, grid_path = await asyncio.to_thread(self._write_images, job_id, images, grid)
        return await self.finish_job(
            job_id,
            JobStatus.DONE,
            images=tiles,
            grid=grid_path,
            elapsed_s=elapsed_s,
            note=note,
            flagged=flagged,
        )

    async def set_review(self, job_id: int, review: Review, *, by: int, detail: str = "") -> Job | None:
        """A moderator's decision on a job's flagged images (or a takedown: REMOVED), in the moderation log.
        None when the job is unknown."""
        async with self._tx() as db:
            row = await self._one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
            if row is None:
                return None
            await db.execute(
                "UPDATE jobs SET review = ?, reviewed_by = ?, reviewed_at = ? WHERE id = ?",
                (review.value, by, self._now().isoformat(), job_id),
            )
            action = {Review.RELEASED: "image.release", Review.REMOVED: "image.remove"}.get(
                review, "image.review"
            )
            await self._log(db, row["guild_id"], by, action, row["user_id"], detail or f"job {job_id}")
            row = await self._one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
        assert row is not None
        return _job(row)

    async def waiting_for_review(self, guild_id: int, *, limit: int = 100) -> list[Job]:
        """A server's jobs whose flagged images wait for a moderator, oldest first."""
        rows = await self._all(
            "SELECT * FROM jobs WHERE review = 'waiting' AND guild_id = ? ORDER BY id LIMIT ?",
            (guild_id, limit),
        )
        return [_job(row) for row in rows]

    async def set_delivery(
        self, job_id: int, delivery: Delivery, *, message: tuple[int, int] | None = None
    ) -> None:
        """Record how the end of a job reached its user; ``message``: (channel id, message id) of a new
        message that shows it now, in place of the one that could not be edited any more."""
        channel_id, message_id = message or (None, None)
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET delivery = ?, delivered_at = ?, channel_id = COALESCE(?, channel_id),"
                " message_id = COALESCE(?, message_id) WHERE id = ?",
                (delivery.value, self._now().isoformat() if delivery is Delivery.DELIVERED else None,
                 channel_id, message_id, job_id),
            )  # fmt: skip

    def job_dir(self, job_id: int) -> Path:
        return self.data_dir / "images" / str(job_id)

    def _write_images(
        self, job_id: int, images: Sequence[Image.Image], grid: Image.Image | None
    ) -> tuple[list[str], str | None]:
        directory = self.job_dir(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        tiles = []
        for i, image in enumerate(images):
            _write_png_atomically(directory / f"tile-{i}.png", image)
            tiles.append(f"images/{job_id}/tile-{i}.png")
        if grid is None:
            return tiles, None
        _write_png_atomically(directory / "grid.png", grid)
        return tiles, f"images/{job_id}/grid.png"

    async def save_source(self, picture: Image.Image) -> str:
        """Keep an image prompt's picture; its path relative to the data directory (``Job.source``)."""
        relative = f"sources/{uuid.uuid4().hex}.png"

        def write() -> None:
            (self.data_dir / "sources").mkdir(parents=True, exist_ok=True)
            _write_png_atomically(self.data_dir / relative, picture)

        await asyncio.to_thread(write)
        return relative

    async def remove_source(self, relative_path: str) -> None:
        """Forget an image prompt that no job was made from."""
        await asyncio.to_thread((self.data_dir / relative_path).unlink, missing_ok=True)

    async def load_image(self, relative_path: str) -> Image.Image:
        """An image written by ``complete_job`` (``job.images[i]`` or ``job.grid``), fully loaded."""

        def load() -> Image.Image:
            with Image.open(self.data_dir / relative_path) as image:
                image.load()
                return image.copy()

        return await asyncio.to_thread(load)

    # -- quotas and usage ------------------------------------------------------------------------------

    async def _quota(
        self, db: aiosqlite.Connection, guild_id: int, user_id: int, now: datetime
    ) -> QuotaStatus:
        # A row with NULL means "unlimited"; no row means "fall back to the next level".
        row = await self._one(
            db, "SELECT daily_images FROM user_quotas WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        if row is None:
            row = await self._one(db, "SELECT daily_images FROM guild_quotas WHERE guild_id = ?", (guild_id,))
        limit = self.default_daily_images if row is None else row["daily_images"]
        used = await self._one(
            db,
            "SELECT images FROM usage WHERE guild_id = ? AND user_id = ? AND day = ?",
            (guild_id, user_id, now.date().isoformat()),
        )
        return QuotaStatus(limit=limit, used=used["images"] if used else 0, resets_at=next_reset(now))

    async def quota_status(self, guild_id: int, user_id: int) -> QuotaStatus:
        async with self._lock:
            return await self._quota(self._db, guild_id, user_id, self._now())

    async def guild_quota(self, guild_id: int) -> int | None:
        """The server's default daily images (None: unlimited), or the bot's default when none is set."""
        rows = await self._all("SELECT daily_images FROM guild_quotas WHERE guild_id = ?", (guild_id,))
        return rows[0]["daily_images"] if rows else self.default_daily_images  # type: ignore[no-any-return]

    async def reset_usage(self, guild_id: int, user_id: int, *, by: int) -> None:
        """Give a user today's full quota back."""
        day = self._now().date().isoformat()
        async with self._tx() as db:
            await db.execute(
                "DELETE FROM usage WHERE guild_id = ? AND user_id = ? AND day = ?", (guild_id, user_id, day)
            )
            await self._log(db, guild_id, by, "usage.reset", user_id, day)

    async def usage_report(self, guild_id: int, day: date | None = None) -> list[UsageRow]:
        """Images per user on one UTC day (today by default), most first."""
        rows = await self._all(
            "SELECT user_id, images FROM usage WHERE guild_id = ? AND day = ? AND images > 0"
            " ORDER BY images DESC, user_id",
            (guild_id, (day or self._now().date()).isoformat()),
        )
        return [UsageRow(user_id=row["user_id"], images=row["images"]) for row in rows]

    # -- moderation ------------------------------------------------------------------------------------

    async def block_user(self, guild_id: int, user_id: int, *, by: int, reason: str = "") -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO blocked_users (guild_id, user_id, blocked_by, reason, blocked_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (guild_id, user_id) DO UPDATE SET blocked_by = excluded.blocked_by,"
                " reason = excluded.reason, blocked_at = excluded.blocked_at",
                (guild_id, user_id, by, reason, self._now().isoformat()),
            )
            await self._log(db, guild_id, by, "block", user_id, reason)

    async def unblock_user(self, guild_id: int, user_id: int, *, by: int) -> bool:
        """False when the user was not blocked."""
        async with self._tx() as db:
            cursor = await db.execute(
                "DELETE FROM blocked_users WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
            if cursor.rowcount:
                await self._log(db, guild_id, by, "unblock", user_id, "")
        return cursor.rowcount > 0

    async def is_blocked(self, guild_id: int, user_id: int) -> bool:
        return bool(
            await self._all(
                "SELECT 1 FROM blocked_users WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
        )

    async def blocked_users(self, guild_id: int) -> list[BlockedUser]:
        rows = await self._all(
            "SELECT * FROM blocked_users WHERE guild_id = ? ORDER BY blocked_at, user_id", (guild_id,)
        )
        return [
            BlockedUser(**{**dict(row), "blocked_at": datetime.fromisoformat(row["blocked_at"])})
            for row in rows
        ]

    async def add_banned_word(self, guild_id: int, word: str, *, by: int) -> bool:
        """False when the word was already banned. Words match whole, compared by ``normalise_words``."""
        word = normalise_words(word)
        if not word:
            raise ValueError("a banned word can't be empty")
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO banned_words (guild_id, word, added_by, added_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (guild_id, word) DO NOTHING",
                (guild_id, word, by, self._now().isoformat()),
            )
            if cursor.rowcount:
                await self._log(db, guild_id, by, "word.add", None, word)
        return cursor.rowcount > 0

    async def remove_banned_word(self, guild_id: int, word: str, *, by: int) -> bool:
        word = normalise_words(word)
        async with self._tx() as db:
            # Compared in Python: rows stored before words were case-folded may differ in case ("straße").
            async with db.execute("SELECT word FROM banned_words WHERE guild_id = ?", (guild_id,)) as cursor:
                stored = [
                    row["word"] for row in await cursor.fetchall() if normalise_words(row["word"]) == word
                ]
            for row_word in stored:
                await db.execute(
                    "DELETE FROM banned_words WHERE guild_id = ? AND word = ?", (guild_id, row_word)
                )
            if stored:
                await self._log(db, guild_id, by, "word.remove", None, word)
        return bool(stored)

    async def banned_words(self, guild_id: int) -> list[str]:
        rows = await self._all("SELECT word FROM banned_words WHERE guild_id = ? ORDER BY word", (guild_id,))
        return [row["word"] for row in rows]

    async def find_banned_words(self, guild_id: int, text: str) -> list[str]:
        """The server's banned words that occur in ``text`` as whole words (any case, any spacing)."""
        text = normalise_words(text)
        return [
            word
            for word in await self.banned_words(guild_id)
            if re.search(rf"(?<!\w){re.escape(normalise_words(word))}(?!\w)", text)
        ]

    async def log_action(
        self, guild_id: int, actor_id: int, action: str, target_id: int | None = None, detail: str = ""
    ) -> None:
        """Record a moderator action the store doesn't log by itself (e.g. cancelling someone's job)."""
        async with self._tx() as db:
            await self._log(db, guild_id, actor_id, action, target_id, detail)

    async def _log(
        self,
        db: aiosqlite.Connection,
        guild_id: int,
        actor_id: int,
        action: str,
        target_id: int | None,
        detail: str,
    ) -> None:
        await db.execute(
            "INSERT INTO moderation_log (guild_id, actor_id, action, target_id, detail, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (guild_id, actor_id, action, target_id, detail, self._now().isoformat()),
        )

    async def moderation_log(
        self, guild_id: int, *, limit: int = 20, target_id: int | None = None
    ) -> list[ModAction]:
        """Newest first; only actions on ``target_id`` when given."""
        rows = await self._all(
            "SELECT * FROM moderation_log WHERE guild_id = ? AND (? IS NULL OR target_id = ?)"
            " ORDER BY id DESC LIMIT ?",
            (guild_id, target_id, target_id, limit),
        )
        return [ModAction(**{**dict(row), "at": datetime.fromisoformat(row["at"])}) for row in rows]
