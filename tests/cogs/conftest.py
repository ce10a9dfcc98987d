"""The whole bot, end to end: ImagineBot with its real cogs, store, executor and a tiny random-weight
engine, against the local Discord. ``bot_factory()`` starts one; calling it again after ``stop()`` with
the same data directory is a restart. ``bot_factory(web=True)`` also serves its web side (the gallery) as
bot.py does, on a free port: ``running.web_url``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot import ImagineBot, job_service, web_side
from imaginebot.config import load_settings
from imaginebot.engine import DiffusionEngine
from imaginebot.engine.models import ModelSet
from imaginebot.engine.tiny import engine_from, tiny_sd
from imaginebot.executor import Executor
from imaginebot.jobs import JobService
from imaginebot.mockdiscord.clients import FAST_BOT_OPTIONS
from imaginebot.store import Store


@pytest.fixture(scope="session")
def tiny_engine() -> DiffusionEngine:
    return engine_from(tiny_sd(seed=0))


@dataclass
class RunningBot:
    bot: ImagineBot
    store: Store
    executor: Executor
    jobs: JobService
    web: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def web_url(self) -> str:
        assert self.bot.gallery_links is not None, "start the bot with bot_factory(web=True)"
        return self.bot.gallery_links.base_url

    async def stop(self) -> None:
        """As bot.py stops: the web side, the bot, the job service, the executor, the store."""
        await self.web.aclose()
        await self.bot.close()
        await self.jobs.close()
        await self.executor.stop()
        await self.store.close()


BotFactory = Callable[..., Awaitable[RunningBot]]


@pytest_asyncio.fixture
async def bot_factory(
    mock_discord: Any,
    start_bot: Any,
    tmp_path: Path,
    tiny_engine: DiffusionEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[BotFactory]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    running: list[RunningBot] = []

    async def start(engine: Any = None, *, web: bool = False, **overrides: Any) -> RunningBot:
        settings = load_settings(
            **{
                "data_dir": tmp_path / "data",
                "default_steps": 6,
                "preview_every": 2,
                "preview_min_interval": 0.05,
                "quota_per_day": 100,
                "web_port": 0 if web else "off",
                **overrides,
            }
        )
        engine = engine or tiny_engine
        store = await Store.open(settings.data_dir, default_daily_images=settings.quota_per_day)
        executor = Executor(
            engine,
            max_queued_per_user=settings.max_queued_per_user,
            preview_every=settings.preview_every,
            capacity=settings.batch_capacity,
        )
        await executor.start()
        if isinstance(engine, ModelSet):  # several models: the settings name them as the set does
            catalog = settings.catalog({name: engine.engine(name).planner for name in engine.names})
        else:
            catalog = settings.catalog({settings.model_entries[0].name: engine.planner})
        jobs = job_service(settings, store, executor, catalog)
        bot = ImagineBot(settings, store, jobs, **FAST_BOT_OPTIONS)
        item = RunningBot(bot, store, executor, jobs)
        running.append(item)
        await item.web.enter_async_context(web_side(settings, jobs, settings.data_dir, bot))
        await start_bot(bot, wait_for_commands=True)
        return item

    yield start
    for item in running:
        if not item.bot.is_closed():
            await item.stop()
