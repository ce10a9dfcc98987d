"""Workers as Ray actors on a local Ray cluster (started in this process), running the embedded model on
the CPU: jobs spread over two workers in the fair order, previews stream back, the actors' safety checker
flags images and their UNet calls reach the bot's /metrics, cancel reaches a remote job, and a worker
process killed mid-job loses nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import pytest_asyncio
from safetycheckers import save_checker
from waiting import until, within, workers_seen

ray = pytest.importorskip("ray")

from imaginebot.config import EMBEDDED_MODEL  # noqa: E402
from imaginebot.engine.api import GenerateSpec  # noqa: E402
from imaginebot.engine.planning import Planner  # noqa: E402
from imaginebot.executor import (  # noqa: E402
    Cancelled,
    Done,
    Event,
    Executor,
    JobHandle,
    JobRequest,
    Progress,
    Started,
)
from imaginebot.ray_workers import ACTOR_PREFIX, NAMESPACE, RayWorkers, WorkerConfig  # noqa: E402
from imaginebot.store_models import JobKind  # noqa: E402

# One event loop for the module: its executor (and the workers it follows) outlives a test.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
A, B, C = 1, 2, 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # A new local cluster turns Ray's token authentication on, with the test session's token (conftest)
    ray.init(num_cpus=4, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def executor(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Executor]:
    """An executor with two Ray workers of one job at a time each (a four-image job costs 8), shared by
    the module's tests (each worker is a process that loads torch and the model: seconds apiece), each with
    a safety checker that flags every image (its folder travels in the worker's config)."""
    ex = Executor(planner=Planner.from_folder(EMBEDDED_MODEL), max_queued_per_user=5, preview_every=2)
    await ex.start()
    checker = str(save_checker(tmp_path_factory.mktemp("checker"), flags=True))
    config = WorkerConfig(capacity=8, preview_every=2, safety_checker=checker)
    workers = RayWorkers(config, ex.add_worker, workers=2)
    workers.top_up()
    await until(  # both loaded, or the first could take every job before the second is up
        lambda: len(workers.placed) == 2 and all(w.accepting for w in workers.placed),
        "two Ray workers to load the model",
        timeout=180,
        seen=lambda: workers_seen(workers),
    )
    yield ex
    await ex.stop()
    for worker in workers.placed:
        ray.kill(worker.actor)


def job(job_id: int, user: int, steps: int = 6) -> JobRequest:
    spec = GenerateSpec(
        f"a red circle {job_id}", width=64, height=64, num_inference_steps=steps, seeds=(1, 2, 3, 4)
    )
    return JobRequest(job_id, user, JobKind.IMAGINE, spec)


def unet_calls(executor: Executor) -> dict[str, float]:
    """The UNet calls of each of the two workers in the bot's registry (/metrics)."""
    registry = executor.metrics.registry
    return {
        w: registry.get_sample_value("imaginebot_unet_call_samples_count", {"worker": w}) or 0.0
        for w in ("0", "1")
    }


async def first(handle: JobHandle, kind: type[Event]) -> Event:
    async for event in handle.events():
        if isinstance(event, kind):
            return event
    raise AssertionError(f"job {handle.job_id} ended without {kind.__name__}")


async def test_jobs_spread_over_two_workers_in_fair_order(
    executor: Executor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imaginebot.executor")
    before = unet_calls(executor)  # the workers are the module's: count this test's calls
    started: list[int] = []

    def record(event: Event) -> None:
        if isinstance(event, Started):
            started.append(event.job_id)

    # All four are queued before a worker may take one (the executor's lock is the workers' too): otherwise
    # a worker free when job 2 arrives rightly takes it before job 4 exists, and there is no order to test.
    with executor._cond:
        handles = [executor.submit(job(i, A), on_event=record) for i in (1, 2, 3)]
        handles.append(executor.submit(job(4, B), on_event=record))
    previews: list[Progress] = []
    for handle in handles:
        async for event in handle.events():
            if isinstance(event, Progress):
                previews.append(event)
        assert isinstance(handle.final, Done) and len(handle.final.result.images) == 4
        assert handle.final.result.images[0].size == (64, 64)
        assert handle.final.result.flagged == (0, 1, 2, 3)  # checked on the actor, after decoding
    assert previews  # they streamed back from the actors
    assert set(started[:2]) == {1, 4}  # B is served before A's second job
    workers = {line.rsplit(" ", 1)[-1] for line in caplog.messages if "starts on worker" in line}
    assert workers == {"0", "1"}

    # each actor's UNet calls, handed over with the info() the bot asks after each job, in its registry
    def made() -> dict[str, float]:
        now = unet_calls(executor)
        return {w: now[w] - before[w] for w in now}

    await until(  # the last job's calls come after its final event
        lambda: sum(made().values()) >= 4 * 6,  # every step of every job: six each, one job per call
        "every UNet call of the actors in the bot's registry",
        timeout=60,
        seen=made,
    )
    assert sum(made().values()) == 4 * 6 and all(made().values())


async def test_cancel_reaches_a_remote_job_and_queued_jobs_get_estimates(executor: Executor) -> None:
    warm = executor.submit(job(9, C, steps=2))
    warmed = await within(warm.wait(), "a first job", timeout=120, seen=executor.queue_snapshot)
    assert isinstance(warmed, Done)  # its worker's step times are known
    running = [executor.submit(job(i, user, steps=200)) for i, user in ((10, A), (11, B))]
    for handle in running:
        await first(handle, Progress)  # both workers busy
    queued = executor.submit(job(12, C, steps=2))
    await asyncio.sleep(0.1)
    (waiting,) = executor.queue_snapshot().queued
    assert waiting.job_id == 12 and waiting.eta_s is not None and waiting.eta_s > 0
    assert executor.cancel(10) and executor.cancel(11)
    cancelled = await within(
        running[0].wait(), "job 10 to be cancelled", timeout=60, seen=executor.queue_snapshot
    )
    assert cancelled == Cancelled(10)
    after = await within(queued.wait(), "job 12 to run after", timeout=120, seen=executor.queue_snapshot)
    assert isinstance(after, Done)  # the workers carry on


async def test_a_worker_killed_mid_job_loses_nothing(
    executor: Executor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    handles = [executor.submit(job(20 + i, user, steps=30)) for i, user in enumerate((A, B, C))]
    await first(handles[0], Progress)
    await first(handles[1], Progress)  # both workers are mid-job now
    actor = ray.get_actor(f"{ACTOR_PREFIX}0", namespace=NAMESPACE)
    os.kill((await actor.info.remote())["pid"], signal.SIGKILL)
    every = asyncio.gather(*(h.wait() for h in handles))
    finals = await within(every, "all three jobs to end", timeout=300, seen=executor.queue_snapshot)
    assert all(isinstance(f, Done) and len(f.result.images) == 4 for f in finals)
    lost = [m for m in caplog.messages if "back to the front of the queue" in m]
    assert len(lost) == 1  # the killed worker's job ran again elsewhere (or on the restarted worker)


async def test_jobs_go_to_the_ray_worker_that_holds_their_model(
    cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers with a model each (as two GPUs that each hold one): every job runs where its model is."""
    from imaginebot.catalog import ModelEntry
    from imaginebot.engine.models import ModelPlanner
    from imaginebot.ray_workers import RayWorker, place_worker

    caplog.set_level(logging.INFO, logger="imaginebot.executor")
    planner = Planner.from_folder(EMBEDDED_MODEL)
    ex = Executor(planner=ModelPlanner({"a": planner, "b": planner}), max_queued_per_user=5)
    await ex.start()
    loop = asyncio.get_running_loop()
    actors = []
    for index, name in ((90, "a"), (91, "b")):
        config = WorkerConfig(models=(ModelEntry(name, str(EMBEDDED_MODEL)),), capacity=8)
        actors.append(place_worker(index, config, num_gpus=0, num_cpus=1))
        ex.add_worker(RayWorker(actors[-1], f"{ACTOR_PREFIX}{index}", loop))
    try:
        jobs = [(30, "b"), (31, "b"), (32, "a")]
        handles = [
            ex.submit(JobRequest(i, i, JobKind.IMAGINE, replace(job(i, i, steps=2).spec, model=model)))
            for i, model in jobs
        ]
        every = asyncio.gather(*(h.wait() for h in handles))
        finals = await within(every, "the three jobs to end", timeout=300, seen=ex.queue_snapshot)
        assert all(isinstance(f, Done) for f in finals)
        ran = {
            int(m.split()[1].rstrip(":")): m.rsplit(" ", 1)[-1] for m in caplog.messages if "starts on" in m
        }
        assert ran == {30: "1", 31: "1", 32: "0"}  # worker 0 holds a, worker 1 holds b
    finally:
        await ex.stop()
        for actor in actors:
            ray.kill(actor)
