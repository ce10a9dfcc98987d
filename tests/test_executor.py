from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from fakes import FakeEngine
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from waiting import within

from imaginebot.engine.api import (
    GenerateSpec,
)
from imaginebot.errors import QueueFull
from imaginebot.executor import (
    UNEXPECTED_ERROR,
    Cancelled,
    Done,
    Event,
    Executor,
    Failed,
    Interrupted,
    JobHandle,
    JobRequest,
    Progress,
    Queued,
    Started,
)
from imaginebot.store_models import JobKind

A, B, C = 1, 2, 3


def request(job_id: int, user: int, prompt: str = "", steps: int = 2, **kw: object) -> JobRequest:
    kind = kw.pop("kind", JobKind.IMAGINE)
    spec = GenerateSpec(
        prompt or f"job {job_id}", width=8, height=8, num_inference_steps=steps, seeds=(1, 2), **kw
    )  # type: ignore[arg-type]
    return JobRequest(job_id, user, kind, spec)  # type: ignore[arg-type]


async def first(handle: JobHandle, kind: type[Event]) -> Event:
    """Consume the job's events up to the first of ``kind``."""
    async for event in handle.events():
        if isinstance(event, kind):
            return event
    raise AssertionError(f"job {handle.job_id} ended without {kind.__name__}")


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def executor(engine: FakeEngine) -> AsyncIterator[Executor]:
    ex = Executor(engine, max_queued_per_user=10, preview_every=1)
    await ex.start()
    yield ex
    engine.gate.set()  # a test that failed while holding the worker must not hang stop()
    await ex.stop()


async def collect(handle: JobHandle) -> list[Event]:
    return [event async for event in handle.events()]


async def test_a_job_runs_through_queued_started_progress_done(executor: Executor) -> None:
    handle = executor.submit(request(1, A, steps=3))
    events = await collect(handle)
    assert events[0] == Queued(1, 1) and events[1] == Started(1) and isinstance(events[-1], Done)
    previews = [e.preview.step for e in events if isinstance(e, Progress)]
    assert previews and previews == sorted(previews) and previews[-1] == 3
    assert len(events) == 3 + len(previews)
    done = events[-1]
    assert isinstance(done, Done) and done.result.seeds == (1, 2) and len(done.result.images) == 2
    assert handle.final == done and await handle.wait() == done


async def test_round_robin_lets_the_second_user_in_between(executor: Executor, engine: FakeEngine) -> None:
    engine.gate.clear()
    a1 = executor.submit(request(1, A))
    await first(a1, Started)  # the worker is now holding A's first job
    handles = [executor.submit(request(i, A)) for i in range(2, 11)]
    handles += [executor.submit(request(i, B)) for i in (11, 12)]
    handles += [executor.submit(request(13, C))]
    expected = [11, 13, 2, 12, 3, 4, 5, 6, 7, 8, 9, 10]  # B and C never served: first; then turns
    assert sorted(executor.positions(), key=executor.positions().get) == expected
    snapshot = executor.queue_snapshot()
    assert [e.job_id for e in snapshot.running] == [1] and [e.job_id for e in snapshot.queued] == expected
    assert [e.position for e in snapshot.queued] == list(range(1, 13))
    await asyncio.sleep(0)  # one turn of the loop runs the deliveries submit() scheduled (order, not timing)
    assert {h.job_id: h.position for h in handles} == executor.positions()
    engine.gate.set()
    await asyncio.gather(a1.wait(), *(h.wait() for h in handles))
    assert [int(prompt.split()[1]) for _, prompt in engine.calls] == [1, *expected]


async def test_positions_sent_as_the_queue_moves(executor: Executor, engine: FakeEngine) -> None:
    engine.gate.clear()
    running = executor.submit(request(1, A))
    await first(running, Started)
    sent: dict[int, list[Queued]] = {2: [], 3: [], 4: []}

    def record(event: Event) -> None:
        if isinstance(event, Queued):
            sent[event.job_id].append(event)

    handles = [executor.submit(request(i, user), on_event=record) for i, user in ((2, B), (3, C), (4, A))]
    engine.gate.set()
    await asyncio.gather(*(h.wait() for h in handles))
    # Told when queued and again each time the queue moves (on_event sees them before coalescing), and
    # when a start time can first be estimated (job 1's step was the first one timed)
    positions = {
        job: [p for p, _ in itertools.groupby(e.position for e in events)] for job, events in sent.items()
    }
    assert positions == {2: [1], 3: [2, 1], 4: [3, 2, 1]}
    for events in sent.values():
        assert events[0].eta_s is None and events[-1].eta_s is not None
    assert [prompt for _, prompt in engine.calls] == ["job 1", "job 2", "job 3", "job 4"]


