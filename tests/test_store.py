from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from imaginebot.engine.api import GenerateSpec
from imaginebot.engine.canvas import Direction
from imaginebot.errors import ConfigError, Forbidden, QuotaExceeded
from imaginebot.migrations import migrations
from imaginebot.store import DB_NAME, Store, require_sqlite
from imaginebot.store_models import Edit, EditKind, JobKind, JobStatus, NewJob, UserSettings

GUILD, ALICE, BOB, MOD = 10, 1, 2, 99


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2024, 5, 1, 22, 30, tzinfo=UTC))


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path, default_daily_images=10, clock=clock) as s:
        yield s


def new_job(user: int = ALICE, images: int = 4, guild: int = GUILD, **kw: object) -> NewJob:
    spec = GenerateSpec("an otter", "blur", 512, 512, 20, 7.0, "euler_a", tuple(range(100, 100 + images)))
    kind = kw.pop("kind", JobKind.IMAGINE)
    return NewJob(user, guild, 5, kw.pop("message_id", 6), kind, "an otter --no blur", spec, **kw)  # type: ignore[arg-type]


async def test_migrations_from_empty_then_reopen_is_idempotent(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as s:
        assert await s.schema_version() == len(migrations()) >= 1
        await s.reserve_job(new_job())
    async with await Store.open(tmp_path) as s:  # re-open: nothing re-applied, data kept
        assert await s.schema_version() == len(migrations())
        assert (await s.get_job(1)) is not None
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_simultaneous_first_opens_migrate_once(tmp_path: Path) -> None:
    # Several rounds, each on a new file: losing the race to switch a new file to WAL must not fail an open.
    for round_ in range(5):
        stores = await asyncio.gather(*(Store.open(tmp_path / str(round_)) for _ in range(8)))
        try:
            assert {await s.schema_version() for s in stores} == {len(migrations())}
        finally:
            await asyncio.gather(*(s.close() for s in stores))


async def test_reserve_records_the_job_and_its_lineage(store: Store, clock: FakeClock) -> None:
    parent = await store.reserve_job(new_job())
    child = await store.reserve_job(
        new_job(images=1, kind=JobKind.UPSCALE, parent_id=parent.id, tile_index=2)
    )
    got = await store.get_job(child.id)
    assert got == child
    assert (got.kind, got.parent_id, got.tile_index, got.status) == (JobKind.UPSCALE, parent.id, 2, "queued")
    assert parent.spec.seeds == (100, 101, 102, 103) and parent.prompt_text == "an otter --no blur"
    assert parent.created_at == clock.now and parent.charged == 4
    assert (await store.quota_status(GUILD, ALICE)).used == 5


async def test_quota_refusal_says_what_is_left_and_when_it_resets(store: Store) -> None:
    await store.reserve_job(new_job(images=4))
    await store.reserve_job(new_job(images=4))
    with pytest.raises(QuotaExceeded) as refused:
        await store.reserve_job(new_job(images=4))
    message = str(refused.value)
    assert "needs 4 images" in message and "2 of your 10 left" in message
    assert "00:00 UTC" in message and "in 1 h 30 min" in message
    assert len(await store.unfinished_jobs()) == 2  # the refused job was not inserted
    await store.reserve_job(new_job(images=2))  # exactly up to the limit is fine
    status = await store.quota_status(GUILD, ALICE)
    assert (status.used, status.left, status.resets_at) == (10, 0, datetime(2024, 5, 2, tzinfo=UTC))


async def test_concurrent_reserves_on_separate_connections_never_overspend(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as admin:
        await admin.set_guild_quota(GUILD, 10, by=MOD)
    stores = await asyncio.gather(*(Store.open(tmp_path) for _ in range(12)))
    try:
        results = await asyncio.gather(
            *(s.reserve_job(new_job(images=4)) for s in stores), return_exceptions=True
        )
        assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, BaseException))
        assert sum(not isinstance(r, BaseException) for r in results) == 2
        assert (await stores[0].quota_status(GUILD, ALICE)).used == 8
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_concurrent_reserves_on_one_connection_never_overspend(store: Store) -> None:
    results = await asyncio.gather(
        *(store.reserve_job(new_job(images=3)) for _ in range(8)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert (await store.quota_status(GUILD, ALICE)).used == 9


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED])
async def test_unsuccessful_jobs_give_their_images_back_once(store: Store, status: JobStatus) -> None:
    job = await store.reserve_job(new_job(images=4))
    finished = await store.finish_job(job.id, status, error="boom")
    assert (finished.status, finished.error, finished.charged) == (status, "boom", 0)
    assert finished.finished_at is not None
    assert (await store.quota_status(GUILD, ALICE)).used == 0
    again = await store.finish_job(job.id, JobStatus.FAILED)  # already final: unchanged, no second refund
    assert again == finished
    await store.reserve_job(new_job(images=4))
    await store.finish_job(job.id, status)
    assert (await store.quota_status(GUILD, ALICE)).used == 4


