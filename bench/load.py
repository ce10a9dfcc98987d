"""Load benchmark: N simulated students send /imagine at once through the local Discord, twice.

    .venv/bin/python bench/load.py                      # 50 users, the embedded model
    .venv/bin/python bench/load.py --users 20 --tiny-random --steps 6
    .venv/bin/python bench/load.py --only batched       # one run, no comparison
    .venv/bin/python bench/load.py --ray --workers 2    # the bot's workers on a Ray cluster
    .venv/bin/python bench/load.py --compare mix --mix 0.5   # half the crowd sends multi-prompts

The same crowd runs twice, each time against a fresh local Discord, a fresh bot and a fresh data dir: once
one job at a time (``IMAGINEBOT_BATCH_CAPACITY=1``), once batched (the bot's default capacity, or
``--capacity``). The bot runs as its own process (``bot.py --discord-url``), exactly as an operator runs
it, so its memory is its own. The local Discord runs here, with Discord's rate limits on, and times every
interaction from the moment the user sends it: the acknowledgement (Discord's limit: 3 s), the first
preview (or the grid, for a job that ended before a preview was shown), the grid. Each run prints p50/p99
of each, jobs completed against submitted, throughput (grids per second from the first command sent to
the last grid) and the peak memory (RSS) of the bot process and its children. The last line compares the
two runs:

    batched vs one at a time: grid p99 ratio R1, first preview p99 ratio R2, throughput ratio R3

``--ray``: both runs on ``--workers`` Ray workers (default 2, one CPU each) instead of the bot's own: a
``ray start --head`` cluster on 127.0.0.1 for the whole benchmark, the bot joining it with
``IMAGINEBOT_RAY_ADDRESS`` and ``IMAGINEBOT_RAY_WORKERS``. The crowd is sent once every worker has loaded
the model, and the peak memory is that of the bot and its worker processes (not the cluster's own).

``--compare mix``: both runs batched, once with plain prompts only and once with ``--mix`` of the crowd (0.5
by default, spread evenly) sending a three-part multi-prompt in their place (two positive parts and a negative
one: four UNet rows per image against a plain prompt's two). The parts of a multi-prompt are rows of the same
batched UNet calls as everyone else's jobs, so the mixed crowd's throughput falls by no more than its extra
rows say; the last line gives the throughput ratio, mixed against plain, beside that share of rows.

Exits non-zero if, in either run, a job was lost or an acknowledgement took 3 s or more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
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
CAPACITY_ENV = "IMAGINEBOT_BATCH_CAPACITY"
# the bot's line for a Ray worker that has loaded the model (IMAGINEBOT_LOG_LEVEL=INFO)
WORKER_READY = re.compile(r"(imaginebot-worker-\d+) ready on \S+ \(pid (\d+)\)")
INFO_LINE = re.compile(r"^\S+ \S+ \S*INFO\b")  # discord.py's format, with or without colours
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # bind to 127.0.0.1 on these machines


@dataclass
class Timing:
    sent: float
    ack: float | None = None
    first_preview: float | None = None
    grid: float | None = None


@dataclass(frozen=True)
class RunResult:
    """One crowd's figures."""

    grid_p99: float
    first_preview_p99: float
    throughput: float  # grids per second, from the first command sent to the last grid
    peak_memory: int  # bytes of RSS, the bot, its children and its Ray workers
    ok: bool  # every job completed and every acknowledgement came in under 3 s


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<22} none"
    return (
        f"{name:<22} p50 {statistics.median(values):7.2f} s   p99 {percentile(values, 0.99):7.2f} s"
        f"   max {max(values):7.2f} s   (n={len(values)})"
    )


def rss(process: psutil.Process) -> int:
    with contextlib.suppress(psutil.Error):  # gone since it was listed
        return process.memory_info().rss
    return 0


async def watch_memory(pid: int, workers: dict[str, int], peak: list[int], stop: asyncio.Event) -> None:
    """The bot, its children and its Ray workers (``workers``: name -> pid, filled in as they come up)."""
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            processes = [process, *process.children(recursive=True)]
        except psutil.Error:
            return
        for worker in workers.values():
            with contextlib.suppress(psutil.Error):
                processes.append(psutil.Process(worker))
        peak[0] = max(peak[0], sum(rss(p) for p in processes))
        await asyncio.sleep(0.1)


async def follow_log(stream: asyncio.StreamReader, workers: dict[str, int]) -> None:
    """Pass the bot's log through, INFO lines aside, noting each Ray worker's pid once it is ready."""
    while line := (await stream.readline()).decode(errors="replace"):
        if ready := WORKER_READY.search(line):
            workers[ready[1]] = int(ready[2])  # a restarted worker comes back with a new pid
        if not INFO_LINE.match(line):
            sys.stderr.write(line)


