"""The job service without Discord: a real store and executor, a fake engine and a scripted delivery port.

What it must guarantee: a job's final state reaches its port through any number of failures, or is marked
gone or expired; progress is best effort and never holds up the final state; a restart resumes what was
running and delivers what was done; buttons derive the right job from their parent.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine

from imaginebot.actions import Action
from imaginebot.catalog import Catalog
from imaginebot.delivery import (
    DeliveryFailed,
    DeliveryPolicy,
    JobView,
    MessageGone,
    Posted,
    Update,
    Waiting,
    Working,
)
from imaginebot.errors import Forbidden, ImagineError, ParamError, QueueFull
from imaginebot.executor import Executor
from imaginebot.jobs import JobService, Origin
from imaginebot.params import RequestDefaults
from imaginebot.store import Store
from imaginebot.store_models import Delivery, Job, JobKind, JobStatus

GUILD, ALICE, BOB = 10, 1, 2
FAST = DeliveryPolicy(retry_base_s=0.001, retry_max_s=0.01, attempt_timeout_s=5.0)
DEFAULTS = RequestDefaults(steps=4, cfg=7.0, images=4)


@dataclass
class FakeReply:
    """The delivery port, scripted: ``fail`` failures before a delivery works, ``gone`` for a deleted
    message, ``hang`` to make an attempt (or a preview) never answer."""

    fail: int = 0
    gone: bool = False
    hang_deliveries: int = 0
    hang_previews: bool = False
    posts_new_message: Posted | None = None
    shown: list[Update] = field(default_factory=list)
    attempts: int = 0
    delivered: list[JobView] = field(default_factory=list)
    withdrawn: list[JobView] = field(default_factory=list)  # takedown notices
    order: list[str] = field(default_factory=list)
    previews_cancelled: int = 0

    async def show(self, view: JobView, update: Update) -> None:
        if self.gone:
            raise MessageGone("10008 Unknown Message")
        self.shown.append(update)
        self.order.append("show")
        if self.hang_previews:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.previews_cancelled += 1
                raise

    async def withdraw(self, view: JobView) -> None:
        if self.gone:
            raise MessageGone("10008 Unknown Message")
        self.withdrawn.append(view)

    async def deliver(self, view: JobView) -> Posted | None:
        self.attempts += 1
        self.order.append("deliver")
        if self.gone:
            raise MessageGone("10008 Unknown Message")
        if self.hang_deliveries:
            self.hang_deliveries -= 1
            await asyncio.Event().wait()
        if self.fail:
            self.fail -= 1
            raise DeliveryFailed("Discord answered 429 code 0: rate limited")
        self.delivered.append(view)
        return self.posts_new_message


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


Service = Callable[..., Any]


@pytest.fixture
async def service(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Service]:
    """``await service(**kwargs)``: a started JobService on a store in ``tmp_path`` (the same store file each
    time, so a second call after closing the first is a restart)."""
    opened: list[tuple[JobService, Executor, Store]] = []
    seeds = itertools.count(1000, 10)

    async def make(*, max_queued_per_user: int = 3, **options: Any) -> JobService:
        store = await Store.open(tmp_path, default_daily_images=100)
        executor = Executor(engine, max_queued_per_user=max_queued_per_user, preview_every=1)
        await executor.start()
        options.setdefault("delivery", FAST)
        options.setdefault("preview_min_interval", 0.0)
        jobs = JobService(
            store, executor, catalog=Catalog.single(64, DEFAULTS), seeds=lambda: next(seeds), **options
        )
        opened.append((jobs, executor, store))
        return jobs

    yield make
    for jobs, executor, store in opened:
        await jobs.close()
        await executor.stop()
        await store.close()


def origin(user: int = ALICE, message_id: int = 500) -> Origin:
    return Origin(user, GUILD, 20, message_id)


async def finished(jobs: JobService, job_id: int) -> Job:
    await jobs.idle()
    job = await jobs.store.get_job(job_id)
    assert job is not None
    return job


async def until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the condition never held")


async def ended(jobs: JobService, job_id: int) -> None:
    """Until the job has ended (its delivery may still be going on)."""
    for _ in range(500):
        job = await jobs.store.get_job(job_id)
        if job is not None and job.status.finished:
            return
        await asyncio.sleep(0.01)  # the store is polled: there is nothing to wait on
    raise TimeoutError(f"job {job_id} did not end")


async def ended_or_release(jobs: JobService, job_id: int, engine: FakeEngine) -> None:
    """Let the engine take one step at a time until the job has ended."""
    assert engine.permits is not None
    for _ in range(500):
        job = await jobs.store.get_job(job_id)
        if job is not None and job.status.finished:
            return
        engine.permits.release()
        await asyncio.sleep(0.01)
    raise TimeoutError(f"job {job_id} did not end")


async def test_a_job_is_queued_run_stored_and_delivered_with_its_grid(service: Service) -> None:
    jobs = await service()
    reply = FakeReply()
    job = await jobs.imagine(origin(), "a red circle --seed 5", reply)
    assert (job.status, job.message_id, job.spec.seeds) == (JobStatus.QUEUED, 500, (5, 6, 7, 8))
    done = await finished(jobs, job.id)
    assert done.status is JobStatus.DONE and done.delivery is Delivery.DELIVERED
    assert done.delivered_at is not None and len(done.images) == 4 and done.grid is not None
    [view] = reply.delivered
    assert view.job.status is JobStatus.DONE and view.picture is not None
    assert view.picture.width > 64 and view.picture.height > 64  # the 2x2 grid
    assert any(isinstance(u, Waiting) for u in reply.shown)
    assert [u.step for u in reply.shown if isinstance(u, Working)][-1] == 4
    assert reply.order[-1] == "deliver"  # no preview after the final state
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 4


async def test_the_final_state_survives_any_number_of_failures(service: Service) -> None:
    jobs = await service()
    reply = FakeReply(fail=25)
    job = await jobs.imagine(origin(), "a blue square", reply)
    done = await finished(jobs, job.id)
    assert reply.attempts == 26 and done.delivery is Delivery.DELIVERED


async def test_an_attempt_that_never_answers_is_cut_off_and_tried_again(service: Service) -> None:
    jobs = await service(delivery=DeliveryPolicy(retry_base_s=0.001, retry_max_s=0.01, attempt_timeout_s=0.2))
    reply = FakeReply(hang_deliveries=2)
    job = await jobs.imagine(origin(), "a blue square", reply)
    assert (await finished(jobs, job.id)).delivery is Delivery.DELIVERED
    assert reply.attempts == 3


async def test_delivery_gives_up_after_the_bound_and_says_so(service: Service) -> None:
    policy = DeliveryPolicy(give_up_after=timedelta(seconds=0.3), retry_base_s=0.01, retry_max_s=0.05)
    jobs = await service(delivery=policy)
    reply = FakeReply(fail=10**6)
    job = await jobs.imagine(origin(), "a blue square", reply)
    done = await finished(jobs, job.id)
    assert done.delivery is Delivery.EXPIRED and done.status is JobStatus.DONE
    assert 2 <= reply.attempts < 10**6


async def test_a_deleted_message_is_marked_gone_and_not_retried(service: Service, engine: FakeEngine) -> None:
    jobs = await service()
    engine.permits = threading.Semaphore(0)  # each step waits for a permit
    reply = FakeReply(gone=True)  # the user deleted the message
    job = await jobs.imagine(origin(), "a green star --steps 50", reply)
    await ended_or_release(jobs, job.id, engine)
    done = await finished(jobs, job.id)
    # the first progress update found the message gone: the job was cancelled and its quota given back
    assert done.status is JobStatus.CANCELLED and done.delivery is Delivery.GONE
    assert reply.attempts == 0 and (await jobs.store.quota_status(GUILD, ALICE)).used == 0


async def test_a_message_gone_at_delivery_is_not_retried(service: Service) -> None:
    jobs = await service()
    reply = FakeReply()

    async def gone(view: JobView) -> Posted | None:
        reply.attempts += 1
        raise MessageGone("10008 Unknown Message")

    reply.deliver = gone  # type: ignore[method-assign]
    job = await jobs.imagine(origin(), "a green star", reply)
    done = await finished(jobs, job.id)
    assert done.status is JobStatus.DONE and done.delivery is Delivery.GONE and reply.attempts == 1


async def test_stopping_the_service_stops_a_delivery_in_flight(service: Service) -> None:
    jobs = await service(delivery=DeliveryPolicy(retry_base_s=0.001, retry_max_s=0.01, attempt_timeout_s=600))
    reply = FakeReply(hang_deliveries=1)  # Discord never answers the first try
    job = await jobs.imagine(origin(), "a blue square", reply)
    await until(lambda: reply.attempts > 0)
    await asyncio.wait_for(jobs.close(), 5)  # the bot stops: nothing may hold it up
    stored = await jobs.store.get_job(job.id)
    assert stored is not None and stored.delivery is Delivery.PENDING  # for the next start
    assert reply.attempts == 1


async def test_a_job_whose_following_breaks_is_failed_refunded_and_told(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = await service()

    async def disk_full(job_id: int, *args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs.store, "complete_job", disk_full)
    reply = FakeReply()
    job = await jobs.imagine(origin(), "a blue square", reply)
    done = await finished(jobs, job.id)
    assert (done.status, done.delivery) == (JobStatus.FAILED, Delivery.DELIVERED)
    assert "went wrong" in done.error and reply.delivered[0].job.status is JobStatus.FAILED
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 0


async def test_a_preview_in_flight_never_holds_up_the_final_state(service: Service) -> None:
    jobs = await service()
    reply = FakeReply(hang_previews=True)  # every preview edit hangs (a 429 being slept through)
    job = await jobs.imagine(origin(), "a white moon", reply)
    done = await finished(jobs, job.id)
    assert done.delivery is Delivery.DELIVERED and len(reply.delivered) == 1
    assert reply.previews_cancelled == 1  # the one in flight was dropped
    assert len(reply.shown) == 1  # and none was queued up behind it


async def test_a_new_message_posted_in_place_of_the_old_one_is_recorded(service: Service) -> None:
    jobs = await service()
    job = await jobs.imagine(origin(), "a red circle", FakeReply(posts_new_message=Posted(88, 777)))
    done = await finished(jobs, job.id)
    assert done.delivery is Delivery.DELIVERED and (done.channel_id, done.message_id) == (88, 777)


async def test_failed_and_cancelled_jobs_are_delivered_too(service: Service, engine: FakeEngine) -> None:
    jobs = await service()
    failing = FakeReply(fail=3)
    failed = await jobs.imagine(origin(), "oom", failing)
    done = await finished(jobs, failed.id)
    assert done.status is JobStatus.FAILED and "ran out of memory" in done.error
    assert done.delivery is Delivery.DELIVERED and failing.delivered[0].job.status is JobStatus.FAILED
    assert failing.delivered[0].picture is None

    engine.gate.clear()
    reply = FakeReply()
    job = await jobs.imagine(origin(), "a purple star", reply)
    with pytest.raises(Forbidden, match="Only the author"):
        await jobs.cancel(job.id, BOB, moderator=False)
    with pytest.raises(ImagineError, match="no longer known"):
        await jobs.cancel(9999, ALICE, moderator=True)
    assert await jobs.cancel(job.id, BOB, moderator=True)
    engine.gate.set()
    done = await finished(jobs, job.id)
    assert done.status is JobStatus.CANCELLED and done.delivery is Delivery.DELIVERED
    assert not await jobs.cancel(job.id, ALICE, moderator=False)  # it has ended
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 0


async def test_a_full_queue_refuses_and_leaves_nothing_to_deliver(
    service: Service, engine: FakeEngine
) -> None:
    jobs = await service(max_queued_per_user=1)
    engine.gate.clear()
    await jobs.imagine(origin(), "one", FakeReply())
    await until(lambda: bool(engine.calls))  # the first starts (and waits at the gate): the next ones queue
    await jobs.imagine(origin(), "two", FakeReply())
    with pytest.raises(QueueFull):
        await jobs.imagine(origin(), "three", FakeReply())
    refused = (await jobs.store.recent_jobs(GUILD, ALICE))[0]
    assert refused.spec.prompt == "three"
    assert (refused.status, refused.delivery) == (JobStatus.CANCELLED, Delivery.DELIVERED)
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 8
    engine.gate.set()


async def test_a_restart_delivers_what_was_done_and_resumes_what_was_running(
    service: Service, engine: FakeEngine
) -> None:
    first = await service()
    delivered_late = await first.imagine(
        origin(message_id=501), "done before the stop", FakeReply(fail=10**6)
    )
    await ended(first, delivered_late.id)
    engine.gate.clear()
    cut_off = await first.imagine(origin(message_id=502), "running at the stop", FakeReply())
    await asyncio.sleep(0.05)
    # the bot stops: the service first (as bot.py does), then the executor
    await first.close()
    stopping = asyncio.create_task(first.executor.stop())  # cancels the running job at its next step
    await asyncio.sleep(0.05)
    engine.gate.set()
    await stopping
    await first.store.close()

    second = await service()
    leftovers = await second.leftovers()
    assert [j.id for j in leftovers.undelivered] == [delivered_late.id]
    assert [j.id for j in leftovers.unfinished] == [cut_off.id]
    replies: dict[int, FakeReply] = {}

    def reply_for(job: Job) -> FakeReply:
        return replies.setdefault(job.id, FakeReply())

    await second.resume(leftovers, reply_for)
    await second.idle()
    for job_id in (delivered_late.id, cut_off.id):
        job = await second.store.get_job(job_id)
        assert job is not None and job.status is JobStatus.DONE and job.delivery is Delivery.DELIVERED
        assert len(replies[job_id].delivered) == 1
    assert (await second.store.quota_status(GUILD, ALICE)).used == 8  # charged once each


async def test_a_job_past_the_bound_at_start_gets_one_more_try(service: Service) -> None:
    first = await service()
    job = await first.imagine(origin(), "old", FakeReply(fail=10**6))
    await ended(first, job.id)
    await first.close()
    second = await service(delivery=DeliveryPolicy(give_up_after=timedelta(0), retry_base_s=0.001))
    reply = FakeReply(fail=1)
    await second.resume(await second.leftovers(), lambda job: reply)
    await second.idle()
    assert reply.attempts == 1
    assert (await second.store.get_job(job.id)).delivery is Delivery.EXPIRED  # type: ignore[union-attr]


async def grid(jobs: JobService, prompt: str = "a red circle --seed 100") -> Job:
    job = await jobs.imagine(origin(), prompt, FakeReply())
    return await finished(jobs, job.id)


async def test_upscale_takes_its_tile_and_its_seed(service: Service, engine: FakeEngine) -> None:
    jobs = await service()
    parent = await grid(jobs)
    up = await jobs.act(origin(BOB, 600), Action.UPSCALE, parent.id, 2, FakeReply())
    done = await finished(jobs, up.id)
    assert (done.kind, done.parent_id, done.tile_index, done.user_id) == (JobKind.UPSCALE, parent.id, 1, BOB)
    assert done.spec.seeds == (101,) and "--seed 101" in done.prompt_text and "--images 1" in done.prompt_text
    assert engine.calls[-1][0] == "upscale" and engine.specs[-1].init_image is not None
    assert (await jobs.store.quota_status(GUILD, BOB)).used == 1


async def test_a_variation_counts_the_steps_it_runs_from_its_first_message(
    service: Service, engine: FakeEngine
) -> None:
    jobs = await service()
    parent = await grid(jobs)  # 4 steps asked; a variation runs the last 0.6 of them: 2
    reply = FakeReply()
    engine.gate.clear()  # the job starts, and waits before its first step
    job = await jobs.act(origin(), Action.VARY, parent.id, 1, reply)
    await until(lambda: any(isinstance(u, Working) for u in reply.shown))
    engine.gate.set()
    await finished(jobs, job.id)
    working = [(u.step, u.total) for u in reply.shown if isinstance(u, Working)]
    assert working[0] == (0, 2) and {total for _, total in working} == {2}, working


async def test_variations_reroll_and_vary_subtle(service: Service, engine: FakeEngine) -> None:
    jobs = await service()
    parent = await grid(jobs)
    var = await finished(jobs, (await jobs.act(origin(), Action.VARY, parent.id, 3, FakeReply())).id)
    assert (var.kind, var.tile_index, var.spec.seeds, var.spec.strength) == (
        JobKind.VARIATION,
        2,
        (1000, 1001, 1002, 1003),
        None,  # the engine's choice
    )
    assert engine.calls[-1][0] == "vary"
    reroll = await finished(jobs, (await jobs.act(origin(), Action.REROLL, parent.id, 0, FakeReply())).id)
    assert reroll.kind is JobKind.REROLL and reroll.spec.prompt == "a red circle"
    assert reroll.spec.seeds == (1010, 1011, 1012, 1013) and "--seed 1010" in reroll.prompt_text

    up = await finished(jobs, (await jobs.act(origin(), Action.UPSCALE, parent.id, 1, FakeReply())).id)
    subtle = await finished(jobs, (await jobs.act(origin(), Action.VARY_SUBTLE, up.id, 0, FakeReply())).id)
    strong = await finished(jobs, (await jobs.act(origin(), Action.VARY_STRONG, up.id, 0, FakeReply())).id)
    assert (subtle.kind, subtle.parent_id, subtle.tile_index) == (JobKind.VARIATION, up.id, 0)
    assert (subtle.spec.strength, strong.spec.strength) == (0.35, 0.75)
    assert (subtle.spec.width, subtle.spec.height) == (64, 64)  # the upscaled picture's size


async def test_retry_runs_the_very_same_job_and_only_after_a_failure(service: Service) -> None:
    jobs = await service()
    failed = await grid(jobs, "oom --seed 77")
    again = await jobs.act(origin(), Action.RETRY, failed.id, 0, FakeReply())
    assert (again.kind, again.spec, again.prompt_text) == (failed.kind, failed.spec, failed.prompt_text)
    done = await grid(jobs)
    with pytest.raises(ImagineError, match="did not fail"):
        await jobs.act(origin(), Action.RETRY, done.id, 0, FakeReply())


async def test_buttons_that_cannot_apply_are_refused_with_a_reason(
    service: Service, engine: FakeEngine
) -> None:
    jobs = await service()
    parent = await grid(jobs)
    with pytest.raises(ImagineError, match="no image 5"):
        await jobs.act(origin(), Action.UPSCALE, parent.id, 5, FakeReply())
    with pytest.raises(ImagineError, match="no longer known"):
        await jobs.act(origin(), Action.VARY, 9999, 1, FakeReply())
    engine.gate.clear()
    running = await jobs.imagine(origin(), "still running", FakeReply())
    with pytest.raises(ImagineError, match="no images yet"):
        await jobs.act(origin(), Action.VARY, running.id, 1, FakeReply())
    engine.gate.set()
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 8  # the refusals cost nothing


async def test_banned_words_are_compared_case_folded(service: Service) -> None:
    jobs = await service()
    await jobs.store.add_banned_word(GUILD, "Straße", by=99)
    for prompt in ("a STRASSE at night", "eine straße", "a cat --no Straße"):
        with pytest.raises(ParamError, match="'strasse'"):
            await jobs.imagine(origin(), prompt, FakeReply())
    assert await jobs.store.recent_jobs(GUILD, ALICE) == []
    assert await jobs.store.remove_banned_word(GUILD, "STRASSE", by=99)


async def test_bad_prompts_and_blocked_users_cost_nothing(service: Service) -> None:
    jobs = await service()
    with pytest.raises(ParamError, match="Did you mean --steps"):
        await jobs.imagine(origin(), "an otter --stpes 5", FakeReply())
    await jobs.store.block_user(GUILD, BOB, by=99)
    with pytest.raises(Forbidden, match="blocked"):
        await jobs.imagine(origin(BOB), "an otter", FakeReply())
    assert await jobs.store.recent_jobs(GUILD, ALICE) == [] and await jobs.store.recent_jobs(GUILD, BOB) == []


async def test_cancel_user_cancels_queued_and_running_jobs(service: Service, engine: FakeEngine) -> None:
    jobs = await service()
    engine.gate.clear()
    ids = [(await jobs.imagine(origin(BOB), f"job {i}", FakeReply())).id for i in range(3)]
    assert await jobs.cancel_user(GUILD + 1, BOB) == 0  # blocked on another server: these stay
    assert await jobs.cancel_user(GUILD, BOB) == 3
    engine.gate.set()
    for job_id in ids:
        assert (await finished(jobs, job_id)).status is JobStatus.CANCELLED


async def test_an_upscale_whose_source_picture_is_gone_is_refused(service: Service, tmp_path: Path) -> None:
    jobs = await service()
    parent = await grid(jobs)
    (tmp_path / parent.images[1]).unlink()
    with pytest.raises(ImagineError, match="is gone"):
        await jobs.act(origin(), Action.UPSCALE, parent.id, 2, FakeReply())
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 4  # given back
