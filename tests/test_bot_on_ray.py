"""bot.py on a Ray cluster, as README's lab set-up runs it (in a module of its own: with the tests shared
between two processes, its minute and more runs beside test_bot_process's)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botprocess import STARTUP, TOKEN, BotProcess, commands_synced, free_port, grid_for

from imaginebot.mockdiscord import run_mock_discord

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def ray_head(**options: Any) -> AsyncIterator[Any]:
    """``local_head`` on a thread: starting and stopping a cluster takes seconds, during which the bot's
    output must still be read and the local Discord must still answer."""
    from imaginebot.ray_workers import local_head

    manager = local_head(**options)
    head = await asyncio.to_thread(manager.__enter__)
    try:
        yield head
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


async def test_the_bot_on_a_ray_cluster_waits_for_it_uses_every_worker_and_loses_no_job(
    tmp_path: Path, bots: list[BotProcess]
) -> None:
    """As README's lab set-up: the cluster (token authentication on) is not up yet when the bot starts;
    then two workers; a worker's process killed mid-job (a PC switched off); the bot itself killed with
    jobs queued. A bot without the cluster's token is refused in one line. Nothing here depends on what an
    earlier Ray left in ~/.ray: the cluster's token is this test's own file."""
    pytest.importorskip("ray")
    data_dir, port, token = tmp_path / "data", free_port(), tmp_path / "ray" / "auth_token"
    ray_env = {
        "IMAGINEBOT_RAY_ADDRESS": f"127.0.0.1:{port}",
        "IMAGINEBOT_RAY_WORKERS": "2",
        "IMAGINEBOT_BATCH_CAPACITY": "8",  # one four-image job per worker at a time
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    async with run_mock_discord(bot_token=TOKEN) as server:
        bot = await BotProcess(server.url, data_dir, **ray_env).start()
        bots.append(bot)
        retrying = r"Connecting to the Ray cluster at .* failed: .*Trying again"
        lines = await bot.wait_for_line(retrying, count=2)
        assert f"nothing answers at 127.0.0.1:{port}" in lines[0]

        async with ray_head(port=port, token_path=token):
            stranger = await BotProcess(
                server.url,
                tmp_path / "stranger",
                **(ray_env | {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}),
            ).start()
            bots.append(stranger)
            assert await stranger.wait() == 2
            refused = [line for line in stranger.lines if "refused the bot" in line]
            assert len(refused) == 1 and str(tmp_path / "none") in refused[0], stranger.output
            assert token.read_text() not in stranger.output and "Traceback" not in stranger.output

            await commands_synced(bot, server)
            await bot.wait_for_line(r"imaginebot-worker-1 ready on", timeout=STARTUP)
            users = (server.alice, server.bob, server.user("carol"))
            interactions = [
                await server.send_command(
                    "imagine", {"prompt": f"a red circle --steps 40 --seed {i}"}, user=u
                )
                for i, u in enumerate(users)
            ]
            await bot.wait_for_line(r"job \d+: starts on worker 1")
            pids = [int(m) for line in bot.lines for m in re.findall(r"ready on \S+ \(pid (\d+)\)", line)]
            os.kill(pids[0], signal.SIGKILL)  # both workers are busy: one job is lost with it
            for interaction in interactions:
                await grid_for(bot, server, interaction)

            # the bot itself dies with jobs queued: the next start runs them on the cluster again
            queued = [
                await server.send_command("imagine", {"prompt": f"a blue square --seed {i}"}, user=u)
                for i, u in enumerate(users)
            ]
            await bot.wait_for_line(r"job \d+: queued", count=6)  # stored: the next start sees them
            await bot.stop(signal.SIGKILL)
            again = await BotProcess(server.url, data_dir, **ray_env).start()
            bots.append(again)
            for interaction in queued:
                await grid_for(again, server, interaction)
            await again.stop()
    assert "back to the front of the queue" in bot.output
    assert re.search(r"starts on worker 0", bot.output) and re.search(r"starts on worker 1", bot.output)
    with contextlib.closing(sqlite3.connect(data_dir / "imaginebot.db")) as db:
        charged = [row[0] for row in db.execute("SELECT charged FROM jobs")]
    assert charged == [4] * 6  # each charged once
    assert "Traceback" not in bot.output and "Traceback" not in again.output
