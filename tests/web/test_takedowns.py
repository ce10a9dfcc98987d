"""Takedowns in the job service (imaginebot/takedowns.py), under a clock the test moves: undo for a day, files
deleted from disk only after it (at start and periodically), buttons of a taken-down image refused, the notice
pushed through Discord's faults, and a takedown during a delivery still winning."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from gallerykit import ALICE, GUILD, OTHER_GUILD, TEACHER, GalleryKit
from waiting import until, within

from imaginebot.actions import Action
from imaginebot.delivery import DeliveryFailed, JobView, Posted, Update
from imaginebot.errors import ImagineError
from imaginebot.jobs import Origin
from imaginebot.store_gallery import thumbnail_of
from imaginebot.store_models import Job, JobStatus

TIMEOUT = 30


@dataclass
class Watch:
    """The latest row of a job seen while waiting for it to reach a state (what a time-out shows)."""

    gallery: GalleryKit
    job_id: int
    seen: Job | None = None

    async def until(self, check: Callable[[Job], bool]) -> Job:
        while True:
            self.seen = await self.gallery.store.get_job(self.job_id)
            if self.seen is not None and check(self.seen):
                return self.seen
            await asyncio.sleep(0.02)

    async def reaches(self, what: str, check: Callable[[Job], bool]) -> Job:
        return await within(
            self.until(check), f"job {self.job_id}: {what}", timeout=TIMEOUT, seen=lambda: self.seen
        )


async def test_files_stay_for_the_day_of_undo_then_the_purge_deletes_them(gallery: GalleryKit) -> None:
    job = await gallery.imagine(ALICE, "a red circle")
    await gallery.get(f"/gallery/jobs/{job.id}/thumb.webp", gallery.teacher())  # a thumbnail on disk too
    files = [gallery.data_dir / path for path in (*job.images, job.grid, thumbnail_of(job.id))]
    assert all(path.is_file() for path in files)
    await gallery.jobs.take_down(job.id, guild_id=GUILD, by=TEACHER)
    gallery.clock.advance(hours=23)
    assert await gallery.jobs.takedowns.purge() == 0 and all(path.is_file() for path in files)
    restored = await gallery.jobs.restore(job.id, guild_id=GUILD, by=TEACHER)  # undo within the day
    assert not restored.hidden and all(path.is_file() for path in files)

    await gallery.jobs.take_down(job.id, guild_id=GUILD, by=TEACHER)
    gallery.clock.advance(hours=23, minutes=59)
    assert await gallery.jobs.takedowns.purge() == 0
    gallery.clock.advance(minutes=1)
    assert await gallery.jobs.takedowns.purge() == 1
    assert not any(path.exists() for path in files) and not gallery.jobs.store.job_dir(job.id).exists()
    purged = await gallery.store.get_job(job.id)
    assert purged is not None and purged.purged_at == gallery.clock() and purged.images == ()
    assert purged.grid is None and purged.hidden
    with pytest.raises(ImagineError, match="more than a day ago"):
        await gallery.jobs.restore(job.id, guild_id=GUILD, by=TEACHER)
    assert await gallery.jobs.takedowns.purge() == 0  # once


async def test_the_service_purges_at_start(gallery: GalleryKit) -> None:
    """``async with JobService`` (as bot.py runs it) purges at once, then every hour."""
    job = await gallery.imagine(ALICE, "a red circle")
    await gallery.jobs.take_down(job.id, guild_id=GUILD, by=TEACHER)
    gallery.clock.advance(days=2)  # the bot was off meanwhile
    async with gallery.jobs:
        await Watch(gallery, job.id).reaches("purged", lambda found: found.purged_at is not None)
    assert not gallery.jobs.store.job_dir(job.id).exists()


async def test_only_a_done_image_of_the_server_is_taken_down_and_twice_is_once(gallery: GalleryKit) -> None:
    job = await gallery.imagine(ALICE, "a red circle")
    with pytest.raises(ImagineError, match=f"no image {job.id} on this server"):
        await gallery.jobs.take_down(job.id, guild_id=OTHER_GUILD, by=TEACHER)
    with pytest.raises(ImagineError, match="no image 999"):
        await gallery.jobs.take_down(999, guild_id=GUILD, by=TEACHER)
    with pytest.raises(ImagineError, match="was not taken down"):
        await gallery.jobs.restore(job.id, guild_id=GUILD, by=TEACHER)
    first = await gallery.jobs.take_down(job.id, guild_id=GUILD, by=TEACHER)
    gallery.clock.advance(hours=1)
    second = await gallery.jobs.take_down(job.id, guild_id=GUILD, by=TEACHER + 1)
    assert first.hidden_at == second.hidden_at and second.hidden_by == TEACHER
    assert [a.action for a in await gallery.store.moderation_log(GUILD)] == ["image.take-down"]


async def test_the_buttons_of_a_taken_down_image_no_longer_work(gallery: GalleryKit) -> None:
    job = await gallery.imagine(ALICE, "a red circle")
    await gallery.jobs.take_down(job.id, guild_id=GUILD, by=TEACHER)
    click = Origin(ALICE, GUILD, 20, 900, "Alice")
    for action, tile in ((Action.UPSCALE, 1), (Action.VARY, 2), (Action.REROLL, 0)):
        with pytest.raises(ImagineError, match="A moderator took that image down"):
            await gallery.jobs.act(click, action, job.id, tile, gallery.reply)
    assert len(await gallery.store.recent_jobs(GUILD, ALICE)) == 1  # nothing made, nothing charged


@dataclass
class FlakyReply:
    """Withdraws after ``fail`` failures; ``hold`` keeps a delivery waiting until it is set."""

    fail: int = 0
    hold: asyncio.Event | None = None
    log: list[str] = field(default_factory=list)

    async def show(self, view: JobView, update: Update) -> None:
        pass

    async def deliver(self, view: JobView) -> Posted | None:
        if self.hold is not None:
            await self.hold.wait()
        self.log.append(f"deliver {view.job.id}")
        return None

    async def withdraw(self, view: JobView) -> None:
        if self.fail:
            self.fail -= 1
            raise DeliveryFailed("Discord answered 503")
        self.log.append(f"withdraw {view.job.id}")


async def test_the_notice_is_pushed_through_discords_faults(gallery: GalleryKit) -> None:
    job = await gallery.imagine(ALICE, "a red circle")
    flaky = FlakyReply(fail=3)
    gallery.jobs.reach_messages_with(lambda job: flaky)
    await gallery.jobs.take_down(job.id, guild_id=GUILD, by=TEACHER)
    await gallery.jobs.idle()
    assert flaky.log == [f"withdraw {job.id}"] and flaky.fail == 0


async def test_taken_down_while_its_grid_was_on_its_way_the_notice_wins(gallery: GalleryKit) -> None:
    held = FlakyReply(hold=asyncio.Event())
    origin = Origin(ALICE, GUILD, 20, 777, "Alice")
    gallery.jobs.reach_messages_with(lambda job: held)
    job = await gallery.jobs.imagine(origin, "a red circle", held)

    await Watch(gallery, job.id).reaches("done", lambda found: found.status is JobStatus.DONE)
    await gallery.jobs.take_down(job.id, guild_id=GUILD, by=TEACHER)  # its grid is still on its way
    await until(lambda: bool(held.log), "the takedown's notice", timeout=TIMEOUT, seen=lambda: held.log)
    held.hold.set()  # type: ignore[union-attr]
    await gallery.jobs.idle()
    assert held.log == [f"withdraw {job.id}", f"deliver {job.id}", f"withdraw {job.id}"]