async def test_cap_on_queued_jobs_per_user(engine: FakeEngine) -> None:
    engine.gate.clear()
    async with Executor(engine, max_queued_per_user=3) as ex:
        running = ex.submit(request(1, A))
        await first(running, Started)  # a running job doesn't count towards the cap
        queued = [ex.submit(request(i, A)) for i in (2, 3, 4)]
        with pytest.raises(QueueFull, match="most allowed is 3"):
            ex.submit(request(5, A))
        ex.submit(request(6, B))  # other users are not affected
        assert ex.cancel(3)
        ex.submit(request(5, A))  # room again
        with pytest.raises(ValueError, match="already queued"):
            ex.submit(request(2, B))
        engine.gate.set()
        assert await queued[1].wait() == Cancelled(3)


async def test_cancel_a_queued_job_moves_the_others_up(executor: Executor, engine: FakeEngine) -> None:
    engine.gate.clear()
    running = executor.submit(request(1, A))
    await first(running, Started)
    doomed, behind = executor.submit(request(2, A)), executor.submit(request(3, A))
    assert executor.positions() == {2: 1, 3: 2}
    assert executor.cancel(2)
    assert not executor.cancel(2)
    assert executor.positions() == {3: 1}
    assert await collect(doomed) == [Queued(2, 1), Cancelled(2)]
    assert await first(behind, Queued) == Queued(3, 1)  # the 2 was coalesced into the newer 1
    engine.gate.set()
    assert isinstance(await behind.wait(), Done)
    assert [prompt for _, prompt in engine.calls] == ["job 1", "job 3"]


async def test_cancel_a_running_job_between_steps() -> None:
    engine = FakeEngine(steps_per_permit=True)
    async with Executor(engine, preview_every=1) as ex:
        running, nxt = ex.submit(request(1, A, steps=50)), ex.submit(request(2, B, steps=1))
        engine.permits.release()  # type: ignore[union-attr]
        await first(running, Progress)  # step 1 done; the engine now waits for the next permit
        assert ex.cancel(1)
        engine.permits.release(2)  # type: ignore[union-attr]  # one for job 1's check, one for job 2
        assert await running.wait() == Cancelled(1)
        assert isinstance(await nxt.wait(), Done)


async def test_out_of_memory_fails_the_job_and_the_worker_carries_on(executor: Executor) -> None:
    oom, bug, fine = (
        executor.submit(request(i, A, prompt=p)) for i, p in ((1, "oom"), (2, "bug"), (3, "ok"))
    )
    failed = await oom.wait()
    assert isinstance(failed, Failed) and failed.out_of_memory and "out of memory" in failed.message
    assert await bug.wait() == Failed(2, UNEXPECTED_ERROR)
    assert isinstance(await fine.wait(), Done)


async def test_events_are_delivered_on_the_loop_thread(executor: Executor, engine: FakeEngine) -> None:
    asyncio.get_running_loop().set_debug(True)  # asyncio itself then rejects call_soon from other threads
    threads: list[int] = []
    handle = executor.submit(request(1, A, steps=5), on_event=lambda e: threads.append(threading.get_ident()))
    async with asyncio.timeout(30):  # a guard: a dropped event would otherwise hang the test
        events = await collect(handle)
    assert len(threads) >= len(events) >= 4
    assert set(threads) == {threading.get_ident()}
    assert engine.threads and threading.get_ident() not in engine.threads


async def test_a_slow_consumer_only_gets_the_latest_preview() -> None:
    engine = FakeEngine(steps_per_permit=True)
    delivered = asyncio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, Progress):
            delivered.set()

    async with Executor(engine, preview_every=1) as ex:
        handle = ex.submit(request(1, A, steps=20), on_event=on_event)
        for _ in range(20):  # one step at a time: every preview reaches the loop, nobody reads events()
            delivered.clear()
            engine.permits.release()  # type: ignore[union-attr]
            await delivered.wait()
        await handle.wait()
    events = await collect(handle)
    assert [type(e) for e in events] == [Queued, Started, Progress, Done]
    progress = events[2]
    assert isinstance(progress, Progress) and progress.preview.step == 20


