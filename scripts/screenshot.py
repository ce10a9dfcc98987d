"""Make the README's picture of the bot at work: the local Discord's page after a student's /imagine.

    .venv/bin/python scripts/screenshot.py [--out docs/screenshot.png] [--prompt "..."]

Starts the local Discord and the bot (embedded model, or --model) in this process, types the prompt on
the page in Debian's headless chromium, waits for the grid, and saves a screenshot of the page.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from localbot import ROOT, bot_on_the_local_discord, chromium


async def main(args: argparse.Namespace) -> None:
    async with bot_on_the_local_discord(args.model) as (server, _bot), chromium() as browser:
        page = await browser.new_page(viewport={"width": 900, "height": 760}, device_scale_factor=2)
        await page.goto(server.page_url)
        await page.wait_for_function("document.body.dataset.live === '1'")
        await page.fill("#command", f"/imagine {args.prompt}")
        await page.press("#command", "Enter")
        await page.locator("button[data-custom-id^='ib:u:']").first.wait_for(timeout=300_000)
        await page.wait_for_timeout(500)  # let the grid image paint
        args.out.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(args.out))
    print(f"saved {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--prompt", default="a big red star on a blue background --seed 7")
    parser.add_argument("--model", default="", help="default: the embedded model")
    asyncio.run(main(parser.parse_args()))
