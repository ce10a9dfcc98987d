"""Images the safety checker flags, in the job service (a fake engine and a stand-in checker on its worker):
stored and posted blurred as a spoiler, refused to U/V/the tools until a moderator's review, then released
(the clear grid, usable as any other) or removed (taken down)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine, FlagPositions
from PIL import Image, ImageChops, ImageStat
from test_jobs import ALICE, BOB, DEFAULTS, FAST, GUILD, FakeReply, finished, origin
from waiting import until

from imaginebot.actions import Action, next_actions
from imaginebot.catalog import Catalog
from imaginebot.engine.api import GenerateSpec
from imaginebot.engine.grid import make_grid
from imaginebot.engine.models import ModelSet
from imaginebot.errors import ImagineError
from imaginebot.executor import Executor
from imaginebot.jobs import JobService
from imaginebot.review import blurred, held_back_picture, review_note
from imaginebot.store import Store
from imaginebot.store_models import Delivery, Job, JobKind, JobStatus, Review

MODERATOR = 99


@pytest.fixture
def checker() -> FlagPositions:
    """Flags the second image of every batch: with one job at a time, the second tile of every job."""
    return FlagPositions(1)


@pytest.fixture
def replies() -> dict[int, FakeReply]:
    """Each job's message once nobody follows the job any more (what a review shows), by job id."""
    return {}


@pytest.fixture
async def jobs(
    tmp_path: Path, checker: FlagPositions, replies: dict[int, FakeReply]
) -> AsyncIterator[JobService]:
    store = await Store.open(tmp_path, default_daily_images=100)
    executor = Executor(ModelSet({"fake": FakeEngine()}, safety=checker), preview_every=1)
    await executor.start()
    seeds = itertools.count(1000, 10)
    service = JobService(
        store, executor, catalog=Catalog.single(64, DEFAULTS), seeds=lambda: next(seeds), delivery=FAST
    )
    service.reach_messages_with(lambda job: replies.setdefault(job.id, FakeReply()))
    yield service
    await service.close()
    await executor.stop()
    await store.close()


async def flagged_grid(jobs: JobService, reply: FakeReply | None = None) -> Job:
    reply = reply or FakeReply()
    job = await jobs.imagine(origin(), "a red circle --seed 5", reply)
    return await finished(jobs, job.id)


async def test_a_flagged_tile_is_stored_held_back_and_posted_blurred(jobs: JobService) -> None:
    reply = FakeReply()
    job = await flagged_grid(jobs, reply)
    assert (job.status, job.flagged, job.review) == (JobStatus.DONE, (1,), Review.WAITING)
    assert [job.held_back(i) for i in range(4)] == [False, True, False, False]
    assert jobs.metrics.registry.get_sample_value("imaginebot_flagged_images_total") == 1
    [view] = reply.delivered
    assert view.job.review is Review.WAITING  # the cogs post it as a spoiler (cogs/render.is_spoiler)
    assert view.picture is not None and job.grid is not None
    clear = await jobs.store.load_image(job.grid)
    assert view.picture.size == clear.size
    assert "Image 2 was flagged by the safety checker" in review_note(job)
    assert [j.id for j in await jobs.reviews.waiting(GUILD)] == [job.id]
    assert await jobs.reviews.waiting(GUILD + 1) == []
    # the files stay the clear tiles: a release shows them as they are
    assert len(job.images) == 4 and job.grid is not None


def test_the_held_back_tiles_are_blurred_past_recognising_and_the_others_untouched() -> None:
    tiles = [Image.radial_gradient("L").convert("RGB").rotate(90 * i) for i in range(4)]
    job = _job(flagged=(1,), review=Review.WAITING)
    picture = held_back_picture(job, tiles)
    expected = make_grid([tiles[0], blurred(tiles[1]), tiles[2], tiles[3]])
    assert ImageChops.difference(picture, expected).getbbox() is None  # the same code on the same tiles
    # blurred past recognising: a 512 px tile's 16 px checkerboard (as much detail as a face's features)
    # comes out a flat grey; 0.1 of the spread it had leaves room for any blur that does that
    board = Image.new("L", (32, 32))
    board.putdata([255 * ((x + y) % 2) for y in range(32) for x in range(32)])
    detail = board.resize((512, 512), Image.Resampling.NEAREST).convert("RGB")
    assert ImageStat.Stat(blurred(detail)).stddev[0] < 0.1 * ImageStat.Stat(detail).stddev[0]
    released = _job(flagged=(1,), review=Review.RELEASED)
    assert ImageChops.difference(held_back_picture(released, tiles), make_grid(tiles)).getbbox() is None


async def test_u_and_v_on_a_flagged_tile_are_refused_until_a_moderator_releases_it(jobs: JobService) -> None:
    parent = await flagged_grid(jobs)
    for action in (Action.UPSCALE, Action.VARY):
        with pytest.raises(ImagineError, match="Image 2 waits for a moderator's review"):
            await jobs.act(origin(BOB, 600), action, parent.id, 2, FakeReply())
    # the other tiles are usable; nothing was charged for the refusals
    up = await jobs.act(origin(BOB, 601), Action.UPSCALE, parent.id, 1, FakeReply())
    assert (await finished(jobs, up.id)).status is JobStatus.DONE
    assert (await jobs.store.quota_status(GUILD, BOB)).used == 1
    assert (Action.UPSCALE, 2) in next_actions(parent)  # the button stays, and says why when pressed