async def test_stop_returns_the_unfinished_jobs(engine: FakeEngine) -> None:
    engine.gate.clear()
    ex = Executor(engine)
    await ex.start()
    running = ex.submit(request(1, A))
    await first(running, Started)
    q1, q2 = ex.submit(request(2, A)), ex.submit(request(3, B))
    stopping = asyncio.ensure_future(ex.stop())
    await asyncio.sleep(0)  # stop() has flagged the running job; let the engine reach its step
    engine.gate.set()
    unfinished = await stopping
    assert [r.job_id for r in unfinished] == [1, 3, 2]  # running first, then the queue in order
    assert [await h.wait() for h in (running, q1, q2)] == [Interrupted(1), Interrupted(2), Interrupted(3)]
    with pytest.raises(RuntimeError):
        ex.submit(request(4, A))


async def test_stop_can_let_the_running_job_finish(engine: FakeEngine) -> None:
    engine.gate.clear()
    ex = Executor(engine)
    await ex.start()
    running = ex.submit(request(1, A))
    await first(running, Started)
    queued = ex.submit(request(2, A))
    stopping = asyncio.ensure_future(ex.stop(cancel_running=False))
    await asyncio.sleep(0)
    engine.gate.set()
    assert [r.job_id for r in await stopping] == [2]
    assert isinstance(await running.wait(), Done) and await queued.wait() == Interrupted(2)


async def test_variations_and_upscales_get_the_source_tile(executor: Executor, engine: FakeEngine) -> None:
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    vary = executor.submit(request(1, A, kind=JobKind.VARIATION, init_image=red))
    upscale = executor.submit(request(2, A, kind=JobKind.UPSCALE, init_image=red))
    done = await vary.wait()
    assert isinstance(done, Done) and done.result.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert isinstance(await upscale.wait(), Done)
    assert [method for method, _ in engine.calls] == ["vary", "upscale"]
    with pytest.raises(ValueError, match="source image"):
        executor.submit(request(3, A, kind=JobKind.UPSCALE))


@settings(max_examples=40, deadline=None)
@given(
    history=st.lists(st.integers(0, 3), max_size=6),
    ops=st.lists(st.one_of(st.integers(0, 3), st.just(-1)), max_size=14),
)
def test_positions_are_the_order_jobs_actually_start(history: list[int], ops: list[int]) -> None:
    """Whatever ran before and whatever was submitted or cancelled since, position n starts n-th."""

    async def scenario() -> None:
        engine = FakeEngine()
        async with Executor(engine, max_queued_per_user=3) as ex:
            job_ids = iter(range(1, 1000))
            for user in history:  # earlier turns shape who is served next
                await ex.submit(request(next(job_ids), user)).wait()
            engine.gate.clear()
            blocker = ex.submit(request(next(job_ids), 0))
            await first(blocker, Started)
            handles = []
            for op in ops:
                if op >= 0:
                    with contextlib.suppress(QueueFull):
                        handles.append(ex.submit(request(next(job_ids), op)))
                elif positions := ex.positions():
                    ex.cancel(min(positions))  # the oldest queued job
            expected = sorted(ex.positions(), key=ex.positions().get)
            assert list(ex.positions().values()) == sorted(ex.positions().values())
            ran_before = len(engine.calls)
            engine.gate.set()
            await asyncio.gather(*(h.wait() for h in handles))
            started = [int(prompt.split()[1]) for _, prompt in engine.calls[ran_before:]]
            assert started == expected

    asyncio.run(scenario())


# -- relax: a priority class of the fair queue ---------------------------------------------------------


async def ended(ex: Executor, *handles: JobHandle) -> None:
    """Until every job has ended; a time-out shows the queue."""
    waits = asyncio.gather(*(handle.wait() for handle in handles))
    await within(waits, "the jobs to end", timeout=60, seen=ex.queue_snapshot)


def relaxed(job_id: int, user: int, **kw: object) -> JobRequest:
    return replace(request(job_id, user, **kw), relax=True)


