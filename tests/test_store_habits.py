"""The store's side of Midjourney's habits: several jobs reserved all or none (under concurrency too), relax
(a server's switch, relax jobs cost nothing, out of quota becomes relax), /prefer, and batches."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imaginebot.engine.api import GenerateSpec
from imaginebot.errors import Forbidden, ImagineError, ParamError, QuotaExceeded
from imaginebot.prefer import MAX_OPTIONS
from imaginebot.store import Store
from imaginebot.store_models import BatchState, JobKind, JobStatus, NewJob, UserSettings

GUILD, ALICE, BOB, MOD = 10, 1, 2, 99
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path, default_daily_images=10, clock=lambda: NOW) as s:
        yield s


def new_job(user: int = ALICE, images: int = 4, *, relax: bool = False, prompt: str = "an otter") -> NewJob:
    spec = GenerateSpec(prompt, "", 512, 512, 20, 7.0, "euler_a", tuple(range(100, 100 + images)))
    return NewJob(user, GUILD, 5, None, JobKind.IMAGINE, prompt, spec, relax=relax)


async def test_a_batch_is_reserved_whole_or_not_at_all(store: Store) -> None:
    jobs = await store.reserve_jobs([new_job(images=4), new_job(images=4)])
    assert [job.charged for job in jobs] == [4, 4] and all(job.status is JobStatus.QUEUED for job in jobs)
    with pytest.raises(QuotaExceeded, match="needs 8 images and you have 2 of your 10 left"):
        await store.reserve_jobs([new_job(images=1), new_job(images=4), new_job(images=3)])
    assert (await store.quota_status(GUILD, ALICE)).used == 8  # nothing of the refused batch was taken
    assert len(await store.recent_jobs(GUILD, ALICE)) == 2
    with pytest.raises(ValueError, match="one user"):
        await store.reserve_jobs([new_job(ALICE), new_job(BOB)])


async def test_concurrent_batches_on_separate_connections_never_overspend_nor_split(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as admin:
        await admin.set_guild_quota(GUILD, 10, by=MOD)
    stores = await asyncio.gather(*(Store.open(tmp_path) for _ in range(8)))
    try:
        # eight batches of three one-image jobs race for ten images: three batches fit, whole
        results = await asyncio.gather(
            *(
                s.reserve_jobs([new_job(images=1, prompt=f"batch {i}") for _ in range(3)])
                for i, s in enumerate(stores)
            ),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, BaseException))
        assert len(won) == 3 and all(len(batch) == 3 for batch in won)
        jobs = await stores[0].recent_jobs(GUILD, ALICE, limit=100)
        counts = {
            prompt: len(list(group))
            for prompt, group in itertools.groupby(sorted(j.prompt_text for j in jobs))
        }
        assert sorted(counts.values()) == [3, 3, 3]  # no batch was half reserved
        assert (await stores[0].quota_status(GUILD, ALICE)).used == 9
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_relax_costs_nothing_and_needs_the_servers_switch(store: Store) -> None:
    with pytest.raises(Forbidden, match="Relax mode is off on this server"):
        await store.reserve_job(new_job(relax=True))
    await store.set_relax(GUILD, True, by=MOD)
    assert await store.relax_on(GUILD) and not await store.relax_on(GUILD + 1)
    relaxed = await store.reserve_job(new_job(relax=True, images=4))
    assert relaxed.relax and relaxed.charged == 0
    assert (await store.quota_status(GUILD, ALICE)).used == 0
    assert await store.relax_images_today(GUILD, ALICE) == 4
    await store.finish_job(relaxed.id, JobStatus.CANCELLED)
    assert await store.relax_images_today(GUILD, ALICE) == 0  # a cancelled job made nothing
    assert (await store.quota_status(GUILD, ALICE)).used == 0  # and gives nothing back
    assert [(a.action, a.actor_id) for a in await store.moderation_log(GUILD)] == [("relax.on", MOD)]


async def test_out_of_quota_a_batch_becomes_relax_where_the_server_allows(store: Store) -> None:
    await store.reserve_job(new_job(images=4))
    await store.reserve_job(new_job(images=4))
    assert not await store.check_reservation(GUILD, ALICE, 2, relax=False)  # 2 left: it fits
    with pytest.raises(QuotaExceeded):
        await store.check_reservation(GUILD, ALICE, 4, relax=False)
    await store.set_relax(GUILD, True, by=MOD)
    assert await store.check_reservation(GUILD, ALICE, 4, relax=False)  # it would run in relax
    jobs = await store.reserve_jobs([new_job(images=1), new_job(images=4)])
    assert [(job.relax, job.charged) for job in jobs] == [(True, 0), (True, 0)]  # all of them, not a split
    assert (await store.quota_status(GUILD, ALICE)).used == 8
    # a quota of 0 stops a student: no relax either
    await store.set_user_quota(GUILD, BOB, 0, by=MOD)
    with pytest.raises(QuotaExceeded, match="quota on this server is 0"):
        await store.reserve_job(new_job(BOB, images=1))


async def test_settings_keep_the_mode(store: Store) -> None:
    await store.save_settings(ALICE, UserSettings(steps=20, relax=True))
    assert await store.get_settings(ALICE) == UserSettings(steps=20, relax=True)


async def test_prefer_options_and_suffix(store: Store) -> None:
    assert await store.prefer_options(ALICE) == {} and await store.prefer_suffix(ALICE) == ""
    await store.set_prefer_option(ALICE, "mine", "--ar 3:2")
    await store.set_prefer_option(ALICE, "mine", "--ar 2:3")  # saved again: replaced
    await store.set_prefer_option(ALICE, "b", "blue")
    assert await store.prefer_options(ALICE) == {"b": "blue", "mine": "--ar 2:3"}
    assert await store.prefer_options(BOB) == {}
    assert await store.delete_prefer_option(ALICE, "b") and not await store.delete_prefer_option(ALICE, "b")
    for i in range(MAX_OPTIONS - 1):
        await store.set_prefer_option(ALICE, f"o{i}", "x")
    with pytest.raises(ParamError, match=f"You have {MAX_OPTIONS} shortcuts"):
        await store.set_prefer_option(ALICE, "onemore", "x")
    await store.set_prefer_option(ALICE, "mine", "--ar 1:1")  # replacing one is fine
    await store.set_prefer_suffix(ALICE, "--steps 20")
    assert await store.prefer_suffix(ALICE) == "--steps 20"
    await store.set_prefer_suffix(ALICE, "")
    assert await store.prefer_suffix(ALICE) == ""


async def test_a_batch_is_answered_once(store: Store) -> None:
    batch = await store.add_batch(ALICE, GUILD, 5, ["a --seed 1", "b --seed 2"], None)
    assert (batch.texts, batch.state, batch.created_at) == (
        ("a --seed 1", "b --seed 2"),
        BatchState.ASKED,
        NOW,
    )
    jobs = await store.reserve_jobs([new_job(), new_job()], batch=batch.id)
    assert len(jobs) == 2
    with pytest.raises(ImagineError, match="answered already"):  # a second Yes reserves nothing
        await store.reserve_jobs([new_job(), new_job()], batch=batch.id)
    assert (await store.quota_status(GUILD, ALICE)).used == 8
    assert not await store.decline_batch(batch.id)
    other = await store.add_batch(ALICE, GUILD, 5, ["c"], "sources/x.png")
    assert await store.decline_batch(other.id)
    with pytest.raises(ImagineError, match="answered already"):  # a Yes after the No
        await store.reserve_jobs([new_job()], batch=other.id)
    stored = await store.get_batch(other.id)
    assert stored is not None and stored.state is BatchState.DECLINED and stored.source == "sources/x.png"
    await store.attach_message(jobs[0].id, 777)
    job = await store.get_job(jobs[0].id)
    assert job is not None and job.message_id == 777
