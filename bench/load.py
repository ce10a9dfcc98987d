"""Load benchmark: N simulated students send /imagine at once through the local Discord.

    .venv/bin/python bench/load.py                      # 50 users, the embedded model
    .venv/bin/python bench/load.py --users 20 --tiny-random --steps 6

The bot runs as its own process (``bot.py --discord-url``), exactly as an operator runs it, so its memory
is its own. The local Discord runs here, with Discord's rate limits on, and times every interaction from
the moment the user sends it: the acknowledgement (Discord's limit: 3 s), the first preview, the grid.
Prints p50/p99 of each, jobs completed against submitted, and the bot process's peak memory (RSS). Exits
non-zero if a job was lost or an acknowledgement took 3 s or more.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imaginebot.mockdiscord import run_mock_discord  # noqa: E402
from imaginebot.mockdiscord.state import StateEvent  # noqa: E402

DISCORD_ACK_LIMIT = 3.0


@dataclass
class Timing:
    sent: float
    ack: float | None = None
    first_preview: float | None = None
    grid: float | None = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<22} none"
    return (
        f"{name:<22} p50 {statistics.median(values):7.2f} s   p99 {percentile(values, 0.99):7.2f} s"
        f"   max {max(values):7.2f} s   (n={len(values)})"
    )


async def watch_memory(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            rss = process.memory_info().rss + sum(
                c.memory_info().rss for c in process.children(recursive=True)
            )
        except psutil.Error:
            return
        peak[0] = max(peak[0], rss)
        await asyncio.sleep(0.1)


async def main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="imaginebot-load-"))
    model = args.model
    if args.tiny_random:
        from imaginebot.engine.tiny import save_sd, tiny_sd

        model = str(save_sd(tiny_sd(seed=0), workdir / "model"))
    async with run_mock_discord(rate_limits=True) as server:
        users = [server.add_user(f"student{i:03d}") for i in range(args.users)]
        env = {
            **os.environ,
            "IMAGINEBOT_DISCORD_TOKEN": server.bot_token,
            "IMAGINEBOT_DATA_DIR": str(workdir / "data"),
            "IMAGINEBOT_DEFAULT_STEPS": str(args.steps),
            "IMAGINEBOT_QUOTA_PER_DAY": "unlimited",
            "IMAGINEBOT_LOG_LEVEL": "WARNING",
        }
        if model:
            env["IMAGINEBOT_MODEL"] = model
        bot = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bot.py"), "--discord-url", server.url, cwd=workdir, env=env
        )
        peak, stop = [0], asyncio.Event()
        memory = asyncio.create_task(watch_memory(bot.pid, peak, stop))
        try:
            await server.wait_for_commands(timeout=args.startup_timeout)
            timings: dict[int, Timing] = {}

            def on_event(event: StateEvent) -> None:
                interaction = event.interaction or (event.message.interaction if event.message else None)
                timing = timings.get(id(interaction)) if interaction is not None else None
                if timing is None:
                    return
                now = time.monotonic()
                if event.kind == "interaction_ack" and timing.ack is None:
                    timing.ack = now - timing.sent
                elif event.message is not None and event.kind in ("message_create", "message_update"):
                    files = [a.filename for a in event.message.attachments]
                    if timing.first_preview is None and any(f.startswith("preview") for f in files):
                        timing.first_preview = now - timing.sent
                    if (
                        timing.grid is None
                        and files
                        and any(c.startswith("ib:u:") for c in event.message.custom_ids)
                    ):
                        timing.grid = now - timing.sent

            server.state.listeners.append(on_event)
            started = time.monotonic()

            async def send(i: int) -> None:
                sent = time.monotonic()
                interaction = await server.send_command(
                    "imagine", {"prompt": f"a red circle on a blue background, number {i}"}, user=users[i]
                )
                timings[id(interaction)] = Timing(sent=sent)

            await asyncio.gather(*(send(i) for i in range(args.users)))
            deadline = started + args.timeout
            while time.monotonic() < deadline and not all(t.grid is not None for t in timings.values()):
                if bot.returncode is not None:
                    print(f"the bot exited with {bot.returncode}", file=sys.stderr)
                    break
                await asyncio.sleep(0.2)
            wall = time.monotonic() - started
        finally:
            stop.set()
            await memory
            if bot.returncode is None:
                bot.terminate()
            await asyncio.wait_for(bot.wait(), 30)

    done = [t for t in timings.values() if t.grid is not None]
    acks = [t.ack for t in timings.values() if t.ack is not None]
    print(f"users {args.users}, steps {args.steps}, model {model or 'embedded'}, wall {wall:.1f} s")
    print(summary("ack latency", acks))
    print(summary("time to first preview", [t.first_preview for t in timings.values() if t.first_preview]))
    print(summary("time to grid", [t.grid for t in done if t.grid is not None]))
    print(f"{'jobs completed':<22} {len(done)} of {len(timings)} submitted")
    print(f"{'bot peak memory':<22} {peak[0] / 2**20:.0f} MiB RSS")
    late = [a for a in acks if a >= DISCORD_ACK_LIMIT]
    missing_acks = len(timings) - len(acks)
    if late or missing_acks:
        print(f"FAIL: {len(late)} acknowledgements at or over 3 s, {missing_acks} never acknowledged")
    if len(done) != len(timings) or len(timings) != args.users:
        print("FAIL: not every job completed")
    return 0 if not late and not missing_acks and len(done) == args.users else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default="", help="default: the bot's default (the embedded model)")
    parser.add_argument("--tiny-random", action="store_true", help="a tiny random-weight model instead")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every grid")
    parser.add_argument("--startup-timeout", type=float, default=300)
    sys.exit(asyncio.run(main(parser.parse_args())))
