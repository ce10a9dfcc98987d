"""The app factory of the bot's web side: one aiohttp app in the bot's own process and event loop, apart
from the local Discord.

It reads the store through the job service, never the engine, and knows no discord.py: what it needs of
the bot (is Discord connected?) comes in as plain callables on ``WebContext``. ``bot.py`` serves it on
``IMAGINEBOT_WEB_HOST``:``IMAGINEBOT_WEB_PORT``; the tests serve it on a free port or drive it with
``aiohttp_client(create_app(...))``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from imaginebot.jobs import JobService
from imaginebot.store_gallery import PAGE_SIZE
from imaginebot.web.gallery import setup_gallery
from imaginebot.web.links import LinkSigner


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WebContext:
    """What the pages and the operator's endpoints read. ``links``: the key that checks the gallery's links
    (None: no gallery); ``clock``: what time it is (links expire); ``page_size``: images per gallery page."""

    jobs: JobService
    data_dir: Path
    discord_connected: Callable[[], bool] = lambda: False
    links: LinkSigner | None = None
    clock: Callable[[], datetime] = utc_now
    page_size: int = PAGE_SIZE


WEB = web.AppKey("imaginebot_web", WebContext)


def create_app(context: WebContext) -> web.Application:
    from imaginebot.web import ops  # it reads WEB from here

    app = web.Application()
    app[WEB] = context
    ops.add_routes(app)
    if context.links is not None:
        setup_gallery(app, context, context.links)
    return app


@contextlib.asynccontextmanager
async def serve_web(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0: a free port) until the block ends; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound[1]}"
    finally:
        await runner.cleanup()