async def test_done_jobs_keep_their_charge_and_images_round_trip(store: Store, tmp_path: Path) -> None:
    job = await store.reserve_job(new_job(images=2))
    tiles = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    done = await store.complete_job(job.id, tiles, grid=Image.new("RGB", (16, 8), "green"), elapsed_s=1.5)
    assert done.status == JobStatus.DONE and done.charged == 2 and done.elapsed_s == 1.5
    assert done.images == (f"images/{job.id}/tile-0.png", f"images/{job.id}/tile-1.png")
    assert done.grid == f"images/{job.id}/grid.png"
    blue = await store.load_image(done.images[1])
    assert blue.size == (8, 8) and blue.getpixel((0, 0)) == (0, 0, 255)
    assert sorted(p.name for p in store.job_dir(job.id).iterdir()) == ["grid.png", "tile-0.png", "tile-1.png"]
    assert (await store.quota_status(GUILD, ALICE)).used == 2


async def test_quota_resets_at_utc_midnight_and_refunds_go_to_the_charged_day(
    store: Store, clock: FakeClock
) -> None:
    first = await store.reserve_job(new_job(images=4))
    await store.reserve_job(new_job(images=4))
    with pytest.raises(QuotaExceeded):
        await store.reserve_job(new_job(images=4))
    clock.now = datetime(2024, 5, 2, 0, 0, tzinfo=UTC)  # a new UTC day
    assert (await store.quota_status(GUILD, ALICE)).used == 0
    await store.reserve_job(new_job(images=4))
    await store.finish_job(first.id, JobStatus.FAILED)  # yesterday's job: yesterday's usage
    assert (await store.quota_status(GUILD, ALICE)).used == 4
    assert [(u.user_id, u.images) for u in await store.usage_report(GUILD, date(2024, 5, 1))] == [(ALICE, 4)]


