"""The job service's side of Midjourney's habits, without Discord: a prompt prepared into its jobs, a batch
asked, confirmed (all or none) or declined, relax jobs through the service and a restart."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine
from PIL import Image
from waiting import until, within

from imaginebot.actions import Action, Tweak
from imaginebot.batches import Batches
from imaginebot.catalog import Catalog
from imaginebot.delivery import DeliveryFailed, DeliveryPolicy, JobView, Posted, Update
from imaginebot.errors import Forbidden, ImagineError, ParamError, QueueFull, QuotaExceeded
from imaginebot.executor import Executor
from imaginebot.jobs import JobService, Origin
from imaginebot.params import RequestDefaults
from imaginebot.store import Store
from imaginebot.store_models import Delivery, Job, JobStatus, UserSettings

GUILD, ALICE, BOB, MOD = 10, 1, 2, 99
DEFAULTS = RequestDefaults(steps=2, cfg=7.0, images=4)
WHERE = Origin(ALICE, GUILD, 20, 0)


@dataclass
class Reply:
    """The delivery port: records what the job's message showed."""

    delivered: list[JobView] = field(default_factory=list)

    async def show(self, view: JobView, update: Update) -> None:
        pass

    async def deliver(self, view: JobView) -> Posted | None:
        self.delivered.append(view)
        return None


@dataclass
class Messages:
    """``open_message`` for a confirmed batch: message ids from 1000, one Reply each; ``fail_at``: the
    n-th message (0-based) Discord refuses."""

    fail_at: int | None = None
    opened: list[tuple[int, Reply]] = field(default_factory=list)

    async def __call__(self, job: Job) -> tuple[int, Reply]:
        if self.fail_at is not None and len(self.opened) == self.fail_at:
            raise DeliveryFailed("Discord answered 503")
        self.opened.append((1000 + len(self.opened), Reply()))
        return self.opened[-1]


async def running(jobs: JobService, job: Job) -> None:
    """Until the worker has taken ``job`` (held in the engine's gate); a time-out shows the queue."""
    await until(
        lambda: any(e.job_id == job.id for e in jobs.queue().running),
        f"job {job.id} to start",
        timeout=60,
        seen=jobs.queue,
    )


async def settled(jobs: JobService) -> None:
    """Until every job the service follows is delivered; a time-out shows the queue."""
    await within(jobs.idle(), "every job delivered", timeout=60, seen=jobs.queue)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()  # one job at a time


Service = Callable[..., Any]


@pytest.fixture
async def service(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Service]:
    """``await service(**kwargs)``: a JobService on a store in ``tmp_path`` (a second call after closing the
    first is a restart)."""
    opened: list[tuple[JobService, Executor, Store]] = []
    seeds = itertools.count(1000, 10)

    async def make(*, quota: int = 100, max_queued_per_user: int = 3, **options: Any) -> JobService:
        store = await Store.open(tmp_path, default_daily_images=quota)
        executor = Executor(engine, max_queued_per_user=max_queued_per_user, preview_every=1)
        await executor.start()
        options.setdefault("delivery", DeliveryPolicy(retry_base_s=0.001, retry_max_s=0.01))
        jobs = JobService(
            store, executor, catalog=Catalog.single(64, DEFAULTS), seeds=lambda: next(seeds), **options
        )
        opened.append((jobs, executor, store))
        return jobs

    yield make
    engine.gate.set()  # a test that failed while holding the worker must not hang the executor's stop
    for jobs, executor, store in opened:
        await jobs.close()
        await executor.stop()
        await store.close()


async def test_prepare_expands_shortcuts_suffix_permutations_and_repeats(service: Service) -> None:
    jobs = await service()
    await jobs.store.set_prefer_option(ALICE, "wide", "--ar 2:1")
    await jobs.store.set_prefer_suffix(ALICE, "in the rain --steps 3 --seed 50")
    prepared = await jobs.prepare(ALICE, "a {red, blue} car --wide --repeat 2 --seed 7")
    assert prepared.prompts == 2 and len(prepared.requests) == 4 and prepared.images == 16
    assert [(r.prompt, r.seed) for r in prepared.requests] == [
        ("a red car in the rain", 7),
        ("a red car in the rain", 11),  # --repeat with a given seed: the seeds after the grid's
        ("a blue car in the rain", 7),
        ("a blue car in the rain", 11),
    ]
    assert all(r.aspect == (2, 1) and r.steps == 3 and r.repeat == 1 for r in prepared.requests)
    with pytest.raises(ParamError, match="--iw weighs an image prompt"):
        await jobs.prepare(ALICE, "a {red, blue} car --iw 2")
    picture = io.BytesIO()
    Image.new("RGB", (200, 100)).save(picture, "PNG")
    with_image = await jobs.prepare(ALICE, "a {red, blue --ar 1:1} car", image=picture.getvalue())
    # an image prompt's shape where a permutation gives no --ar
    assert [r.aspect for r in with_image.requests] == [(2, 1), (1, 1)] and with_image.picture is not None
    with pytest.raises(ParamError, match=r"makes 24 jobs \(4 prompts from its \{ \} options with --repeat\)"):
        await jobs.prepare(ALICE, "a {red, blue} car --r {2, 10}")
    with pytest.raises(ParamError, match="they are queued once you say Yes"):
        await jobs.imagine(WHERE, "a {red, blue} car", Reply())


