"""The gallery's migration and queries on the store: rows from before are searchable, the FTS5 index keeps in
step with the jobs table, members' names, and the search box's text made safe for FTS5."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from imaginebot.migrations import migrations
from imaginebot.store import DB_NAME, Store
from imaginebot.store_gallery import GalleryFilter, GalleryQueries, search_query

GUILD = 10


def gallery_migration() -> int:
    (version,) = [version for version, name, _ in migrations() if name.endswith("_gallery.sql")]
    return version


async def test_jobs_from_before_the_migration_are_indexed_and_the_index_keeps_in_step(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("PRAGMA foreign_keys = ON")
        for version, _, script in migrations()[: gallery_migration() - 1]:
            db.executescript(script)
            db.execute(f"PRAGMA user_version = {version}")
        for prompt in ("a red circle", "a blue square", "an old red star"):
            db.execute(
                "INSERT INTO jobs (user_id, guild_id, channel_id, kind, prompt_text, prompt, steps, cfg,"
                " sampler, width, height, seeds, charged_day, created_at, status, images, grid) VALUES (1, ?,"
                " 5, 'imagine', ?, ?, 20, 7.0, 'euler_a', 64, 64, '[1]', '2024-05-01',"
                " '2024-05-01T00:00:00+00:00', 'done', '[\"images/1/tile-0.png\"]', NULL)",
                (GUILD, prompt, prompt),
            )
        db.commit()
    async with await Store.open(tmp_path) as store:
        queries = GalleryQueries(store)

        async def found(words: str) -> list[int]:
            return [job.id for job in (await queries.page(GalleryFilter(GUILD, words=words))).jobs]

        assert await found("red") == [3, 1]
        assert await found("stars") == [3]
        assert (await store.get_job(1)).hidden_at is None  # type: ignore[union-attr]
        async with store.transaction() as db:  # nothing deletes jobs or edits prompts yet; the triggers would
            await db.execute("UPDATE jobs SET prompt = 'a green circle' WHERE id = 1")
            await db.execute("DELETE FROM jobs WHERE id = 3")
        assert await found("red") == []
        assert await found("green circle") == [1]
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("INSERT INTO jobs_fts (jobs_fts) VALUES ('integrity-check')")  # raises if out of step


async def test_members_names_are_remembered_per_server(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as store:
        queries = GalleryQueries(store)
        at = datetime(2026, 12, 4, tzinfo=UTC)
        await queries.remember(GUILD, 1, "Alice", at)
        await queries.remember(GUILD, 2, "bob", at)
        await queries.remember(GUILD + 1, 1, "Alice in the other class", at)
        await queries.remember(GUILD, 1, "Alice B.", at)  # renamed
        assert await queries.names(GUILD, [1, 2, 3]) == {1: "Alice B.", 2: "bob"}
        assert await queries.members(GUILD) == [(1, "Alice B."), (2, "bob")]
        assert await queries.names(GUILD, []) == {}


def test_the_search_box_becomes_quoted_words() -> None:
    assert search_query("a red circle") == '"a" "red" "circle"'
    assert search_query('circle" OR "x') == '"circle" "OR" "x"'
    assert search_query("NEAR(a b) * - : ^") == '"NEAR" "a" "b"'
    assert search_query("   ") is None and search_query('"*') is None
    assert search_query("straße café") == '"straße" "café"'
