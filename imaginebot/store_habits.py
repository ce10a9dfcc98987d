"""The store's tables for each user's and server's preferences: /settings, the quotas moderators set, a
server's relax switch, /prefer's shortcuts and suffix, and the batches of jobs waiting for a student's Yes.
A mixin of ``Store`` (which supplies the connection and its transactions), kept apart so that ``store.py``
stays readable."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

import aiosqlite

from imaginebot.errors import ImagineError, ParamError
from imaginebot.prefer import MAX_OPTIONS
from imaginebot.store_models import Batch, BatchState, UserSettings

RELAX_OFF: Final = (
    "Relax mode is off on this server, so every job runs fast and counts against your daily quota: "
    "switch your mode to Fast in /settings, or leave --relax out. A moderator turns relax on with "
    "/quota relax on."
)


def _batch(row: aiosqlite.Row) -> Batch:
    return Batch(
        id=row["id"],
        user_id=row["user_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        texts=tuple(json.loads(row["texts"])),
        source=row["source"],
        state=BatchState(row["state"]),
        created_at=datetime.fromisoformat(row["created_at"]),
    )


class HabitsStore:
    """Settings, relax, /prefer and batches. ``Store`` provides the methods that raise NotImplementedError."""

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        raise NotImplementedError
        yield  # an async generator, as Store's

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        raise NotImplementedError

    @staticmethod
    async def _one(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        raise NotImplementedError

    def _now(self) -> datetime:
        raise NotImplementedError

    async def _log(
        self,
        db: aiosqlite.Connection,
        guild_id: int,
        actor_id: int,
        action: str,
        target_id: int | None,
        detail: str,
    ) -> None:
        raise NotImplementedError

    # -- per-user settings -----------------------------------------------------------------------------

    async def get_settings(self, user_id: int) -> UserSettings:
        rows = await self._all(
            "SELECT steps, cfg, aspect, sampler, images, remix, model, relax FROM user_settings"
            " WHERE user_id = ?",
            (user_id,),
        )
        if not rows:
            return UserSettings()
        return UserSettings(
            **dict(rows[0]) | {"remix": bool(rows[0]["remix"]), "relax": bool(rows[0]["relax"])}
        )

    async def save_settings(self, user_id: int, settings: UserSettings) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO user_settings"
                " (user_id, steps, cfg, aspect, sampler, images, remix, model, relax)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET steps = excluded.steps, cfg = excluded.cfg,"
                " aspect = excluded.aspect, sampler = excluded.sampler, images = excluded.images,"
                " remix = excluded.remix, model = excluded.model, relax = excluded.relax",
                (user_id, settings.steps, settings.cfg, settings.aspect, settings.sampler, settings.images,
                 settings.remix, settings.model, settings.relax),
            )  # fmt: skip

    # -- quotas set by moderators (the store checks and takes them) --------------------------------------

    async def set_guild_quota(self, guild_id: int, daily_images: int | None, *, by: int) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO guild_quotas (guild_id, daily_images) VALUES (?, ?)"
                " ON CONFLICT (guild_id) DO UPDATE SET daily_images = excluded.daily_images",
                (guild_id, daily_images),
            )
            await self._log(db, guild_id, by, "quota.default", None, _limit_text(daily_images))

    async def set_user_quota(self, guild_id: int, user_id: int, daily_images: int | None, *, by: int) -> None:
        """Override one user's daily images on this server (None: unlimited)."""
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO user_quotas (guild_id, user_id, daily_images) VALUES (?, ?, ?)"
                " ON CONFLICT (guild_id, user_id) DO UPDATE SET daily_images = excluded.daily_images",
                (guild_id, user_id, daily_images),
            )
            await self._log(db, guild_id, by, "quota.set", user_id, _limit_text(daily_images))

    async def clear_user_quota(self, guild_id: int, user_id: int, *, by: int) -> None:
        """Drop a user's override: the server's default applies again."""
        async with self._tx() as db:
            await db.execute(
                "DELETE FROM user_quotas WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
            await self._log(db, guild_id, by, "quota.clear", user_id, "")

    # -- relax -----------------------------------------------------------------------------------------

    async def _relax_on(self, db: aiosqlite.Connection, guild_id: int) -> bool:
        row = await self._one(db, "SELECT relax FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return bool(row and row["relax"])

    async def relax_on(self, guild_id: int) -> bool:
        """Whether the server's moderators allow relax (off until they turn it on)."""
        rows = await self._all("SELECT relax FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return bool(rows and rows[0]["relax"])

    async def set_relax(self, guild_id: int, on: bool, *, by: int) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO guild_settings (guild_id, relax) VALUES (?, ?)"
                " ON CONFLICT (guild_id) DO UPDATE SET relax = excluded.relax",
                (guild_id, on),
            )
            await self._log(db, guild_id, by, "relax.on" if on else "relax.off", None, "")

    async def relax_images_today(self, guild_id: int, user_id: int) -> int:
        """Images of the user's relax jobs queued today (UTC) that were not cancelled or failed."""
        rows = await self._all(
            "SELECT seeds FROM jobs WHERE guild_id = ? AND user_id = ? AND relax = 1 AND charged_day = ?"
            " AND status NOT IN ('failed', 'cancelled', 'interrupted')",
            (guild_id, user_id, self._now().date().isoformat()),
        )
        return sum(len(json.loads(row["seeds"])) for row in rows)

    async def attach_message(self, job_id: int, message_id: int) -> None:
        """The message that shows a job made before it had one (a batch's jobs)."""
        async with self._tx() as db:
            await db.execute("UPDATE jobs SET message_id = ? WHERE id = ?", (message_id, job_id))

    # -- /prefer ---------------------------------------------------------------------------------------

    async def prefer_options(self, user_id: int) -> dict[str, str]:
        """The user's shortcuts, name -> text, by name."""
        rows = await self._all(
            "SELECT name, value FROM prefer_options WHERE user_id = ? ORDER BY name", (user_id,)
        )
        return {row["name"]: row["value"] for row in rows}

    async def set_prefer_option(self, user_id: int, name: str, value: str) -> None:
        """Save a shortcut (``prefer.check_name``'d); ParamError past ``MAX_OPTIONS`` of them."""
        async with self._tx() as db:
            exists = await self._one(
                db, "SELECT 1 FROM prefer_options WHERE user_id = ? AND name = ?", (user_id, name)
            )
            count = await self._one(
                db, "SELECT COUNT(*) AS n FROM prefer_options WHERE user_id = ?", (user_id,)
            )
            if not exists and count is not None and count["n"] >= MAX_OPTIONS:
                raise ParamError(
                    f"You have {MAX_OPTIONS} shortcuts, the most there can be; delete one first "
                    "(/prefer option set with its name and no value)."
                )
            await db.execute(
                "INSERT INTO prefer_options (user_id, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, name) DO UPDATE SET value = excluded.value",
                (user_id, name, value),
            )

    async def delete_prefer_option(self, user_id: int, name: str) -> bool:
        """False when there was no such shortcut."""
        async with self._tx() as db:
            cursor = await db.execute(
                "DELETE FROM prefer_options WHERE user_id = ? AND name = ?", (user_id, name)
            )
        return cursor.rowcount > 0

    async def prefer_suffix(self, user_id: int) -> str:
        rows = await self._all("SELECT suffix FROM prefer_suffix WHERE user_id = ?", (user_id,))
        return str(rows[0]["suffix"]) if rows else ""

    async def set_prefer_suffix(self, user_id: int, suffix: str) -> None:
        """Save the suffix; an empty one removes it."""
        async with self._tx() as db:
            if not suffix:
                await db.execute("DELETE FROM prefer_suffix WHERE user_id = ?", (user_id,))
                return
            await db.execute(
                "INSERT INTO prefer_suffix (user_id, suffix) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET suffix = excluded.suffix",
                (user_id, suffix),
            )

    # -- batches ---------------------------------------------------------------------------------------

    async def add_batch(
        self, user_id: int, guild_id: int, channel_id: int, texts: Sequence[str], source: str | None
    ) -> Batch:
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO batches (user_id, guild_id, channel_id, texts, source, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, guild_id, channel_id, json.dumps(list(texts)), source, self._now().isoformat()),
            )
            row = await self._one(db, "SELECT * FROM batches WHERE id = ?", (cursor.lastrowid,))
        assert row is not None
        return _batch(row)

    async def get_batch(self, batch_id: int) -> Batch | None:
        rows = await self._all("SELECT * FROM batches WHERE id = ?", (batch_id,))
        return _batch(rows[0]) if rows else None

    async def decline_batch(self, batch_id: int) -> bool:
        """Mark an asked batch declined; False when it had been answered already."""
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE batches SET state = 'declined', answered_at = ? WHERE id = ? AND state = 'asked'",
                (self._now().isoformat(), batch_id),
            )
        return cursor.rowcount > 0

    async def _claim_batch(self, db: aiosqlite.Connection, batch_id: int) -> None:
        """Mark an asked batch queued, inside the transaction that reserves its jobs: a second Yes (a double
        click, a Yes after a No) finds it answered and reserves nothing."""
        cursor = await db.execute(
            "UPDATE batches SET state = 'queued', answered_at = ? WHERE id = ? AND state = 'asked'",
            (self._now().isoformat(), batch_id),
        )
        if cursor.rowcount == 0:
            raise ImagineError("That question was answered already: its jobs are queued or were declined.")


def _limit_text(daily_images: int | None) -> str:
    return "unlimited" if daily_images is None else f"{daily_images}/day"
