"""What the README's screenshot scripts share: the bot, in this process, on the local Discord, and Debian's
headless chromium to look at a page.

    async with bot_on_the_local_discord(model) as (server, bot):   # the bot has synced its commands
        async with chromium() as browser: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot import ImagineBot, job_service, web_side  # noqa: E402
from imaginebot.config import load_settings  # noqa: E402
from imaginebot.discord_url import use_discord_url  # noqa: E402
from imaginebot.engine import load_engine  # noqa: E402
from imaginebot.executor import Executor  # noqa: E402
from imaginebot.mockdiscord import MockDiscord, run_mock_discord  # noqa: E402
from imaginebot.mockdiscord.clients import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from imaginebot.store import Store  # noqa: E402


@contextlib.asynccontextmanager
async def bot_on_the_local_discord(
    model: str = "", *, web: bool = False
) -> AsyncIterator[tuple[MockDiscord, ImagineBot]]:
    """The local Discord and the bot (``model``; "": the embedded one) on a fresh data folder, its commands
    synced; ``web``: its web side too (the gallery) on a free port."""
    settings = load_settings(
        **({"model": model} if model else {}),
        data_dir=tempfile.mkdtemp(),
        web_port=0 if web else "off",
    )
    engine = await asyncio.to_thread(load_engine, settings.model_path, device="cpu")
    async with run_mock_discord() as server, await Store.open(settings.data_dir) as store:
        use_discord_url(server.url)
        executor = Executor(engine, preview_every=settings.preview_every)
        await executor.start()
        jobs = job_service(
            settings, store, executor, settings.catalog({settings.model_entries[0].name: engine.planner})
        )
        bot = ImagineBot(settings, store, jobs, guild_ready_timeout=0.1)
        async with web_side(settings, jobs, settings.data_dir, bot):
            running = asyncio.create_task(bot.start(server.bot_token))
            await server.wait_for_commands(timeout=60)
            try:
                yield server, bot
            finally:
                await bot.close()
                await running
        await jobs.close()
        await executor.stop()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's headless chromium, driven by Playwright (a ``Browser``)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()
