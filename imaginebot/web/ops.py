"""The operator's endpoints: ``GET /healthz`` and ``GET /metrics``. Neither needs a token: they say
nothing about students or images, and bind to the web host (127.0.0.1 unless the operator opens it).

``/healthz`` answers 200 while the bot can serve (Discord connected, at least one worker alive with a model)
and 503 otherwise, with the same JSON either way: what a load balancer or a systemd watchdog checks, and
what the operator reads. ``/metrics`` is the bot's own registry (``imaginebot.metrics``) in Prometheus'
text format, or OpenMetrics when the scraper asks for it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from imaginebot.web.app import WEB


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


async def healthz(request: web.Request) -> web.Response:
    context = request.app[WEB]
    connected = context.discord_connected()
    workers = context.jobs.workers()
    queue = context.jobs.queue()
    problems = []
    if not connected:
        problems.append("Discord is not connected")
    if not any(worker.alive and worker.models for worker in workers):
        problems.append("no worker is alive with a model loaded" if workers else "there are no workers")
    body: dict[str, Any] = {
        "ok": not problems,
        "problems": problems,
        "discord": {"connected": connected},
        "workers": [
            {
                "name": worker.name,
                "alive": worker.alive,
                "models": list(worker.models or ()),
                "capacity": worker.capacity,
            }
            for worker in workers
        ],
        "queue": {"queued": len(queue.queued), "running": len(queue.running)},
    }
    return web.json_response(body, status=503 if problems else 200)


async def metrics(request: web.Request) -> web.Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(request.app[WEB].jobs.metrics.registry)  # quick: counters and a few gauges, no I/O
    return web.Response(body=body, headers={"Content-Type": content_type})