async def test_quota_levels_user_override_guild_default_and_unlimited(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with await Store.open(tmp_path, default_daily_images=None, clock=clock) as s:
        assert (await s.quota_status(GUILD, ALICE)).left is None  # bot default: unlimited
        await s.set_guild_quota(GUILD, 4, by=MOD)
        assert await s.guild_quota(GUILD) == 4
        await s.reserve_job(new_job(ALICE, images=4))
        with pytest.raises(QuotaExceeded):
            await s.reserve_job(new_job(ALICE, images=1))
        await s.set_user_quota(GUILD, ALICE, None, by=MOD)  # unlimited for Alice only
        for _ in range(5):
            await s.reserve_job(new_job(ALICE, images=4))
        await s.reserve_job(new_job(BOB, images=4))
        with pytest.raises(QuotaExceeded):
            await s.reserve_job(new_job(BOB, images=1))
        await s.set_user_quota(GUILD, BOB, 0, by=MOD)
        assert (await s.quota_status(GUILD, BOB)).left == 0
        with pytest.raises(QuotaExceeded, match="quota on this server is 0"):
            await s.reserve_job(new_job(BOB, images=1))
        await s.clear_user_quota(GUILD, BOB, by=MOD)
        await s.reset_usage(GUILD, BOB, by=MOD)
        await s.reserve_job(new_job(BOB, images=4))
        assert (await s.quota_status(GUILD + 1, BOB)).used == 0  # usage is per server
        report = await s.usage_report(GUILD)
        assert [(u.user_id, u.images) for u in report] == [(ALICE, 24), (BOB, 4)]
        actions = [(a.action, a.target_id, a.detail) for a in await s.moderation_log(GUILD)]
        assert actions == [
            ("usage.reset", BOB, "2024-05-01"),
            ("quota.clear", BOB, ""),
            ("quota.set", BOB, "0/day"),
            ("quota.set", ALICE, "unlimited"),
            ("quota.default", None, "4/day"),
        ]


async def test_settings_round_trip(store: Store) -> None:
    assert await store.get_settings(ALICE) == UserSettings()
    mine = UserSettings(steps=25, cfg=6.5, aspect="3:2", sampler="dpm++2m", images=2)
    await store.save_settings(ALICE, mine)
    assert await store.get_settings(ALICE) == mine
    await store.save_settings(ALICE, UserSettings(steps=30))
    assert await store.get_settings(ALICE) == UserSettings(steps=30)
    assert await store.get_settings(BOB) == UserSettings()


async def test_blocked_users_cannot_reserve(store: Store, clock: FakeClock) -> None:
    await store.block_user(GUILD, BOB, by=MOD, reason="spam")
    assert await store.is_blocked(GUILD, BOB) and not await store.is_blocked(GUILD + 1, BOB)
    with pytest.raises(Forbidden, match="blocked"):
        await store.reserve_job(new_job(BOB))
    [blocked] = await store.blocked_users(GUILD)
    assert (blocked.user_id, blocked.blocked_by, blocked.reason, blocked.blocked_at) == (
        BOB,
        MOD,
        "spam",
        clock.now,
    )
    assert await store.unblock_user(GUILD, BOB, by=MOD)
    assert not await store.unblock_user(GUILD, BOB, by=MOD)
    await store.reserve_job(new_job(BOB))
    log = await store.moderation_log(GUILD, target_id=BOB)
    assert [(a.action, a.actor_id, a.detail) for a in log] == [("unblock", MOD, ""), ("block", MOD, "spam")]


async def test_banned_words_match_whole_words_per_server(store: Store) -> None:
    assert await store.add_banned_word(GUILD, "  Gore ", by=MOD)
    assert not await store.add_banned_word(GUILD, "gore", by=MOD)
    assert await store.add_banned_word(GUILD, "bad  thing", by=MOD)
    assert await store.banned_words(GUILD) == ["bad thing", "gore"]
    assert await store.find_banned_words(GUILD, "GORE and a Bad   Thing") == ["bad thing", "gore"]
    assert await store.find_banned_words(GUILD, "gorilla in a gorge") == []
    assert await store.find_banned_words(GUILD + 1, "gore") == []
    assert await store.remove_banned_word(GUILD, "GORE", by=MOD)
    assert await store.banned_words(GUILD) == ["bad thing"]
    await store.log_action(GUILD, MOD, "job.cancel", ALICE, "job 7")
    assert [a.action for a in await store.moderation_log(GUILD, limit=2)] == ["job.cancel", "word.remove"]


async def test_unfinished_jobs_are_listed_after_reopen(tmp_path: Path, clock: FakeClock) -> None:
    async with await Store.open(tmp_path, clock=clock) as s:
        queued = await s.reserve_job(new_job())
        running = await s.reserve_job(new_job(BOB, message_id=777))
        done = await s.reserve_job(new_job(BOB, images=1))
        await s.mark_running(running.id)
        await s.complete_job(done.id, [Image.new("RGB", (4, 4))])
    clock.now += timedelta(minutes=5)
    async with await Store.open(tmp_path, clock=clock) as s:
        left = await s.unfinished_jobs()
        assert [(j.id, j.status) for j in left] == [(queued.id, "queued"), (running.id, "running")]
        assert (left[1].channel_id, left[1].message_id, left[1].started_at) == (
            5,
            777,
            clock.now - timedelta(minutes=5),
        )
        await s.requeue_job(running.id)
        await s.finish_job(queued.id, JobStatus.INTERRUPTED)
        assert [(j.id, j.status) for j in await s.unfinished_jobs()] == [(running.id, "queued")]
        assert (await s.quota_status(GUILD, ALICE)).used == 0  # interrupted: refunded
        assert [j.id for j in await s.recent_jobs(GUILD, BOB)] == [done.id, running.id]


def test_an_sqlite_too_old_for_the_migrations_is_one_clear_sentence() -> None:
    with pytest.raises(
        ConfigError, match=r"needs SQLite 3\.35\.0 or newer; this Python's sqlite3 module has 3\.34\.1"
    ):
        require_sqlite((3, 34, 1))
    require_sqlite((3, 35, 0))


async def test_migration_4_rebuilds_the_jobs_table_keeping_every_row(tmp_path: Path) -> None:
    """0004 builds the jobs table anew (a CHECK constraint can't be changed in place): rows, their
    parent links and the id counter survive, and the new columns have their defaults."""
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        for version, _, script in migrations()[:3]:
            db.executescript(script)
            db.execute(f"PRAGMA user_version = {version}")
        insert = (
            "INSERT INTO jobs (user_id, guild_id, channel_id, kind, prompt_text, prompt, steps, cfg, sampler,"
            " width, height, seeds, charged_day, created_at, parent_id, status)"
            " VALUES (1, 10, 5, ?, 'x', 'x', 20, 7.0, 'euler_a', 512, 512, '[1]', '2024-05-01',"
            " '2024-05-01T00:00:00+00:00', ?, 'done')"
        )
        db.execute(insert, ("imagine", None))
        db.execute(insert, ("upscale", 1))
        db.execute("INSERT INTO user_settings (user_id, steps) VALUES (1, 25)")
    async with await Store.open(tmp_path) as s:
        assert await s.schema_version() == len(migrations()) >= 4
        child = await s.get_job(2)
        assert child is not None and child.parent_id == 1 and child.kind is JobKind.UPSCALE
        assert (child.edit, child.source, child.spec.tile) == (None, None, False)
        assert await s.get_settings(1) == UserSettings(steps=25, remix=False)
        assert (await s.reserve_job(new_job())).id == 3
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"jobs_status", "jobs_user", "jobs_parent", "jobs_undelivered"} <= indexes


