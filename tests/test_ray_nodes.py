"""A GPU node joining the Ray cluster gets a worker without a restart of the bot.

The cluster is Ray's own test cluster (``ray.cluster_utils.Cluster``: nodes as local processes) with
GPUs declared as resources; the workers run the embedded model on the CPU, as there is no GPU here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from waiting import until, within, workers_seen

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from imaginebot.config import EMBEDDED_MODEL  # noqa: E402
from imaginebot.engine.api import GenerateSpec  # noqa: E402
from imaginebot.engine.planning import Planner  # noqa: E402
from imaginebot.executor import Done, Executor, JobRequest  # noqa: E402
from imaginebot.ray_workers import NAMESPACE, RayWorkers, WorkerConfig  # noqa: E402
from imaginebot.store_models import JobKind  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[object]:
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1})
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


async def test_a_gpu_node_that_joins_gets_a_worker(cluster: object, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ex = Executor(planner=Planner.from_folder(EMBEDDED_MODEL), max_queued_per_user=5)
    await ex.start()
    workers = RayWorkers(WorkerConfig(capacity=8), ex.add_worker, poll_s=0.5)
    workers.top_up()
    watching = asyncio.create_task(workers.watch())
    try:
        assert len(workers.placed) == 1  # one GPU in the cluster so far
        cluster.add_node(num_cpus=2, num_gpus=1)  # type: ignore[attr-defined]
        await until(  # placed within poll_s, then loading the model
            lambda: len(workers.placed) == 2 and all(w.accepting for w in workers.placed),
            "a second worker, on the node that joined, to load its model",
            timeout=120,
            seen=lambda: workers_seen(workers),
        )
        spec = GenerateSpec("a red circle", width=64, height=64, num_inference_steps=20, seeds=(1, 2, 3, 4))
        handles = [ex.submit(JobRequest(i, i, JobKind.IMAGINE, spec)) for i in (1, 2)]
        finals = await within(
            asyncio.gather(*(h.wait() for h in handles)),
            "both jobs to end",
            timeout=120,
            seen=lambda: (ex.queue_snapshot(), workers_seen(workers)),
        )
        assert all(isinstance(f, Done) for f in finals)
        assert {m.rsplit(" ", 1)[-1] for m in caplog.messages if "starts on worker" in m} == {"0", "1"}
    finally:
        watching.cancel()
        await ex.stop()
