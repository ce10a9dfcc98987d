"""The in-process bot's /healthz (bot.py's web context) follows its Discord connection: 503 while the
local Discord has dropped its gateway, 200 once discord.py has resumed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot import web_context
from imaginebot.web import create_app

BotFactory = Any  # tests/cogs/conftest.py: bot_factory(**settings) -> RunningBot


async def health(client: Any) -> tuple[int, dict[str, Any]]:
    response = await client.get("/healthz")
    return response.status, await response.json()


async def until_health(client: Any, status: int, timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
    seen: tuple[int, dict[str, Any]] | None = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen = await health(client)
                if seen[0] == status:
                    return seen[1]
                await asyncio.sleep(0.05)  # nothing to wait on: discord.py's backoff is its own
    except TimeoutError:
        raise AssertionError(f"/healthz never answered {status} in {timeout} s; last: {seen}") from None


async def test_healthz_follows_the_gateway(
    mock_discord: Any, bot_factory: BotFactory, aiohttp_client: Any, tmp_path: Path
) -> None:
    running = await bot_factory()
    client = await aiohttp_client(create_app(web_context(running.jobs, tmp_path, running.bot)))
    status, body = await health(client)
    assert status == 200 and body["discord"] == {"connected": True}, body
    assert [w["models"] for w in body["workers"]] == [["shapes-64"]]
    resumed = asyncio.ensure_future(mock_discord.wait_for_resume(timeout=30))
    await mock_discord.drop_gateway(seconds=1.0)
    body = await until_health(client, 503)
    assert body["problems"] == ["Discord is not connected"]
    await resumed
    assert (await until_health(client, 200))["ok"]
