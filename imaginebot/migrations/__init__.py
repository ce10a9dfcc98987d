"""Numbered schema migrations (``NNNN_name.sql``), applied in order when the store opens.

The schema version is SQLite's ``PRAGMA user_version``: migration N has run when it is >= N.
Never edit a migration that has shipped; add the next number.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from importlib import resources

import aiosqlite

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every ``migrations/NNNN_name.sql``, in order, numbered 1, 2, 3…"""
    found = []
    for entry in resources.files(__name__).iterdir():
        if match := _MIGRATION_NAME.fullmatch(entry.name):
            found.append((int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    if [version for version, _, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(
            f"migrations must be numbered 0001, 0002… without gaps: {[n for _, n, _ in found]}"
        )
    return found


def _statements(script: str) -> Iterator[str]:
    # executescript() would COMMIT our BEGIN IMMEDIATE first, so run the statements one by one;
    # sqlite3.complete_statement knows about comments, strings and trigger bodies.
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""


async def migrate(db: aiosqlite.Connection) -> None:
    known = migrations()
    for version, name, script in known:
        # The version is read inside the write lock so two processes opening a fresh file don't both migrate.
        await db.execute("BEGIN IMMEDIATE")
        try:
            current = await user_version(db)
            if current > len(known):
                raise RuntimeError(f"the database is at schema version {current}, newer than this bot knows")
            if current < version:
                for statement in _statements(script):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version:d}")  # PRAGMA takes no ? placeholders
                log.info("applied migration %s", name)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")


async def user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
