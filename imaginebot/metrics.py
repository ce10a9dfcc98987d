"""The operator's numbers, for ``GET /metrics`` in Prometheus' text format (prometheus-client).

One ``Metrics`` (one ``CollectorRegistry``) per bot, never prometheus-client's global default: the tests
build many bots in one process. The executor owns it and records what happens on the workers; the job
service records a job's life (how it ended, refusals, deliveries) and says what is live now (jobs queued
and running, the workers), which a collector reads at each scrape.

Where the numbers come from:

- UNet calls (``imaginebot_unet_call_seconds``, ``imaginebot_unet_call_samples``) happen on a worker's
  thread: its ``Batcher`` hands each call's rows and time to ``Dispatch.measured``, which the executor
  points here. A Ray worker's batcher runs in another process: its actor keeps the calls since it was last
  asked, and hands them over with the ``info()`` the bot already asks after every job (for its start
  estimates); the bot's ``RayWorker`` then replays them into the same ``Dispatch.measured``. So every call
  of every worker lands in the bot's registry, labelled with the executor's number of the worker; a
  remote worker's calls arrive when one of its jobs ends, and those of an actor that dies are lost.
- Queue wait: the executor, from a job's submission to its start on a worker.
- The rest: the job service, on the event loop.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imaginebot.store_models import JobKind
from imaginebot.work import UnetCall, WorkerStatus

LIVE_STATES = ("queued", "running")
FINISHED_STATES = ("done", "failed", "cancelled", "interrupted")
DELIVERY_OUTCOMES = ("delivered", "gone", "expired")
REFUSALS = ("quota", "queue_full", "blocked", "banned_words")


@dataclass(frozen=True)
class Live:
    """What is going on now, read at each scrape."""

    jobs: Tally[tuple[str, str]]  # (state, kind) -> jobs queued or running
    workers: Sequence[WorkerStatus]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.jobs_finished = Counter(
            "imaginebot_jobs_finished",
            "Jobs that ended, by kind and how: done, failed, cancelled or interrupted (by a stop)",
            ["kind", "state"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "imaginebot_queue_wait_seconds",
            "Seconds from a job's submission to its start on a worker",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=registry,
        )
        self.unet_call_seconds = Histogram(
            "imaginebot_unet_call_seconds",
            "Seconds of one batched UNet call: one denoising step of every job in the batch",
            ["worker"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.unet_call_samples = Histogram(
            "imaginebot_unet_call_samples",
            "Rows of one batched UNet call (the batch size): one per image, two with guidance",
            ["worker"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )
        self.delivery_retries = Counter(
            "imaginebot_delivery_retries",
            "Tries to deliver a job's final state into Discord that failed and were tried again",
            registry=registry,
        )
        self.deliveries = Counter(
            "imaginebot_deliveries",
            "Final states pushed to their message, by outcome: delivered, gone (deleted) or expired",
            ["outcome"],
            registry=registry,
        )
        self.refusals = Counter(
            "imaginebot_refusals",
            "Requests refused before anything was queued: quota, queue_full, blocked, banned_words",
            ["reason"],
            registry=registry,
        )
        self.flagged_images = Counter(
            "imaginebot_flagged_images",
            "Images the safety checker held back for a moderator's review",
            registry=registry,
        )
        # Every known series from the start, at 0, so that a rate over the first one is right.
        for kind in JobKind:
            for state in FINISHED_STATES:
                self.jobs_finished.labels(kind.value, state)
        for outcome in DELIVERY_OUTCOMES:
            self.deliveries.labels(outcome)
        for reason in REFUSALS:
            self.refusals.labels(reason)
        self._live: Callable[[], Live] | None = None
        registry.register(_LiveCollector(self))

    def watch(self, live: Callable[[], Live]) -> None:
        """Read ``live()`` at each scrape (the job service's; a later one replaces it)."""
        self._live = live

    def live(self) -> Live | None:
        return None if self._live is None else self._live()

    def observe_call(self, worker: int, call: UnetCall) -> None:
        """A worker's UNet call (from any thread: prometheus-client's metrics take their own locks)."""
        self.unet_call_seconds.labels(str(worker)).observe(call.seconds)
        self.unet_call_samples.labels(str(worker)).observe(call.samples)


class _LiveCollector(Collector):
    """The gauges of what is live now: jobs queued and running, and the workers."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        live = self.metrics.live()
        if live is None:
            return
        jobs = GaugeMetricFamily(
            "imaginebot_jobs", "Jobs queued or running now, by state and kind", labels=["state", "kind"]
        )
        for state in LIVE_STATES:
            for kind in JobKind:
                jobs.add_metric([state, kind.value], live.jobs[state, kind.value])
        up = GaugeMetricFamily(
            "imaginebot_worker_up",
            "1 while a worker takes jobs, 0 while it is down",
            labels=["worker", "name"],
        )
        models = GaugeMetricFamily(
            "imaginebot_worker_model_info",
            "The models each worker holds (1 per model)",
            labels=["worker", "model"],
        )
        capacity = GaugeMetricFamily(
            "imaginebot_worker_capacity_samples",
            "Samples of native size a worker puts in one UNet call at most",
            labels=["worker"],
        )
        for worker in live.workers:
            index = str(worker.index)
            up.add_metric([index, worker.name], 1.0 if worker.alive else 0.0)
            for model in worker.models or ():
                models.add_metric([index, model], 1.0)
            if worker.capacity is not None:
                capacity.add_metric([index], worker.capacity)
        yield from (jobs, up, models, capacity)
