"""The gallery with a big class: how fast its pages answer with 20,000 jobs in the store, and what memory the
process serving them takes.

    .venv/bin/python bench/gallery.py                       # 20,000 jobs, 200 requests of each page
    .venv/bin/python bench/gallery.py --jobs 50000 --requests 500

Fills a store (the real schema, migrations included, so the FTS5 index is filled by its triggers) with jobs
of 30 students over 60 days (grids, variations, re-rolls, upscales, edits, two models), each with tiny image
files on disk, in one transaction (making 20,000 jobs through the job service would take an hour of fake
renders and gives the same rows). Then serves the gallery from a child process (the bot's web side: a
store, a job service, the aiohttp app; no model loaded) and times, one request at a time from this process,
after a warm-up:

- the first page (a moderator: every image),
- a search for a word in about one prompt of eight ("circle"),
- a student's own page (a student's link),
- an old page (``?before=`` a job in the middle: keyset paging costs the same however far back).

Each is reported as p50 and p99 in ms, and as a ratio to the same page of a reference store of 2,000 jobs
(where every page is already full) measured in the same run: 1.0 means the page does not slow down as the
class's gallery grows. The child's peak memory (VmHWM) is read from /proc: the bot's own is this plus its
models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imaginebot.catalog import Catalog, ModelInfo
from imaginebot.engine.planning import Planner
from imaginebot.executor import Executor
from imaginebot.jobs import JobService
from imaginebot.params import RequestDefaults
from imaginebot.store import DB_NAME, Store
from imaginebot.web import WebContext, create_app, serve_web
from imaginebot.web.links import LinkSigner, Viewer, load_or_create_secret

GUILD, TEACHER = 1000, 1
STUDENTS = range(100, 130)
DAYS = 60
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "black", "white", "grey"]
SHAPES = ["circle", "square", "triangle", "star", "heart", "hexagon", "cross", "moon"]
WHERE = ["top left", "top right", "bottom left", "bottom right", "in the middle"]
KINDS = ["imagine"] * 14 + ["variation"] * 2 + ["upscale"] * 2 + ["reroll", "edit"]
MODELS = ("shapes-64", "turbo")
CATALOG = Catalog(tuple(ModelInfo(name, "", 64, RequestDefaults(steps=20, model=name)) for name in MODELS))
SEARCH_WORD = "circle"


def tiny_png(side: int, colour: tuple[int, int, int]) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, "PNG")
    return buffer.getvalue()


def fill(data_dir: Path, jobs: int, seed: int = 0) -> None:
    """``jobs`` done jobs of 30 students on one server, oldest first, with their image files."""
    asyncio.run(_migrate(data_dir))
    rng = random.Random(seed)
    tiles = [tiny_png(8, (rng.randrange(256), rng.randrange(256), rng.randrange(256))) for _ in range(16)]
    grid = tiny_png(18, (40, 40, 40))
    start = datetime.now(UTC) - timedelta(days=DAYS)
    rows, imagines = [], []
    for job_id in range(1, jobs + 1):
        kind = rng.choice(KINDS) if imagines else "imagine"
        user = rng.choice(STUDENTS)
        prompt = (
            f"a {rng.choice(['small', 'large'])} {rng.choice(COLOURS)} {rng.choice(SHAPES)} on a "
            f"{rng.choice(COLOURS)} background, {rng.choice(WHERE)}"
        )
        parent = rng.choice(imagines) if kind != "imagine" else None
        single = kind in ("upscale", "edit")
        folder = data_dir / "images" / str(job_id)
        folder.mkdir(parents=True)
        images = []
        for i in range(1 if single else 4):
            (folder / f"tile-{i}.png").write_bytes(rng.choice(tiles))
            images.append(f"images/{job_id}/tile-{i}.png")
        grid_path = None
        if not single:
            (folder / "grid.png").write_bytes(grid)
            grid_path = f"images/{job_id}/grid.png"
            imagines.append(job_id)
        made = start + timedelta(seconds=DAYS * 86400 * job_id / (jobs + 1))
        seed0 = rng.randrange(2**32 - 4)
        rows.append(
            (user, GUILD, 20, 10**9 + job_id, kind, parent, 0 if parent else None, f"{prompt} --seed {seed0}",
             prompt, 20, 7.0, "euler_a", 128 if single else 64, 128 if single else 64,
             json.dumps([seed0] if single else [seed0 + i for i in range(4)]), json.dumps(images), grid_path,
             made.date().isoformat(), made.isoformat(), made.isoformat(),
             (made + timedelta(seconds=9)).isoformat(),
             rng.choice(MODELS), '{"kind": "zoom", "factor": 2.0}' if kind == "edit" else None)
        )  # fmt: skip
    with sqlite3.connect(data_dir / DB_NAME) as db:
        db.executemany(
            "INSERT INTO jobs (user_id, guild_id, channel_id, message_id, kind, parent_id, tile_index,"
            " prompt_text, prompt, steps, cfg, sampler, width, height, seeds, status, images, grid, charged,"
            " charged_day, created_at, started_at, finished_at, elapsed_s, delivery, model, edit)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'done', ?, ?, 4, ?, ?, ?, ?, 9.0,"
            " 'delivered', ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO members (guild_id, user_id, name, seen_at) VALUES (?, ?, ?, ?)",
            [(GUILD, user, f"Student {user - 99:02d}", start.isoformat()) for user in STUDENTS],
        )


async def _migrate(data_dir: Path) -> None:
    async with await Store.open(data_dir):
        pass


# -- the child: the web side serving the store -------------------------------------------------------------


async def serve(data_dir: Path) -> None:
    store = await Store.open(data_dir)
    executor = Executor(planner=Planner(64, 4, guidance_embedded=False))  # no worker: nothing is made here
    jobs = JobService(store, executor, catalog=CATALOG)
    signer = LinkSigner(load_or_create_secret(data_dir))
    async with serve_web(create_app(WebContext(jobs, data_dir, links=signer)), "127.0.0.1", 0) as url:
        print(url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    await jobs.close()
    await store.close()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc: this measures memory on Linux only")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc")


# -- the parent: timing the pages ----------------------------------------------------------------------------


async def time_pages(url: str, data_dir: Path, jobs: int, requests: int) -> dict[str, list[float]]:
    signer = LinkSigner(load_or_create_secret(data_dir))
    expires = datetime.now(UTC) + timedelta(hours=1)
    teacher = signer.sign(Viewer(GUILD, TEACHER, True, expires))
    student = signer.sign(Viewer(GUILD, STUDENTS[0], False, expires))
    pages = {
        "first page": ("/gallery", teacher),
        f"search '{SEARCH_WORD}'": (f"/gallery?q={SEARCH_WORD}", teacher),
        "a student's page": ("/gallery", student),
        "an old page": (f"/gallery?before={jobs // 2}", teacher),
    }
    times: dict[str, list[float]] = {}
    async with aiohttp.ClientSession() as session:
        for name, (path, token) in pages.items():
            headers = {"Cookie": f"imaginebot_gallery={token}"}
            for _ in range(5):  # warm-up: the first request of each page loads SQLite's pages
                async with session.get(url + path, headers=headers) as answer:
                    body = await answer.text()
                    assert answer.status == 200 and 'class="card"' in body, (name, answer.status)
            samples = []
            for _ in range(requests):
                started = time.perf_counter()
                async with session.get(url + path, headers=headers) as answer:
                    await answer.read()
                samples.append((time.perf_counter() - started) * 1000)
            times[name] = samples
    return times


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1] if q < 100 else max(samples)


def run(data_dir: Path, jobs: int, requests: int) -> tuple[dict[str, list[float]], float, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the child did not start: {url!r}")
        ready = rss_mib(child.pid)
        times = asyncio.run(time_pages(url, data_dir, jobs, requests))
        peak = peak_rss_mib(child.pid)
        child.stdin.close()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    return times, ready, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--reference-jobs", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for size in (args.reference_jobs, args.jobs):
            data_dir = Path(tmp) / str(size)
            started = time.perf_counter()
            fill(data_dir, size)
            files = sum(len(files) for _, _, files in os.walk(data_dir / "images"))
            took = time.perf_counter() - started
            print(f"filled a store with {size:,} jobs ({files:,} image files) in {took:.1f} s", flush=True)
            results[size] = run(data_dir, size, args.requests)
        reference, (times, ready, peak) = results[args.reference_jobs][0], results[args.jobs]
        print(f"\n{args.requests} requests of each page, one at a time, on {os.cpu_count()} CPUs:")
        print(f"{'page':<22}{'p50 ms':>9}{'p99 ms':>9}   vs {args.reference_jobs:,} jobs (p50)")
        for name, samples in times.items():
            ratio = statistics.median(samples) / statistics.median(reference[name])
            print(f"{name:<22}{p(samples, 50):>9.1f}{p(samples, 99):>9.1f}   {ratio:.2f}")
        worst = max(p(samples, 99) for samples in times.values())
        print(f"\nworst p99: {worst:.1f} ms (goal: 150 ms)")
        print(f"the serving process: {ready:.0f} MiB when ready, {peak:.0f} MiB at its peak")


if __name__ == "__main__":
    main()
