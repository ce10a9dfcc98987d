"""bot.py as an operator runs it, in its own process, against the local Discord: start-up when Discord is
unreachable, answering 5xx or refusing the token, and a bot killed between a job's end and its delivery."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from imaginebot.mockdiscord import run_mock_discord

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "mock.the-secret-bot-token-Zq81"  # the local Discord's; checked never to be shown
STARTUP = 180.0  # loading torch and the embedded model on a busy 2-core machine

pytestmark = pytest.mark.slow


class BotProcess:
    """``python bot.py --discord-url URL`` with the embedded model; its log lines, collected as they come."""

    def __init__(self, url: str, data_dir: Path, token: str = TOKEN, **env: str) -> None:
        self.url, self.data_dir, self.token, self.env = url, data_dir, token, env
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> BotProcess:
        env = {
            **os.environ,
            "IMAGINEBOT_DISCORD_TOKEN": self.token,
            "IMAGINEBOT_DATA_DIR": str(self.data_dir),
            "IMAGINEBOT_DELIVERY_RETRY_MAX": "1",
            "IMAGINEBOT_PREVIEW_MIN_INTERVAL": "0.2",
            "PYTHONUNBUFFERED": "1",
            "IMAGINEBOT_WEB_PORT": "0",  # a free port: bots of other tests may be running
            **self.env,
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bot.py"),
            "--discord-url",
            self.url,
            cwd=self.data_dir.parent,  # no stray .env
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._new_line.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.lines[-lines:]) or "(nothing)"

    async def expect(self, what: str, awaitable: Awaitable[T], timeout: float = STARTUP) -> T:  # noqa: ASYNC109
        """``awaitable``'s result; fails saying what it waited for and what the bot last said, when the
        time is up or the bot exits first."""
        assert self.process is not None
        waiting, exited = asyncio.ensure_future(awaitable), asyncio.ensure_future(self.process.wait())
        done, _ = await asyncio.wait({waiting, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            exited.cancel()
            return waiting.result()
        waiting.cancel()
        if exited in done:
            assert self._reader is not None
            await self._reader  # its last lines
            raise AssertionError(
                f"the bot exited with {exited.result()} while the test waited for {what}:\n{self.tail()}"
            )
        exited.cancel()
        raise AssertionError(f"waited {timeout:.0f} s for {what}; the bot's last lines:\n{self.tail()}")

    async def wait_for_line(self, pattern: str, *, count: int = 1, timeout: float = STARTUP) -> list[str]:  # noqa: ASYNC109
        async def found() -> list[str]:
            while True:
                lines = [line for line in self.lines if re.search(pattern, line)]
                if len(lines) >= count:
                    return lines
                self._new_line.clear()
                await self._new_line.wait()

        return await self.expect(f"{count} line(s) matching {pattern!r}", found(), timeout)

    async def wait(self, timeout: float = STARTUP) -> int:  # noqa: ASYNC109
        assert self.process is not None and self._reader is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"the bot did not exit within {timeout:.0f} s:\n{self.tail()}") from None
        await self._reader
        return code

    async def stop(self, sig: int = signal.SIGINT) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)
            try:
                await self.wait(30)
            except TimeoutError:
                self.process.kill()
                await self.wait(30)


@pytest.fixture
async def bots(tmp_path: Path) -> AsyncIterator[list[BotProcess]]:
    started: list[BotProcess] = []
    yield started
    for bot in started:
        with contextlib.suppress(ProcessLookupError):
            await bot.stop(signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_start_up_waits_out_an_unreachable_or_failing_discord(
    tmp_path: Path, bots: list[BotProcess]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bot = await BotProcess(url, tmp_path / "data").start()
    bots.append(bot)
    unreachable = await bot.wait_for_line(rf"Logging in to Discord at {url} failed: .*Trying again", count=2)
    assert "Cannot connect" in unreachable[0]
    async with run_mock_discord(port=port, bot_token=TOKEN) as server:
        server.outage(600, 503)
        await bot.wait_for_line(r"failed: Discord answered 503.*Trying again")
        server.clear_faults()
        await commands_synced(bot, server, timeout=120)
        assert server.requests(path_contains="/users/@me", status=200)
        await bot.stop()
    assert "Traceback" not in bot.output and "Unclosed" not in bot.output
    assert TOKEN not in bot.output


async def test_a_refused_token_is_one_line_and_a_failed_exit(tmp_path: Path, bots: list[BotProcess]) -> None:
    async with run_mock_discord(bot_token=TOKEN) as server:
        wrong = "not-the-token-Secret-7731"
        bot = await BotProcess(server.url, tmp_path / "data", token=wrong).start()
        bots.append(bot)
        assert await bot.wait() == 1
    refused = [line for line in bot.lines if "refused the bot token" in line]
    assert len(refused) == 1 and "IMAGINEBOT_DISCORD_TOKEN" in refused[0]
    assert wrong not in bot.output and "Traceback" not in bot.output


def job_row(data_dir: Path) -> dict[str, Any] | None:
    """The newest job as the bot's store has it (read straight from its SQLite file)."""
    path = data_dir / "imaginebot.db"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        db.row_factory = sqlite3.Row
        try:
            row = db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT 1").fetchone()
        except sqlite3.OperationalError:  # not migrated yet
            return None
    return dict(row) if row else None


