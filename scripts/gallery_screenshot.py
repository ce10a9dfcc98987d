"""Make the README's picture of the class gallery: a moderator's view after a few students' /imagine.

    .venv/bin/python scripts/gallery_screenshot.py [--out docs/gallery.png]

Starts the local Discord, the bot (embedded model, or --model) and its web side in this process; three
students send /imagine through the local Discord's test API (and one upscales a tile), the teacher asks for
/gallery, and Debian's headless chromium opens her link and saves a screenshot of the gallery.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot import ImagineBot, job_service, web_side  # noqa: E402
from imaginebot.config import load_settings  # noqa: E402
from imaginebot.discord_url import use_discord_url  # noqa: E402
from imaginebot.engine import load_engine  # noqa: E402
from imaginebot.executor import Executor  # noqa: E402
from imaginebot.mockdiscord import run_mock_discord  # noqa: E402
from imaginebot.mockdiscord.clients import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from imaginebot.store import Store  # noqa: E402

PROMPTS = [  # (student, prompt): what the embedded model draws (five shapes, eight colours)
    ("alice", "a large red circle on a blue background --seed 3"),
    ("bob", "a small yellow star on a purple background, top left --seed 11"),
    ("carol", "a green triangle on a white background --seed 5"),
    ("alice", "a large orange diamond on a blue background --seed 8"),
    ("bob", "a blue square on a yellow background, bottom right --seed 21"),
    ("carol", "a white star on a green background --seed 2"),
    ("alice", "a purple circle on an orange background --seed 13"),
    ("carol", "a small red square on a white background, top right --seed 4"),
]
TIMEOUT = 300


def is_grid(message: object) -> bool:
    return any(cid.startswith("ib:u:") for cid in message.custom_ids) and bool(message.attachments)  # type: ignore[attr-defined]


async def main(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    settings = load_settings(
        **({"model": args.model} if args.model else {}), data_dir=tempfile.mkdtemp(), web_port=0
    )
    engine = await asyncio.to_thread(load_engine, settings.model_path, device="cpu")
    async with run_mock_discord() as server, await Store.open(settings.data_dir) as store:
        use_discord_url(server.url)
        executor = Executor(engine, preview_every=settings.preview_every)
        await executor.start()
        jobs = job_service(
            settings, store, executor, settings.catalog({settings.model_entries[0].name: engine.planner})
        )
        bot = ImagineBot(settings, store, jobs, guild_ready_timeout=0.1)
        async with web_side(settings, jobs, settings.data_dir, bot):
            running = asyncio.create_task(bot.start(server.bot_token))
            await server.wait_for_commands(timeout=60)
            grids = []
            for user, prompt in PROMPTS:
                interaction = await server.send_command("imagine", {"prompt": prompt}, user=server.user(user))
                grids.append(await server.wait_for_response(interaction, is_grid, timeout=TIMEOUT))
            first = grids[1]
            job_id = next(cid for cid in first.custom_ids if cid.startswith("ib:u:")).split(":")[2]
            click = await server.click(first, f"ib:u:{job_id}:1", user=server.user("bob"))
            await server.wait_for_response(click, lambda m: bool(m.attachments), timeout=TIMEOUT)
            await jobs.idle()
            interaction = await server.send_command("gallery", user=server.moderator)
            reply = await server.wait_for_response(interaction, lambda m: m.ephemeral, timeout=60)
            found = re.search(r"(http://\S+/gallery\?t=[\w.-]+)", reply.content)
            assert found, reply.content
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                )
                page = await browser.new_page(viewport={"width": 1280, "height": 760}, device_scale_factor=2)
                await page.goto(found[1])
                for image in await page.locator("article.card img").element_handles():
                    await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(args.out))
                await browser.close()
            await bot.close()
            await running
        await jobs.close()
        await executor.stop()
    print(f"saved {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery.png")
    parser.add_argument("--model", default="", help="default: the embedded model")
    asyncio.run(main(parser.parse_args()))
