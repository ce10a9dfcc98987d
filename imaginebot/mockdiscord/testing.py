"""pytest plugin: the local Discord as fixtures. Register it in ``tests/conftest.py``::

    pytest_plugins = ["imaginebot.mockdiscord.testing"]

Fixtures:

- ``mock_discord``: a :class:`MockDiscord` served on a free 127.0.0.1 port, with discord.py pointed
  at it (``Route.BASE`` and ``DEFAULT_GATEWAY``, restored afterwards). Rate limits are off; turn
  them on per test with ``mock_discord.set_rate_limit(...)``.
- ``start_bot``: ``await start_bot(bot)`` runs ``bot.start(token)`` in a task, waits for
  ``on_ready`` and the command sync the bot does in ``setup_hook``/``on_ready`` if
  ``wait_for_commands`` is true, and closes the bot at teardown. Build the bot with
  ``**FAST_BOT_OPTIONS`` so ``on_ready`` doesn't wait two seconds for more guilds.

    async def test_imagine(mock_discord, start_bot):
        bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), **FAST_BOT_OPTIONS)
        await bot.load_extension("cogs.imagine")
        await start_bot(bot)
        inter = await mock_discord.send_command("imagine", {"prompt": "an otter"}, user=mock_discord.alice)
        reply = await mock_discord.wait_for_response(inter, lambda m: m.attachments, timeout=30)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import discord
import discord.gateway
import discord.http
import pytest_asyncio

from ..discord_url import use_discord_url
from .server import MockDiscord, run_mock_discord

__all__ = ["FAST_BOT_OPTIONS", "StartBot", "mock_discord", "start_bot"]

# on_ready fires guild_ready_timeout after the last GUILD_CREATE (default 2 s); the local Discord
# sends its one guild at once, so a short wait loses nothing.
FAST_BOT_OPTIONS: dict[str, Any] = {"guild_ready_timeout": 0.05}


@pytest_asyncio.fixture
async def mock_discord() -> AsyncIterator[MockDiscord]:
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with run_mock_discord() as server:
        use_discord_url(server.url)
        try:
            yield server
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


StartBot = Callable[..., Awaitable[discord.Client]]


@pytest_asyncio.fixture
async def start_bot(mock_discord: MockDiscord) -> AsyncIterator[StartBot]:
    running: list[tuple[discord.Client, asyncio.Task[None]]] = []

    async def start(
        bot: discord.Client,
        *,
        wait_for_commands: bool = False,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> discord.Client:
        task = asyncio.create_task(bot.start(mock_discord.bot_token), name=f"bot-{id(bot)}")
        running.append((bot, task))
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({ready, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()  # re-raises why the bot stopped
            raise RuntimeError("the bot stopped before it was ready")
        if not done:
            ready.cancel()
            raise TimeoutError(f"the bot was not ready within {timeout} s")
        if wait_for_commands:
            await mock_discord.wait_for_commands(timeout=timeout)
        return bot

    yield start
    for bot, task in reversed(running):
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5.0)
