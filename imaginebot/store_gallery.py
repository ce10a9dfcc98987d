"""The gallery's queries, on the store's connection: pages of a server's images (search by the words of the
prompt, filters, keyset paging), members' names, and takedowns (hide, restore, purge).

Kept apart from ``store.py`` (which holds a job's life and the quotas); the schema is migration 0007.

Paging is by keyset (``id < ?`` after the last one shown), never OFFSET: each page costs the same however far
back it is, and the partial indexes ``jobs_gallery`` and ``jobs_gallery_user`` hold exactly the shown images
in order, so a page reads its rows and no more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from imaginebot.engine.grid import grid_shape
from imaginebot.store import Store
from imaginebot.store_models import Job, JobKind, JobStatus

PAGE_SIZE = 40
# Images the safety checker flagged are in no listing until a moderator released them: they wait in the
# moderators' review list (web/pages.py), and a removed one is taken down.
SHOWN_REVIEW = "({j}review IS NULL OR {j}review = 'released')"
MAX_SEARCH_WORDS = 12
_WORD = re.compile(r"\w+")


def thumbnail_of(job_id: int) -> str:
    """Where a job's thumbnail is cached, relative to the data directory."""
    return f"thumbs/{job_id}.webp"


def picture_size(job: Job) -> tuple[int, int]:
    """The shape of a job's picture (its grid, or its one image) in pixels, gutters left out."""
    rows, columns = grid_shape(max(1, len(job.images))) if job.grid else (1, 1)
    return columns * job.spec.width, rows * job.spec.height


def _iso(moment: datetime) -> str:
    # one width for every stored time that is compared as text: isoformat() leaves out zero microseconds
    return moment.isoformat(timespec="microseconds")


def search_query(text: str) -> str | None:
    """What a student types in the search box, as an FTS5 query: every word must be in the prompt (as its
    stem: "circles" finds "a red circle"). Each word is quoted, so FTS5's own syntax (AND, NEAR, *, ", -, :)
    in the box is only text. None when the text has no word."""
    words = _WORD.findall(text)[:MAX_SEARCH_WORDS]
    return " ".join(f'"{word}"' for word in words) or None


@dataclass(frozen=True)
class GalleryFilter:
    """Which of a server's images a page shows."""

    guild_id: int
    words: str = ""  # in the prompt
    user_id: int | None = None  # one student's
    day: date | None = None  # made on this UTC day
    model: str | None = None  # drawn by this model
    kind: JobKind | None = None


@dataclass(frozen=True)
class GalleryPage:
    jobs: tuple[Job, ...]  # newest first
    newer: int | None  # the page before this one is ``after=newer``; None: this is the newest
    older: int | None  # the page after this one is ``before=older``; None: there is none