async def test_ask_then_yes_queues_and_delivers_every_job(service: Service) -> None:
    jobs = await service()
    batches = Batches(jobs)
    question = await batches.ask(WHERE, await jobs.prepare(ALICE, "a {red, blue, green} kite --seed 3"))
    assert (question.jobs, question.images, question.permutations, question.relax_jobs) == (3, 12, 3, 0)
    assert question.prompts[0].startswith("a red kite --ar 1:1 --steps 2")
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 0  # asking takes nothing
    messages = Messages()
    queued = await batches.confirm(question.batch_id, ALICE, messages)
    assert [job.message_id for job in queued] == [1000, 1001, 1002]
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 12
    await settled(jobs)
    for job, (_, reply) in zip(queued, messages.opened, strict=True):
        done = await jobs.store.get_job(job.id)
        assert done is not None and done.status is JobStatus.DONE and done.delivery is Delivery.DELIVERED
        assert [view.job.id for view in reply.delivered] == [job.id]
    with pytest.raises(ImagineError, match="said Yes to that one already"):
        await batches.confirm(question.batch_id, ALICE, Messages())
    with pytest.raises(ImagineError, match="said Yes"):
        await batches.decline(question.batch_id, ALICE)
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 12


async def test_no_someone_elses_and_expired_questions(service: Service, tmp_path: Path) -> None:
    jobs = await service()
    clock = Clock()
    batches = Batches(jobs, clock=clock)
    picture = io.BytesIO()
    Image.new("RGB", (64, 64)).save(picture, "PNG")
    prepared = await jobs.prepare(ALICE, "a {cat, dog}", image=picture.getvalue())
    declined = await batches.ask(WHERE, prepared)
    source = await jobs.store.get_batch(declined.batch_id)
    assert source is not None and source.source is not None and (tmp_path / source.source).exists()
    with pytest.raises(Forbidden, match="someone else's"):
        await batches.confirm(declined.batch_id, BOB, Messages())
    await batches.decline(declined.batch_id, ALICE)
    assert not (tmp_path / source.source).exists()  # the picture nobody will use is gone
    with pytest.raises(ImagineError, match="You said No"):
        await batches.confirm(declined.batch_id, ALICE, Messages())
    late = await batches.ask(WHERE, await jobs.prepare(ALICE, "a {cat, dog}"))
    clock.now += timedelta(hours=1, minutes=1)
    with pytest.raises(ImagineError, match="expired: it was asked more than an hour ago"):
        await batches.confirm(late.batch_id, ALICE, Messages())
    with pytest.raises(ImagineError, match="no longer known"):
        await batches.confirm(12345, ALICE, Messages())
    assert await jobs.store.recent_jobs(GUILD, ALICE) == []
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 0


async def test_refusals_before_asking_and_at_yes_take_nothing(service: Service, engine: FakeEngine) -> None:
    jobs = await service(quota=10, max_queued_per_user=2)
    batches = Batches(jobs)
    with pytest.raises(QuotaExceeded, match="needs 12 images"):
        await batches.ask(WHERE, await jobs.prepare(ALICE, "an owl --repeat 3"))
    await jobs.store.add_banned_word(GUILD, "owl", by=MOD)
    with pytest.raises(ParamError, match="'owl'"):
        await batches.ask(WHERE, await jobs.prepare(ALICE, "a {cat, owl}"))
    question = await batches.ask(WHERE, await jobs.prepare(ALICE, "a {cat, dog} --images 1"))
    engine.gate.clear()  # what runs holds: what is queued waits
    await running(jobs, await jobs.imagine(Origin(ALICE, GUILD, 20, 500), "one --images 1", Reply()))
    for prompt in ("two --images 1", "three --images 1"):  # two waiting: the cap
        await jobs.imagine(Origin(ALICE, GUILD, 20, 500), prompt, Reply())
    used = (await jobs.store.quota_status(GUILD, ALICE)).used
    with pytest.raises(QueueFull, match="most allowed is 2"):  # the queue filled up before the Yes
        await batches.confirm(question.batch_id, ALICE, Messages())
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == used
    engine.gate.set()
    await settled(jobs)
    assert (
        len(await batches.confirm(question.batch_id, ALICE, Messages())) == 2
    )  # still askable: no harm done