async def wait_for_job(bot: BotProcess, what: str, check: Any, timeout: float = 120) -> dict[str, Any]:  # noqa: ASYNC109
    """The newest job's row once ``check`` holds for it; a time-out says the row it last saw."""
    seen: list[dict[str, Any] | None] = [None]

    async def poll() -> dict[str, Any]:
        while True:
            row = seen[0] = job_row(bot.data_dir)
            if row is not None and check(row):
                return row
            await asyncio.sleep(0.1)

    try:
        return await bot.expect(f"the newest job to be {what}", poll(), timeout)
    except AssertionError as error:
        shown = {k: seen[0][k] for k in ("id", "status", "delivery")} if seen[0] else None
        raise AssertionError(f"{error}\nthe newest job: {shown}") from None


def grid_of(interaction: Any) -> Any:
    """A message test: the grid (U buttons) answering ``interaction``."""
    return lambda m: m.interaction is interaction and any(c.startswith("ib:u:") for c in m.custom_ids)


async def commands_synced(bot: BotProcess, server: Any, timeout: float = STARTUP) -> None:  # noqa: ASYNC109
    await bot.expect(
        "the bot to sync its slash commands", server.wait_for_commands(timeout=timeout + 5), timeout
    )


async def grid_for(bot: BotProcess, server: Any, interaction: Any, timeout: float = STARTUP) -> Any:  # noqa: ASYNC109
    what = f"the grid answering interaction {interaction.id} (/{interaction.command_name})"
    return await bot.expect(what, server.wait_for_message(grid_of(interaction), timeout=timeout + 5), timeout)


async def test_a_bot_killed_between_done_and_delivered_delivers_at_its_next_start(
    tmp_path: Path, bots: list[BotProcess]
) -> None:
    data_dir = tmp_path / "data"
    async with run_mock_discord(bot_token=TOKEN) as server:
        first = await BotProcess(server.url, data_dir).start()
        bots.append(first)
        await commands_synced(first, server)
        interaction = await server.send_command(
            "imagine", {"prompt": "a red circle on a blue background --steps 30"}, user=server.alice
        )
        replied = server.wait_for_response(interaction, lambda m: bool(m.custom_ids), timeout=65)
        await first.expect("the first reply, with its Cancel button", replied, 60)
        server.outage(600, 503)  # Discord is down: the grid can't be delivered
        row = await wait_for_job(first, "done", lambda r: r["status"] == "done")
        assert row["delivery"] == "pending"
        await first.stop(signal.SIGKILL)  # no goodbye: the store is all that is left
        server.clear_faults()

        second = await BotProcess(server.url, data_dir).start()
        bots.append(second)
        grid = await grid_for(second, server, interaction)
        assert grid.attachments and grid.attachments[0].data[:4] == b"\x89PNG"
        row = await wait_for_job(second, "delivered", lambda r: r["delivery"] == "delivered")
        assert row["status"] == "done" and row["charged"] == 4  # charged once
        # The new process has no interaction object: the grid went in with the bot token.
        assert [r for r in server.requests(path_contains="/channels/", status=200) if r.method == "PATCH"]
        await second.stop()
    assert "delivering what the last run could not" in second.output