async def test_relax_jobs_start_only_when_no_fast_job_waits(executor: Executor, engine: FakeEngine) -> None:
    await executor.submit(request(1, A, steps=1)).wait()  # a step timed: start estimates from now on
    engine.gate.clear()
    running = executor.submit(request(2, A))
    await first(running, Started)
    handles = [executor.submit(r) for r in (relaxed(3, A), relaxed(4, B), request(5, C), request(6, A))]
    # fast first (C never served, then A), then relax by the same fairness (B never served, then A)
    expected = [5, 6, 4, 3]
    assert sorted(executor.positions(), key=executor.positions().get) == expected
    queued = executor.queue_snapshot().queued
    assert [e.job_id for e in queued] == expected
    assert [e.relax for e in queued] == [False, False, True, True]  # /queue marks them
    etas = [e.eta_s for e in queued]
    assert all(eta is not None for eta in etas) and etas == sorted(etas)  # estimates follow the same order
    late = executor.submit(request(7, B))  # a fast job arriving later still goes before every relax job
    order = sorted(executor.positions(), key=executor.positions().get)
    assert order == [5, 7, 6, 4, 3]  # B's turn comes before A's (A was served for job 2)
    engine.gate.set()
    await ended(executor, running, late, *handles)
    assert [int(prompt.split()[1]) for _, prompt in engine.calls[1:]] == [2, *order]


async def test_a_running_relax_job_is_never_stopped_for_a_fast_one() -> None:
    engine = FakeEngine(steps_per_permit=True)  # capacity 1: one job at a time
    async with Executor(engine, preview_every=1) as ex:
        slow = ex.submit(relaxed(1, A, steps=4))
        engine.permits.release()  # type: ignore[union-attr]
        await first(slow, Progress)  # the relax job is running
        fast = ex.submit(request(2, B, steps=1))
        assert ex.positions() == {2: 1}
        engine.permits.release(4)  # type: ignore[union-attr]
        await ended(ex, slow, fast)
        assert isinstance(slow.final, Done) and isinstance(fast.final, Done)
    assert engine.batches == [["job 1"]] * 4 + [["job 2"]]  # it ran to its end before the fast job


async def test_a_batch_is_queued_whole_or_not_at_all(engine: FakeEngine) -> None:
    engine.gate.clear()
    async with Executor(engine, max_queued_per_user=3) as ex:
        running = ex.submit(request(1, A))
        await first(running, Started)
        ex.submit_batch([request(2, A), relaxed(3, A)])
        # two waiting, under the cap of 3: a confirmed batch of five is queued whole
        batch = ex.submit_batch([request(i, A) for i in range(4, 9)])
        assert len(batch) == 5 and len(ex.positions()) == 7
        with pytest.raises(QueueFull, match="You already have 7 jobs waiting, the most allowed is 3"):
            ex.submit_batch([request(9, A), request(10, A)])
        with pytest.raises(QueueFull):
            ex.check_room(A)  # what the job service asks before it reserves anything
        ex.check_room(B)
        with pytest.raises(ValueError, match="already queued"):
            ex.submit_batch([request(11, B), request(2, B)])
        assert len(ex.positions()) == 7  # nothing of a refused batch was queued
        engine.gate.set()
        await ended(ex, running, *batch)


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=12))
def test_positions_are_the_order_jobs_start_with_relax_jobs_too(ops: list[tuple[int, bool]]) -> None:
    """Whatever mix of fast and relax jobs waits, position n starts n-th, and no relax job starts while a
    fast job waits."""

    async def scenario() -> None:
        engine = FakeEngine()
        async with Executor(engine, max_queued_per_user=20) as ex:
            engine.gate.clear()
            blocker = ex.submit(request(1, 0))
            await first(blocker, Started)
            handles = [
                ex.submit(relaxed(i, user) if slow else request(i, user))
                for i, (user, slow) in enumerate(ops, start=2)
            ]
            expected = sorted(ex.positions(), key=ex.positions().get)
            relax_ids = {i for i, (_, slow) in enumerate(ops, start=2) if slow}
            flags = [job_id in relax_ids for job_id in expected]
            assert flags == sorted(flags)  # every fast job before every relax job
            engine.gate.set()
            await ended(ex, blocker, *handles)
            assert [int(prompt.split()[1]) for _, prompt in engine.calls[1:]] == expected

    asyncio.run(scenario())