async def test_a_message_discord_refuses_cancels_the_jobs_left_without_one(service: Service) -> None:
    jobs = await service()
    question = await Batches(jobs).ask(WHERE, await jobs.prepare(ALICE, "a {cat, dog, fox} --images 1"))
    messages = Messages(fail_at=1)
    with pytest.raises(ImagineError, match="1 of 3 jobs were queued; the others were cancelled"):
        await Batches(jobs).confirm(question.batch_id, ALICE, messages)
    await settled(jobs)
    states = [(job.status, job.delivery) for job in reversed(await jobs.store.recent_jobs(GUILD, ALICE))]
    assert states == [
        (JobStatus.DONE, Delivery.DELIVERED),
        (JobStatus.CANCELLED, Delivery.GONE),
        (JobStatus.CANCELLED, Delivery.GONE),
    ]
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 1  # the cancelled ones gave theirs back


async def test_relax_through_the_service_and_a_restart(service: Service, engine: FakeEngine) -> None:
    first = await service(quota=4)
    await first.store.set_relax(GUILD, True, by=MOD)
    engine.gate.clear()
    running = await first.imagine(Origin(ALICE, GUILD, 20, 500), "a cat", Reply())  # takes the 4 images
    relaxed = await first.imagine(Origin(ALICE, GUILD, 20, 501), "a dog", Reply())  # out of quota: relax
    chosen = await first.imagine(Origin(BOB, GUILD, 20, 502), "a fox --relax", Reply())
    assert (running.relax, relaxed.relax, chosen.relax) == (False, True, True)
    await first.store.save_settings(BOB, UserSettings(relax=True))
    by_setting = await first.imagine(Origin(BOB, GUILD, 20, 503), "an owl", Reply())
    fast = await first.imagine(Origin(BOB, GUILD, 20, 504), "an eel --fast", Reply())
    assert (by_setting.relax, fast.relax) == (True, False)
    assert (await first.store.quota_status(GUILD, BOB)).used == 4  # only the --fast one
    await first.close()
    stopping = asyncio.create_task(first.executor.stop())
    await asyncio.sleep(0)  # stop() has flagged the running job; let the engine reach its step
    engine.gate.set()
    await stopping
    await first.store.close()

    engine.gate.clear()
    second = await service(quota=4)
    await second.resume(await second.leftovers(), lambda job: Reply())
    waiting = [entry.job_id for entry in second.queue().queued]
    # after the restart the relax jobs are still relax: every fast job goes first
    assert waiting.index(fast.id) < min(waiting.index(i) for i in (relaxed.id, chosen.id, by_setting.id))
    engine.gate.set()
    await settled(second)
    for job_id in (relaxed.id, chosen.id, by_setting.id):
        job = await second.store.get_job(job_id)
        assert job is not None and job.relax and job.status is JobStatus.DONE and job.charged == 0


async def test_an_edited_prompt_takes_shortcuts_but_no_repeat(service: Service) -> None:
    jobs = await service()
    await jobs.store.set_prefer_option(ALICE, "wide", "--ar 2:1")
    parent = await jobs.imagine(Origin(ALICE, GUILD, 20, 500), "a kite --seed 1", Reply())
    await settled(jobs)
    remixed = await jobs.act(
        Origin(ALICE, GUILD, 20, 501), Action.REROLL, parent.id, 0, Reply(), Tweak(prompt="a kite --wide")
    )
    assert remixed.spec.width > remixed.spec.height
    with pytest.raises(ParamError, match="a button makes one"):
        await jobs.act(
            Origin(ALICE, GUILD, 20, 502), Action.REROLL, parent.id, 0, Reply(), Tweak(prompt="a kite --r 2")
        )


async def test_a_queue_filled_while_the_messages_open_cancels_the_whole_batch(
    service: Service, engine: FakeEngine
) -> None:
    jobs = await service(max_queued_per_user=2)
    batches = Batches(jobs)
    question = await batches.ask(WHERE, await jobs.prepare(ALICE, "a {cat, dog} --images 1"))
    engine.gate.clear()  # what runs holds: what is queued waits

    class Racing(Messages):
        async def __call__(self, job: Job) -> tuple[int, Reply]:
            if not self.opened:  # the student sends three more /imagine meanwhile: one runs, two wait
                more = [Origin(ALICE, GUILD, 20, 600 + i) for i in range(3)]
                await running(jobs, await jobs.imagine(more[0], "more 0 --images 1", Reply()))
                for i in (1, 2):
                    await jobs.imagine(more[i], f"more {i} --images 1", Reply())
            return await super().__call__(job)

    messages = Racing()
    with pytest.raises(QueueFull, match="most allowed is 2"):
        await batches.confirm(question.batch_id, ALICE, messages)
    engine.gate.set()
    await settled(jobs)
    for _, reply in messages.opened:  # none of the batch was queued, and each of its messages says why
        [view] = reply.delivered
        assert view.job.status is JobStatus.CANCELLED and "most allowed is 2" in view.job.error
    assert (await jobs.store.quota_status(GUILD, ALICE)).used == 3  # the three singles only