class GalleryQueries:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- pages -------------------------------------------------------------------------------------------

    async def page(
        self,
        wanted: GalleryFilter,
        *,
        before: int | None = None,
        after: int | None = None,
        size: int = PAGE_SIZE,
        default_model: str = "",
    ) -> GalleryPage:
        """One page of the shown (done, not taken down) images that ``wanted`` asks for, newest first:
        the newest ones, or those just older than job ``before``, or just newer than job ``after``.
        ``default_model``: the bot's first model, which jobs made before models had names (model '') used."""
        where = ["j.guild_id = ?", "j.status = 'done'", "j.hidden_at IS NULL", SHOWN_REVIEW.format(j="j.")]
        params: list[Any] = [wanted.guild_id]
        if wanted.user_id is not None:
            where.append("j.user_id = ?")
            params.append(wanted.user_id)
        if wanted.day is not None:
            where.append("j.created_at >= ? AND j.created_at < ?")
            params += [wanted.day.isoformat(), (wanted.day + timedelta(days=1)).isoformat()]
        if wanted.model is not None:
            where.append("(j.model = ? OR (? AND j.model = ''))")
            params += [wanted.model, bool(default_model) and wanted.model == default_model]
        if wanted.kind is not None:
            where.append("j.kind = ?")
            params.append(wanted.kind.value)
        match = search_query(wanted.words)
        source, key = "jobs AS j", "j.id"
        if match is not None:
            # The index's matches in rowid order, outermost: a page reads its 40 matches and stops, where
            # walking the jobs and asking the index about each would read every job for a rare word.
            source, key = "jobs_fts CROSS JOIN jobs AS j ON j.id = jobs_fts.rowid", "jobs_fts.rowid"
            where.append("jobs_fts MATCH ?")
            params.append(match)
        if after is not None and before is None:
            where.append(f"{key} > ?")
            rows = await self._jobs(source, key, where, [*params, after], "ASC", size + 1)
            if len(rows) > size:  # more newer ones: this page ends just after ``after``
                shown = rows[:size][::-1]
                return GalleryPage(tuple(shown), newer=shown[0].id, older=shown[-1].id)
            # the newest page reached: show it whole, as the first page is
            return await self.page(wanted, size=size, default_model=default_model)
        if before is not None:
            where.append(f"{key} < ?")
            params.append(before)
        rows = await self._jobs(source, key, where, params, "DESC", size + 1)
        shown = rows[:size]
        return GalleryPage(
            tuple(shown),
            newer=shown[0].id if before is not None and shown else None,
            older=shown[-1].id if len(rows) > size else None,
        )

    async def _jobs(
        self, source: str, key: str, where: Sequence[str], params: Sequence[Any], order: str, limit: int
    ) -> list[Job]:
        sql = f"SELECT j.* FROM {source} WHERE {' AND '.join(where)} ORDER BY {key} {order} LIMIT ?"
        return [Store.job_from_row(row) for row in await self.store.fetch(sql, [*params, limit])]

    async def children(self, job_id: int) -> list[Job]:
        """The shown jobs made from ``job_id`` (its upscales, variations, re-rolls, edits), oldest first."""
        rows = await self.store.fetch(
            "SELECT * FROM jobs WHERE parent_id = ? AND status = 'done' AND hidden_at IS NULL AND "
            f"{SHOWN_REVIEW.format(j='')} ORDER BY id",
            (job_id,),
        )
        return [Store.job_from_row(row) for row in rows]

    # -- members' names ----------------------------------------------------------------------------------

    async def remember(self, guild_id: int, user_id: int, name: str, at: datetime) -> None:
        """``user_id`` is called ``name`` on server ``guild_id`` (their display name there, just seen)."""
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO members (guild_id, user_id, name, seen_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (guild_id, user_id)"
                " DO UPDATE SET name = excluded.name, seen_at = excluded.seen_at",
                (guild_id, user_id, name, _iso(at)),
            )

    async def names(self, guild_id: int, user_ids: Iterable[int]) -> dict[int, str]:
        """The remembered names of these users on a server (those never seen since 0007 are missing)."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        rows = await self.store.fetch(
            f"SELECT user_id, name FROM members WHERE guild_id = ? AND user_id IN ({marks})",
            [guild_id, *wanted],
        )
        return {row["user_id"]: row["name"] for row in rows}

    async def members(self, guild_id: int) -> list[tuple[int, str]]:
        """(user id, name) of everyone the bot has seen on a server, by name."""
        rows = await self.store.fetch(
            "SELECT user_id, name FROM members WHERE guild_id = ? ORDER BY name COLLATE NOCASE, user_id",
            (guild_id,),
        )
        return [(row["user_id"], row["name"]) for row in rows]

    # -- takedowns ---------------------------------------------------------------------------------------

    async def hide(self, job_id: int, *, by: int, at: datetime) -> Job | None:
        """Take a done job's images down; None when it is not done or already down."""
        async with self.store.transaction() as db:
            cursor = await db.execute(
                "UPDATE jobs SET hidden_at = ?, hidden_by = ?"
                " WHERE id = ? AND status = ? AND hidden_at IS NULL",
                (_iso(at), by, job_id, JobStatus.DONE.value),
            )
            if not cursor.rowcount:
                return None
            row = await Store._one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else Store.job_from_row(row)

    async def unhide(self, job_id: int) -> Job | None:
        """Show a taken-down job again, unless its files are gone; None when it was not down. A job whose
        flagged images a review removed waits for a review again (in the same statement: its images never
        show in clear between the two)."""
        async with self.store.transaction() as db:
            cursor = await db.execute(
                "UPDATE jobs SET hidden_at = NULL, hidden_by = NULL,"
                " review = CASE review WHEN 'removed' THEN 'waiting' ELSE review END"
                " WHERE id = ? AND hidden_at IS NOT NULL AND purged_at IS NULL",
                (job_id,),
            )
            if not cursor.rowcount:
                return None
            row = await Store._one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else Store.job_from_row(row)

    async def taken_down(self, guild_id: int, *, limit: int = 100) -> list[Job]:
        """A server's taken-down jobs, the latest takedown first (those purged too)."""
        rows = await self.store.fetch(
            "SELECT * FROM jobs WHERE guild_id = ? AND hidden_at IS NOT NULL ORDER BY hidden_at DESC LIMIT ?",
            (guild_id, limit),
        )
        return [Store.job_from_row(row) for row in rows]

    async def due_for_purge(self, taken_down_by: datetime) -> list[Job]:
        """Taken-down jobs whose files are still on disk, taken down at or before the given time."""
        rows = await self.store.fetch(
            "SELECT * FROM jobs WHERE hidden_at IS NOT NULL AND purged_at IS NULL AND hidden_at <= ?"
            " ORDER BY id",
            (_iso(taken_down_by),),
        )
        return [Store.job_from_row(row) for row in rows]

    async def mark_purged(self, job_id: int, at: datetime) -> None:
        """The job's files are deleted: it has no images any more (nothing may try to read them)."""
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE jobs SET purged_at = ?, images = '[]', grid = NULL"
                " WHERE id = ? AND hidden_at IS NOT NULL",
                (_iso(at), job_id),
            )