async def wait_for_workers(bot: asyncio.subprocess.Process, workers: dict[str, int], count: int) -> None:
    while len(workers) < count:
        if bot.returncode is not None:
            raise RuntimeError(f"the bot exited with {bot.returncode} before its Ray workers were ready")
        await asyncio.sleep(0.2)


def prompt_of(i: int, mix: float) -> str:
    """Student ``i``'s prompt: a multi-prompt for a ``mix`` share of the crowd, spread evenly, else plain."""
    if int((i + 1) * mix) > int(i * mix):
        return f"a red circle on a blue background:: number {i}::0.5 blur::-0.5"
    return f"a red circle on a blue background, number {i}"


def rows_per_image(mix: float) -> float:
    """UNet rows per image of the crowd, on average: a plain prompt's two (CFG), a multi-prompt's four."""
    return 2 * (1 - mix) + 4 * mix


async def run_crowd(
    args: argparse.Namespace,
    label: str,
    capacity: int | None,
    model: str,
    ray_address: str | None,
    mix: float = 0.0,
) -> RunResult:
    """Send the crowd to a fresh bot with ``capacity`` samples per UNet call (None: the bot's default), its
    workers on the Ray cluster at ``ray_address`` if given; ``mix``: the share sending multi-prompts."""
    workdir = Path(tempfile.mkdtemp(prefix=f"imaginebot-load-{label.replace(' ', '-')}-"))
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
        env.pop(CAPACITY_ENV, None)
        if capacity is not None:
            env[CAPACITY_ENV] = str(capacity)
        if model:
            env["IMAGINEBOT_MODEL"] = model
        if ray_address:
            env |= RAY_ENV | {
                "IMAGINEBOT_RAY_ADDRESS": ray_address,
                "IMAGINEBOT_RAY_WORKERS": str(args.workers),
                "RAY_AUTH_MODE": "token",
                "IMAGINEBOT_LOG_LEVEL": "INFO",  # for the line that says a worker is ready, and its pid
            }
        bot = await asyncio.create_subprocess_exec(
            *(sys.executable, str(ROOT / "bot.py"), "--discord-url", server.url),
            cwd=workdir,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        assert bot.stderr is not None
        workers: dict[str, int] = {}
        log = asyncio.create_task(follow_log(bot.stderr, workers))
        peak, stop = [0], asyncio.Event()
        memory = asyncio.create_task(watch_memory(bot.pid, workers, peak, stop))
        timings: dict[int, Timing] = {}
        try:
            await server.wait_for_commands(timeout=args.startup_timeout)
            if ray_address:  # unlike local workers, Ray workers load the model after the bot has logged in
                async with asyncio.timeout(args.startup_timeout):
                    await wait_for_workers(bot, workers, args.workers)

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
                    "imagine", {"prompt": prompt_of(i, mix)}, user=users[i]
                )
                timings[id(interaction)] = Timing(sent=sent)

            await asyncio.gather(*(send(i) for i in range(args.users)))
            deadline = started + args.timeout
            while time.monotonic() < deadline and not all(t.grid is not None for t in timings.values()):
                if bot.returncode is not None:
                    print(f"{label}: the bot exited with {bot.returncode}", file=sys.stderr)
                    break
                await asyncio.sleep(0.2)
            wall = time.monotonic() - started
        finally:
            stop.set()
            await memory
            if bot.returncode is None:
                bot.terminate()
            await asyncio.wait_for(bot.wait(), 30)
            await log

    done = [t for t in timings.values() if t.grid is not None]
    acks = [t.ack for t in timings.values() if t.ack is not None]
    grids = [t.grid for t in done if t.grid is not None]
    # the first picture: a job that ended before any preview was shown counts its grid
    previews = [p for t in timings.values() if (p := t.first_preview or t.grid) is not None]
    span = max((t.sent + t.grid for t in done if t.grid is not None), default=0.0) - min(
        (t.sent for t in timings.values()), default=0.0
    )
    throughput = len(done) / span if done else 0.0
    shown = "the bot's default" if capacity is None else str(capacity)
    multi = sum(prompt_of(i, mix) != prompt_of(i, 0.0) for i in range(args.users))
    print(
        f"[{label}] users {args.users} ({multi} multi-prompts), steps {args.steps}, "
        f"model {model or 'embedded'}, capacity {shown}, wall {wall:.1f} s"
    )
    print(f"[{label}] " + summary("ack latency", acks))
    print(f"[{label}] " + summary("time to first preview", previews))
    print(f"[{label}] " + summary("time to grid", grids))
    print(f"[{label}] {'jobs completed':<22} {len(done)} of {len(timings)} submitted")
    print(f"[{label}] {'throughput':<22} {throughput:.3f} grids/s")
    measured = f"the bot and its {len(workers)} Ray worker processes" if ray_address else "the bot"
    print(f"[{label}] {'peak memory':<22} {peak[0] / 2**20:.0f} MiB RSS ({measured})")
    late = [a for a in acks if a >= DISCORD_ACK_LIMIT]
    missing_acks = len(timings) - len(acks)
    if late or missing_acks:
        print(
            f"[{label}] FAIL: {len(late)} acknowledgements at or over 3 s, {missing_acks} never acknowledged"
        )
    if len(done) != len(timings) or len(timings) != args.users:
        print(f"[{label}] FAIL: not every job completed")
    return RunResult(
        grid_p99=percentile(grids, 0.99),
        first_preview_p99=percentile(previews, 0.99),
        throughput=throughput,
        peak_memory=peak[0],
        ok=not late and not missing_acks and len(done) == args.users,
    )


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


