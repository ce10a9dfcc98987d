"""Make the README's picture of the bot at work: the local Discord's page after a student's /imagine.

    .venv/bin/python scripts/screenshot.py [--out docs/screenshot.png] [--prompt "..."]

Starts the local Discord and the bot (embedded model, or --model) in this process, types the prompt on
the page in Debian's headless chromium, waits for the grid, and saves a screenshot of the page.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot import ImagineBot, job_service  # noqa: E402
from imaginebot.config import load_settings  # noqa: E402
from imaginebot.discord_url import use_discord_url  # noqa: E402
from imaginebot.engine import load_engine  # noqa: E402
from imaginebot.executor import Executor  # noqa: E402
from imaginebot.mockdiscord import run_mock_discord  # noqa: E402
from imaginebot.mockdiscord.clients import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from imaginebot.store import Store  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    settings = load_settings(**({"model": args.model} if args.model else {}), data_dir=tempfile.mkdtemp())
    engine = await asyncio.to_thread(load_engine, settings.model_path, device="cpu")
    async with run_mock_discord() as server, await Store.open(settings.data_dir) as store:
        use_discord_url(server.url)
        executor = Executor(engine, preview_every=settings.preview_every)
        await executor.start()
        jobs = job_service(
            settings, store, executor, settings.catalog({settings.model_entries[0].name: engine.planner})
        )
        bot = ImagineBot(settings, store, jobs, guild_ready_timeout=0.1)
        running = asyncio.create_task(bot.start(server.bot_token))
        await server.wait_for_commands(timeout=60)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            page = await browser.new_page(viewport={"width": 900, "height": 760}, device_scale_factor=2)
            await page.goto(server.page_url)
            await page.wait_for_function("document.body.dataset.live === '1'")
            await page.fill("#command", f"/imagine {args.prompt}")
            await page.press("#command", "Enter")
            await page.locator("button[data-custom-id^='ib:u:']").first.wait_for(timeout=300_000)
            await page.wait_for_timeout(500)  # let the grid image paint
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
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--prompt", default="a big red star on a blue background --seed 7")
    parser.add_argument("--model", default="", help="default: the embedded model")
    asyncio.run(main(parser.parse_args()))
