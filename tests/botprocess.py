"""bot.py in a process of its own, for the tests that run it as an operator does (tests/test_bot_process.py,
tests/test_bot_on_ray.py): its log lines collected as they come, and waits that say what the bot last said
when they time out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "mock.the-secret-bot-token-Zq81"  # the local Discord's; checked never to be shown
STARTUP = 180.0  # loading torch and the embedded model on a busy 2-core machine


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
