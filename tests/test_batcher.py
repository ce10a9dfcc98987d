"""The executor's continuous batching: joining and leaving at step boundaries, capacity, groups, memory."""

from __future__ import annotations

import asyncio

import pytest
from fakes import FakeEngine
from test_executor import A, B, C, collect, first, request

from imaginebot.engine.api import GenerateSpec
from imaginebot.executor import (
    Cancelled,
    Done,
    Event,
    Executor,
    Failed,
    JobRequest,
    Progress,
    Queued,
    Started,
)
from imaginebot.store_models import JobKind


def job(job_id: int, user: int, prompt: str, steps: int = 3, width: int = 8) -> JobRequest:
    spec = GenerateSpec(prompt, width=width, height=8, num_inference_steps=steps, seeds=(1, 2))
    return JobRequest(job_id, user, JobKind.IMAGINE, spec)


async def test_a_job_arriving_mid_way_joins_at_the_next_step() -> None:
    engine = FakeEngine(steps_per_permit=True, capacity=100)
    async with Executor(engine, preview_every=1) as ex:
        long = ex.submit(request(1, A, prompt="long", steps=6))
        engine.permits.release()  # type: ignore[union-attr]
        await first(long, Progress)  # alone, nothing waited for a batch to fill
        short = ex.submit(request(2, B, prompt="short", steps=2))
        engine.permits.release(7)  # type: ignore[union-attr]
        assert isinstance(await short.wait(), Done) and isinstance(await long.wait(), Done)
    assert engine.batches[0] == ["long"]
    assert ["long", "short"] in engine.batches  # shared a call
    assert engine.batches[-1] == ["long"]  # short left when its steps were done
    assert len(engine.batches) == 6  # long's six steps; short's two rode along


async def test_capacity_bounds_the_batch_and_the_rest_join_in_fair_order() -> None:
    engine = FakeEngine(capacity=4)  # each job: two images, two samples
    engine.gate.clear()
    async with Executor(engine, max_queued_per_user=5) as ex:
        handles = [ex.submit(request(1, A, prompt="a1", steps=3))]
        await first(handles[0], Started)
        for job_id, user, prompt in ((2, A, "a2"), (3, B, "b1"), (4, C, "c1"), (5, B, "b2")):
            handles.append(ex.submit(request(job_id, user, prompt=prompt, steps=3)))
        engine.gate.set()
        await asyncio.gather(*(h.wait() for h in handles))
    assert max(len(batch) for batch in engine.batches) == 2
    order = [prompt for _, prompt in engine.calls]
    assert order == ["a1", "b1", "c1", "a2", "b2"]  # B and C before A's second; B's second last


async def test_different_sizes_form_groups_that_take_turns() -> None:
    engine = FakeEngine(capacity=100)
    engine.gate.clear()
    async with Executor(engine) as ex:
        handles = [ex.submit(job(1, A, "square1"))]
        await first(handles[0], Started)
        handles += [ex.submit(job(2, B, "square2")), ex.submit(job(3, C, "wide", width=16))]
        engine.gate.set()
        await asyncio.gather(*(h.wait() for h in handles))
    assert engine.batches == [
        ["square1"],  # the others arrived while it was being prepared: they join at the next boundary
        ["wide"],
        ["square1", "square2"],
        ["wide"],
        ["square1", "square2"],
        ["wide"],
        ["square2"],
    ]


async def test_cancel_removes_a_job_at_the_next_step_and_the_others_go_on() -> None:
    engine = FakeEngine(steps_per_permit=True, capacity=100)
    async with Executor(engine, preview_every=1) as ex:
        keep = ex.submit(request(1, A, prompt="keep", steps=4))
        doomed = ex.submit(request(2, B, prompt="doomed", steps=4))
        engine.permits.release()  # type: ignore[union-attr]
        await first(doomed, Progress)
        assert ex.cancel(2)
        engine.permits.release(4)  # type: ignore[union-attr]
        assert await doomed.wait() == Cancelled(2)
        assert isinstance(await keep.wait(), Done)
    assert sum("doomed" in batch for batch in engine.batches) <= 2
    assert sum("keep" in batch for batch in engine.batches) == 4