async def main(args: argparse.Namespace) -> int:
    model = args.model
    if args.tiny_random:
        from imaginebot.engine.tiny import save_sd, tiny_sd

        workdir = Path(tempfile.mkdtemp(prefix="imaginebot-load-model-"))
        model = str(save_sd(tiny_sd(seed=0), workdir / "model"))
    runs = {"single": ("one at a time", 1, args.mix), "batched": ("batched", args.capacity, args.mix)}
    if args.compare == "mix":
        mixed = f"batched, {round(100 * args.mix)}% multi-prompts"
        runs = {"plain": ("batched, plain", args.capacity, 0.0), "mixed": (mixed, args.capacity, args.mix)}
    if args.only:
        runs = {args.only: runs[args.only]}
    with contextlib.ExitStack() as stack:
        address = None
        if args.ray:
            from imaginebot.ray_workers import local_head

            address = stack.enter_context(local_head(cpus=max(2, args.workers)))
        where = f" on {args.workers} Ray workers" if args.ray else ""
        results = {
            key: await run_crowd(args, label + where, capacity, model, address, mix)
            for key, (label, capacity, mix) in runs.items()
        }
    if len(results) == 2 and args.compare == "mix":
        plain, mixed = results["plain"], results["mixed"]
        rows = rows_per_image(args.mix) / rows_per_image(0.0)
        throughput = ratio(mixed.throughput, plain.throughput)
        print(
            f"multi-prompts vs plain, both batched: throughput ratio {throughput:.2f}"
            f" for {rows:.2f}x the UNet rows per image (the rows' share alone would give {1 / rows:.2f}), "
            f"grid p99 ratio {ratio(mixed.grid_p99, plain.grid_p99):.2f}"
        )
    elif len(results) == 2:
        single, batched = results["single"], results["batched"]
        print(
            f"peak memory: one at a time {single.peak_memory / 2**20:.0f} MiB RSS, "
            f"batched {batched.peak_memory / 2**20:.0f} MiB RSS"
        )
        print(
            f"batched vs one at a time: grid p99 ratio {ratio(batched.grid_p99, single.grid_p99):.2f}, "
            f"first preview p99 ratio {ratio(batched.first_preview_p99, single.first_preview_p99):.2f}, "
            f"throughput ratio {ratio(batched.throughput, single.throughput):.2f}"
        )
    return 0 if all(r.ok for r in results.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default="", help="default: the bot's default (the embedded model)")
    parser.add_argument("--tiny-random", action="store_true", help="a tiny random-weight model instead")
    parser.add_argument(
        "--capacity", type=int, default=None, help="samples per UNet call when batched (default: the bot's)"
    )
    parser.add_argument(
        "--compare",
        choices=("batching", "mix"),
        default="batching",
        help="batching: one at a time against batched; mix: plain prompts against --mix multi-prompts",
    )
    parser.add_argument(
        "--mix", type=float, default=None, help="share of the crowd sending multi-prompts (0-1; mix: 0.5)"
    )
    parser.add_argument(
        "--only",
        choices=("single", "batched", "plain", "mixed"),
        help="run one side only (no comparison line)",
    )
    parser.add_argument("--ray", action="store_true", help="the bot's workers on a local Ray cluster")
    parser.add_argument("--workers", type=int, help="Ray workers, one CPU each (default 2; with --ray)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every grid")
    parser.add_argument("--startup-timeout", type=float, default=300)
    args = parser.parse_args()
    if args.workers is not None and not args.ray:
        parser.error("--workers needs --ray")
    args.workers = args.workers or 2
    if args.mix is None:
        args.mix = 0.5 if args.compare == "mix" else 0.0
    if not 0.0 <= args.mix <= 1.0:
        parser.error("--mix is a share of the crowd, from 0 to 1")
    sides = {"batching": ("single", "batched"), "mix": ("plain", "mixed")}[args.compare]
    if args.only and args.only not in sides:
        parser.error(f"--only with --compare {args.compare} is one of: {', '.join(sides)}")
    sys.exit(asyncio.run(main(args)))