async def test_two_devices_two_workers(tmp_path: Path, bots: list[BotProcess]) -> None:
    """IMAGINEBOT_DEVICES: one engine and one worker per device (two CPU "devices" here)."""
    async with run_mock_discord(bot_token=TOKEN) as server:
        bot = await BotProcess(
            server.url, tmp_path / "data", IMAGINEBOT_DEVICES="cpu,cpu", IMAGINEBOT_BATCH_CAPACITY="1"
        ).start()
        bots.append(bot)
        await commands_synced(bot, server)
        interactions = [
            await server.send_command("imagine", {"prompt": f"a red circle --steps 40 --seed {i}"}, user=user)
            for i, user in enumerate((server.alice, server.bob))
        ]
        for interaction in interactions:
            await grid_for(bot, server, interaction, timeout=120)
        await bot.stop()
    assert "loading shapes-64 on cpu, cpu" in bot.output
    # one job at a time per worker, two jobs at once: each worker ran one
    assert "joins the batch on imaginebot-worker-0" in bot.output
    assert "joins the batch on imaginebot-worker-1" in bot.output


async def test_several_models_and_a_lora_folder(tmp_path: Path, bots: list[BotProcess]) -> None:
    """IMAGINEBOT_MODELS: bot.py loads each model, /models lists them, --model picks one with its own
    defaults."""
    from imaginebot.config import EMBEDDED_MODEL

    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / "ink.safetensors").write_bytes(b"")  # listed by name; a prompt using it would be refused
    async with run_mock_discord(bot_token=TOKEN) as server:
        bot = await BotProcess(
            server.url,
            tmp_path / "data",
            IMAGINEBOT_MODELS=f"shapes={EMBEDDED_MODEL}, quick={EMBEDDED_MODEL} steps=3 cfg=4",
            IMAGINEBOT_LORA_DIR=str(loras),
        ).start()
        bots.append(bot)
        await commands_synced(bot, server)
        listing = await server.send_command("models", {}, user=server.alice)
        shown = await bot.expect(
            "/models' answer", server.wait_for_response(listing, lambda m: m.ephemeral, timeout=65), 60
        )
        assert "**shapes** (default)" in shown.content and "**quick**" in shown.content
        assert "steps 3 · cfg 4" in shown.content and "`ink`" in shown.content
        asked = await server.send_command(
            "imagine", {"prompt": "a red circle --model quick"}, user=server.bob
        )
        grid = await grid_for(bot, server, asked, timeout=120)
        assert "--model quick" in grid.content
        row = await wait_for_job(bot, "done", lambda r: r["status"] == "done")
        await bot.stop()
    assert (row["model"], row["steps"], row["cfg"]) == ("quick", 3, 4.0)
    assert "loading shapes, quick on auto" in bot.output


async def test_a_truncated_checkpoint_is_one_line_naming_it(tmp_path: Path, bots: list[BotProcess]) -> None:
    broken = tmp_path / "half-downloaded.safetensors"
    header = b'{"a": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}'
    broken.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 100)
    async with run_mock_discord(bot_token=TOKEN) as server:
        bot = await BotProcess(server.url, tmp_path / "data", IMAGINEBOT_MODEL=str(broken)).start()
        bots.append(bot)
        assert await bot.wait() == 2
    said = [line for line in bot.lines if str(broken) in line]
    assert len(said) == 1 and "truncated" in said[0], bot.output
    assert "Traceback" not in bot.output


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
