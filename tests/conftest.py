"""Fixtures shared by every test folder: the local Discord, bots started against it, and its page.

- ``mock_discord``: a :class:`MockDiscord` served on a free 127.0.0.1 port, with discord.py pointed
  at it (``Route.BASE`` and ``DEFAULT_GATEWAY``, restored afterwards). Rate limits are off; turn
  them on per test with ``mock_discord.set_rate_limit(...)``.
- ``start_bot``: ``await start_bot(bot)`` runs ``bot.start(token)`` in a task, waits for
  ``on_ready`` and the command sync the bot does in ``setup_hook``/``on_ready`` if
  ``wait_for_commands`` is true, and closes the bot at teardown. Build the bot with
  ``**FAST_BOT_OPTIONS`` so ``on_ready`` doesn't wait two seconds for more guilds.
- ``mock_page``: the local Discord's page in headless chromium (a Playwright ``Page``).
- ``bots``: the bot.py processes a test starts (``botprocess.BotProcess``), killed at its end.

They live here, not in the package, so that a plain install never imports pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import discord.gateway
import discord.http
import pytest
import pytest_asyncio
from botprocess import BotProcess

from imaginebot.discord_url import use_discord_url
from imaginebot.mockdiscord import MockDiscord, run_mock_discord
from imaginebot.mockdiscord.clients import CHROMIUM, CHROMIUM_ARGS

StartBot = Callable[..., Awaitable[discord.Client]]


def pytest_configure(config: pytest.Config) -> None:
    """A Ray token of the session's own: a Ray cluster started in a test turns token authentication on
    and, where ``~/.ray/auth_token`` is missing, writes one there, so that without this every later Ray
    test, bot and run would depend on what an earlier one left in the home directory (and on the order of
    the tests). Set before any test imports Ray; its processes and the bots started by tests inherit it."""
    if "RAY_AUTH_TOKEN_PATH" not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="imaginebot-tests-ray-"))
        token = folder / "auth_token"
        token.touch(mode=0o600)
        token.write_text(secrets.token_hex(32))
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@pytest_asyncio.fixture
async def mock_discord() -> AsyncIterator[MockDiscord]:
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with run_mock_discord() as server:
        use_discord_url(server.url)
        try:
            yield server
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


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


@pytest_asyncio.fixture
async def mock_page(mock_discord: MockDiscord) -> AsyncIterator[Any]:
    """The local Discord's page in headless chromium (a Playwright ``Page``), live and connected.

    Skips where chromium is missing, except in CI (``CI`` set), where that is a failure. Fails the
    test if the page raised a JavaScript error.
    """
    if not CHROMIUM.exists():  # one stat, before any browser starts
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            tab = await browser.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            await tab.goto(mock_discord.page_url)
            await tab.wait_for_function("document.body.dataset.live === '1'")
            yield tab
            assert errors == [], errors
        finally:
            await browser.close()


@pytest.fixture
async def bots() -> AsyncIterator[list[BotProcess]]:
    """bot.py processes a test starts (botprocess.BotProcess): killed at the end, whatever happened."""
    started: list[BotProcess] = []
    yield started
    for bot in started:
        with contextlib.suppress(ProcessLookupError):
            await bot.stop(signal.SIGKILL)