async def test_out_of_memory_splits_the_batch_and_lowers_the_capacity() -> None:
    engine = FakeEngine(capacity=8, max_samples=4)  # four jobs of two samples fit the setting, not memory
    engine.gate.clear()
    async with Executor(engine, max_queued_per_user=5) as ex:
        first_job = ex.submit(request(1, A, prompt="j1", steps=3))
        await first(first_job, Started)
        rest = [ex.submit(request(i, A + i, prompt=f"j{i}", steps=3)) for i in (2, 3, 4)]
        engine.gate.set()
        events = await asyncio.gather(*(h.wait() for h in (first_job, *rest)))
        assert all(isinstance(e, Done) for e in events)
        assert ex.capacities == [4.0]
    tried = engine.batches.index(["j1", "j2", "j3", "j4"])  # tried once
    assert engine.batches[tried + 1 : tried + 3] == [["j1", "j2"], ["j3", "j4"]]  # then split
    assert all(len(batch) <= 2 for batch in engine.batches[tried + 1 :])


async def test_only_a_job_that_runs_out_of_memory_alone_fails() -> None:
    engine = FakeEngine(capacity=100)
    engine.gate.clear()
    async with Executor(engine) as ex:
        handles = [ex.submit(request(1, A, prompt="fine 1"))]
        await first(handles[0], Started)
        handles += [ex.submit(request(2, B, prompt="oom")), ex.submit(request(3, C, prompt="fine 3"))]
        engine.gate.set()
        one, oom, three = await asyncio.gather(*(h.wait() for h in handles))
    assert isinstance(one, Done) and isinstance(three, Done)
    assert isinstance(oom, Failed) and oom.out_of_memory
    assert ["oom"] in engine.batches  # failed alone, after the splits


async def test_previews_follow_each_jobs_own_steps() -> None:
    engine = FakeEngine(steps_per_permit=True, capacity=100)
    async with Executor(engine, preview_every=2) as ex:
        early = ex.submit(request(1, A, steps=6))
        engine.permits.release()  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        late = ex.submit(request(2, B, steps=4))
        engine.permits.release(10)  # type: ignore[union-attr]
        early_events, late_events = await asyncio.gather(collect(early), collect(late))
    # coalescing may drop some previews, never reorder them or invent others
    for events, total in ((early_events, 6), (late_events, 4)):
        steps = [e.preview.step for e in events if isinstance(e, Progress)]
        assert steps and steps == sorted(steps) and all(s % 2 == 0 for s in steps)
        assert all(e.preview.total == total for e in events if isinstance(e, Progress))


async def test_queue_positions_carry_an_estimated_start() -> None:
    engine = FakeEngine(steps_per_permit=True, capacity=2)  # one two-image job at a time
    told: list[Queued] = []

    def record(event: Event) -> None:
        if isinstance(event, Queued):
            told.append(event)

    async with Executor(engine) as ex:
        warm_up = ex.submit(request(1, A, steps=3))
        engine.permits.release(3)  # type: ignore[union-attr]
        await warm_up.wait()  # three steps timed
        running = ex.submit(request(2, A, steps=10))
        await first(running, Started)
        queued = [ex.submit(request(3, B, steps=10)), ex.submit(request(4, C, steps=10), on_event=record)]
        etas = [e.eta_s for e in ex.queue_snapshot().queued]
        assert etas[0] is not None and etas[1] is not None
        assert etas[1] > etas[0] > 0  # the second waits for the first, which waits for the running one
        engine.permits.release(30)  # type: ignore[union-attr]
        await asyncio.gather(*(h.wait() for h in (running, *queued)))
    assert told[0].position == 2 and told[0].eta_s is not None


def test_a_capacity_below_one_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 sample"):
        Executor(FakeEngine(), capacity=0.5)


async def test_jobs_spread_over_workers_rather_than_fill_the_first() -> None:
    engines = [FakeEngine(steps_per_permit=True, capacity=100) for _ in range(2)]
    async with asyncio.timeout(30), Executor(engines, max_queued_per_user=5) as ex:  # type: ignore[arg-type]
        handles = [ex.submit(job(1, A, "j1"))]
        await first(handles[0], Started)  # one worker holds j1 in its first step
        handles.append(ex.submit(job(2, B, "j2")))
        await first(handles[1], Started)  # the other one took j2
        first_engine = 0 if engines[0].calls == [("generate", "j1")] else 1
        handles += [ex.submit(job(i, A + i, f"j{i}")) for i in (3, 4, 5, 6)]
        engines[first_engine].permits.release()  # type: ignore[union-attr]
        await first(handles[2], Started)  # j1's worker reached a step boundary and took j3...
        await asyncio.sleep(0.05)
        assert list(ex.positions()) == [4, 5, 6]  # ...but not j4: the other worker has less to do
        for engine in engines:
            engine.permits.release(100)  # type: ignore[union-attr]
        await asyncio.gather(*(h.wait() for h in handles))
