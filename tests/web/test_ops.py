"""The operator's endpoints on a real job service (a fake engine on a local worker), through aiohttp's
test client: ``/healthz`` says whether the bot can serve and why not, ``/metrics`` counts what happened."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from test_jobs import BOB, DEFAULTS, FAST, GUILD, FakeReply, ended, finished, origin
from waiting import until

from imaginebot.catalog import Catalog
from imaginebot.errors import QuotaExceeded
from imaginebot.executor import Executor
from imaginebot.jobs import JobService
from imaginebot.store import Store
from imaginebot.web import WebContext, create_app


@dataclass
class Bot:
    jobs: JobService
    engine: FakeEngine
    client: Any  # aiohttp's TestClient
    discord: list[bool] = field(default_factory=lambda: [True])  # connected?

    async def get(self, path: str, **headers: str) -> tuple[int, Any]:
        response = await self.client.get(path, headers=headers)
        body = await (response.json() if path == "/healthz" else response.text())
        return response.status, body


@pytest.fixture
async def bot(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Bot]:
    engine = FakeEngine()
    store = await Store.open(tmp_path, default_daily_images=100)
    executor = Executor(engine, preview_every=1)
    await executor.start()
    seeds = itertools.count(1000, 10)
    catalog = Catalog.single(64, DEFAULTS, name="fake-64")
    jobs = JobService(store, executor, catalog=catalog, seeds=lambda: next(seeds), delivery=FAST)
    connected = [True]
    context = WebContext(jobs, tmp_path, discord_connected=lambda: connected[0])
    yield Bot(jobs, engine, await aiohttp_client(create_app(context)), connected)
    await jobs.close()
    await executor.stop()
    await store.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics page, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(page: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, **labels: str) -> float:
    key = (metric, frozenset(labels.items()))
    assert key in page, f"{metric}{labels} not on the page; it has {sorted({n for n, _ in page})}"
    return page[key]


async def test_healthz_is_200_while_the_bot_can_serve_and_503_with_the_reason_when_not(bot: Bot) -> None:
    await finished(bot.jobs, (await bot.jobs.imagine(origin(), "a red circle", FakeReply())).id)
    status, health = await bot.get("/healthz")
    assert status == 200, health
    assert health == {
        "ok": True,
        "problems": [],
        "discord": {"connected": True},
        "workers": [{"name": "imaginebot-worker-0", "alive": True, "models": ["fake-64"], "capacity": 1.0}],
        "queue": {"queued": 0, "running": 0},
    }
    bot.discord[0] = False  # the gateway dropped
    status, health = await bot.get("/healthz")
    assert (status, health["ok"], health["problems"]) == (503, False, ["Discord is not connected"])
    bot.discord[0] = True
    await bot.jobs.executor.stop()  # the workers' threads end
    status, health = await bot.get("/healthz")
    assert (status, health["problems"]) == (503, ["no worker is alive with a model loaded"])
    assert health["workers"][0]["alive"] is False


async def test_healthz_and_metrics_count_the_jobs_queued_and_running(bot: Bot) -> None:
    bot.engine.gate.clear()  # the first job holds the worker (one job at a time), the second waits
    first = await bot.jobs.imagine(origin(), "a red circle", FakeReply())
    # the worker took it: it waits at the gate, running
    await until(lambda: bool(bot.engine.calls), "the worker to take it", timeout=30, seen=bot.jobs.queue)
    await bot.jobs.imagine(origin(BOB, 600), "a blue square", FakeReply())
    _, health = await bot.get("/healthz")
    assert health["queue"] == {"queued": 1, "running": 1}, health
    _, text = await bot.get("/metrics")
    page = samples(text)
    assert value(page, "imaginebot_jobs", state="running", kind="imagine") == 1
    assert value(page, "imaginebot_jobs", state="queued", kind="imagine") == 1
    assert value(page, "imaginebot_jobs", state="queued", kind="upscale") == 0  # every kind, every time
    bot.engine.gate.set()
    await ended(bot.jobs, first.id)


async def test_metrics_count_jobs_steps_waits_retries_and_refusals(bot: Bot) -> None:
    jobs = bot.jobs
    await finished(jobs, (await jobs.imagine(origin(), "a red circle", FakeReply(fail=2))).id)
    await finished(jobs, (await jobs.imagine(origin(message_id=501), "a blue square", FakeReply())).id)
    await jobs.store.set_user_quota(GUILD, BOB, 0, by=1)
    with pytest.raises(QuotaExceeded):
        await jobs.imagine(origin(BOB, 600), "a green star", FakeReply())
    status, text = await bot.get("/metrics")
    assert status == 200
    page = samples(text)
    assert value(page, "imaginebot_jobs_finished_total", kind="imagine", state="done") == 2
    assert value(page, "imaginebot_queue_wait_seconds_count") == 2
    # one job at a time, four steps of four images each: eight UNet calls of four samples
    assert value(page, "imaginebot_unet_call_seconds_count", worker="0") == 8
    assert value(page, "imaginebot_unet_call_samples_count", worker="0") == 8
    assert value(page, "imaginebot_unet_call_samples_sum", worker="0") == 32
    assert value(page, "imaginebot_unet_call_samples_bucket", worker="0", le="4.0") == 8
    assert value(page, "imaginebot_delivery_retries_total") == 2
    assert value(page, "imaginebot_deliveries_total", outcome="delivered") == 2
    assert value(page, "imaginebot_refusals_total", reason="quota") == 1
    assert value(page, "imaginebot_refusals_total", reason="queue_full") == 0  # every known series, from 0
    assert value(page, "imaginebot_jobs_finished_total", kind="upscale", state="failed") == 0
    assert value(page, "imaginebot_worker_up", worker="0", name="imaginebot-worker-0") == 1
    assert value(page, "imaginebot_worker_model_info", worker="0", model="fake-64") == 1
    assert value(page, "imaginebot_worker_capacity_samples", worker="0") == 1
    # the bot's own registry: nothing of it in prometheus-client's global one, which other code may share
    assert REGISTRY.get_sample_value("imaginebot_delivery_retries_total") is None


async def test_metrics_speak_openmetrics_to_a_scraper_that_asks(bot: Bot) -> None:
    response = await bot.client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.content_type == "application/openmetrics-text"
    text = await response.text()
    assert text.endswith("# EOF\n") and "imaginebot_worker_up" in text
    plain = await bot.client.get("/metrics")
    assert plain.content_type == "text/plain"


async def test_neither_endpoint_needs_a_token_nor_takes_anything_but_get(bot: Bot) -> None:
    for path in ("/healthz", "/metrics"):
        assert (await bot.client.get(path)).status == 200
        assert (await bot.client.post(path)).status == 405