async def test_edits_tiles_sources_and_remix_round_trip(store: Store) -> None:
    parent = await store.reserve_job(new_job(kind=JobKind.UPSCALE, images=1))
    edit = Edit(EditKind.PAN, direction=Direction.UP)
    spec = replace(new_job().spec, tile=True)
    job = await store.reserve_job(
        replace(new_job(kind=JobKind.EDIT, parent_id=parent.id, tile_index=0, edit=edit), spec=spec)
    )
    again = await store.get_job(job.id)
    assert again is not None and again.edit == edit and again.spec.tile is True
    region = Edit(EditKind.REGION, cells=(1, 5, 9))
    assert Edit.from_json(region.to_json()) == region
    zoom = Edit(EditKind.ZOOM, factor=1.5)
    assert Edit.from_json(zoom.to_json()) == zoom
    source = await store.save_source(Image.new("RGB", (8, 6), "red"))
    prompted = await store.reserve_job(new_job(images=1, source=source))
    assert (await store.get_job(prompted.id)).source == source  # type: ignore[union-attr]
    assert (await store.load_image(source)).size == (8, 6)
    await store.save_settings(ALICE, UserSettings(remix=True))
    assert (await store.get_settings(ALICE)).remix is True


def a_store_from_before(tmp_path: Path, migration: str) -> None:
    """The store file of a bot from before ``migration`` (the end of its file name), with one grid of then."""
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("PRAGMA foreign_keys = ON")  # as the store runs them (0004 rebuilds a table)
        for version, name, script in migrations():
            if name.endswith(migration):
                break
            db.executescript(script)
            db.execute(f"PRAGMA user_version = {version}")
        db.execute(
            "INSERT INTO jobs (user_id, guild_id, channel_id, kind, prompt_text, prompt, steps, cfg, sampler,"
            " width, height, seeds, charged_day, created_at) VALUES (1, 10, 5, 'imagine', 'x', 'x', 20, 7.0,"
            " 'euler_a', 512, 512, '[1]', '2024-05-01', '2024-05-01T00:00:00+00:00')"
        )
        db.commit()


async def test_models_and_loras_round_trip_and_older_jobs_get_the_default(tmp_path: Path) -> None:
    """0005: a job keeps the model and LoRAs it was made with; jobs from before have model '' (the
    default) and no LoRAs; a user's model choice is kept."""
    a_store_from_before(tmp_path, "_models.sql")
    async with await Store.open(tmp_path) as s:
        old = await s.get_job(1)
        assert old is not None and (old.spec.model, old.spec.loras) == ("", ())
        spec = replace(new_job().spec, model="turbo", loras=(("pixel_art", 0.8), ("ink", 1.5)))
        job = await s.reserve_job(replace(new_job(), spec=spec))
        again = await s.get_job(job.id)
        assert again is not None and again.spec.model == "turbo"
        assert again.spec.loras == (("pixel_art", 0.8), ("ink", 1.5))
        await s.save_settings(ALICE, UserSettings(model="turbo", steps=4))
        assert await s.get_settings(ALICE) == UserSettings(model="turbo", steps=4)


async def test_a_multi_prompts_parts_chaos_and_stop_round_trip(tmp_path: Path) -> None:
    """0009: a job keeps its parts, chaos and stop (what re-makes it); older jobs are one part, chaos 0,
    every step."""
    a_store_from_before(tmp_path, "_prompt_parts.sql")
    async with await Store.open(tmp_path) as s:
        old = await s.get_job(1)
        assert old is not None and (old.spec.parts, old.spec.chaos, old.spec.stop) == ((), 0, 100)
        parts = (("a castle", 1 / 3), ("in the clouds", 2 / 3), ("fog", -1 / 6))
        spec = replace(new_job().spec, prompt="a castle::1 in the clouds::2 fog::-0.5", parts=parts)
        job = await s.reserve_job(replace(new_job(), spec=replace(spec, chaos=40, stop=70)))
        again = await s.get_job(job.id)
        assert again is not None and again.spec == replace(spec, chaos=40, stop=70)