async def test_tools_on_a_flagged_upscale_are_refused(jobs: JobService, checker: FlagPositions) -> None:
    parent = await flagged_grid(jobs)
    up = await finished(jobs, (await jobs.act(origin(), Action.UPSCALE, parent.id, 1, FakeReply())).id)
    assert up.flagged == () and up.review is None  # an upscale's one image: not the second of its batch
    # an upscale that is itself flagged: its one image is held back, and so are the tools under it
    checker.positions = {0}
    up = await finished(jobs, (await jobs.act(origin(), Action.UPSCALE, parent.id, 3, FakeReply())).id)
    assert (up.flagged, up.review) == ((0,), Review.WAITING)
    for action in (Action.VARY_SUBTLE, Action.ZOOM_2X, Action.UPSCALE_CREATIVE):
        with pytest.raises(ImagineError, match="This image waits for a moderator's review"):
            await jobs.act(origin(), action, up.id, 0, FakeReply())


async def test_a_release_shows_the_clear_grid_and_frees_the_tile(
    jobs: JobService, replies: dict[int, FakeReply]
) -> None:
    job = await flagged_grid(jobs)
    released = await jobs.reviews.release(GUILD, job.id, by=MODERATOR)
    assert (released.review, released.reviewed_by) == (Review.RELEASED, MODERATOR)
    await jobs.idle()
    [view] = replies[job.id].delivered
    assert view.picture is not None and job.grid is not None
    clear = await jobs.store.load_image(job.grid)
    assert ImageChops.difference(view.picture, clear.convert("RGB")).getbbox() is None  # the file itself
    assert "flagged" not in review_note(view.job) and view.job.review is Review.RELEASED
    assert await jobs.reviews.waiting(GUILD) == []
    up = await jobs.act(origin(BOB, 600), Action.UPSCALE, job.id, 2, FakeReply())
    assert (await finished(jobs, up.id)).status is JobStatus.DONE
    [logged] = await jobs.store.moderation_log(GUILD)
    assert (logged.action, logged.actor_id, logged.target_id) == ("image.release", MODERATOR, ALICE)
    with pytest.raises(ImagineError, match="not waiting for a review: it was released"):
        await jobs.reviews.release(GUILD, job.id, by=MODERATOR)


async def test_a_removal_takes_the_job_down(jobs: JobService, replies: dict[int, FakeReply]) -> None:
    job = await flagged_grid(jobs)
    with pytest.raises(ImagineError, match=f"no job {job.id} on this server"):
        await jobs.reviews.remove(GUILD + 1, job.id, by=MODERATOR)  # a moderator of another server
    removed = await jobs.reviews.remove(GUILD, job.id, by=MODERATOR)
    assert removed.review is Review.REMOVED and removed.hidden and next_actions(removed) == ()
    await jobs.idle()
    [view] = replies[job.id].withdrawn  # the takedown's notice: no picture, no buttons
    assert view.job.hidden and view.job.review is Review.REMOVED
    for action, tile in ((Action.UPSCALE, 1), (Action.REROLL, 0)):
        with pytest.raises(ImagineError, match="A moderator took that image down"):
            await jobs.act(origin(BOB, 600), action, job.id, tile, FakeReply())
    assert await jobs.reviews.waiting(GUILD) == []
    log = [entry.action for entry in await jobs.store.moderation_log(GUILD)]
    assert log == ["image.take-down", "image.remove"]  # newest first
    with pytest.raises(ImagineError, match="it was removed"):
        await jobs.reviews.release(GUILD, job.id, by=MODERATOR)


async def test_a_review_replaces_a_first_delivery_still_retrying(
    jobs: JobService, replies: dict[int, FakeReply]
) -> None:
    """The message must end with what the moderator decided, not with the blurred grid arriving late."""
    slow = FakeReply(fail=10**6)  # Discord is down for this message
    job = await jobs.imagine(origin(), "a red circle --seed 5", slow)
    await until(lambda: slow.attempts >= 2, "two failed deliveries", timeout=30, seen=lambda: slow.attempts)
    await jobs.reviews.release(GUILD, job.id, by=MODERATOR)
    await jobs.idle()
    assert slow.delivered == []  # given up in favour of the new one
    [view] = replies[job.id].delivered
    assert view.job.review is Review.RELEASED
    stored = await jobs.store.get_job(job.id)
    assert stored is not None and stored.delivery is Delivery.DELIVERED


def _job(**fields: Any) -> Job:
    """A finished grid as the store would give it, with ``fields`` changed."""
    base: dict[str, Any] = dict(
        id=1, user_id=ALICE, guild_id=GUILD, channel_id=20, message_id=500, kind=JobKind.IMAGINE,
        parent_id=None, tile_index=None, prompt_text="a red circle", spec=GenerateSpec("a red circle"),
        status=JobStatus.DONE, error="", note="", images=("a", "b", "c", "d"), grid="g", charged=4,
        created_at=datetime.now(UTC), started_at=None, finished_at=None, elapsed_s=1.0, delivery=None,
        delivered_at=None,
    )  # fmt: skip
    return Job(**(base | fields))
