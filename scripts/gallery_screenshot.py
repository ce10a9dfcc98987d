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
from pathlib import Path

from localbot import ROOT, bot_on_the_local_discord, chromium

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
    async with bot_on_the_local_discord(args.model, web=True) as (server, bot):
        grids = []
        for user, prompt in PROMPTS:
            interaction = await server.send_command("imagine", {"prompt": prompt}, user=server.user(user))
            grids.append(await server.wait_for_response(interaction, is_grid, timeout=TIMEOUT))
        first = grids[1]
        job_id = next(cid for cid in first.custom_ids if cid.startswith("ib:u:")).split(":")[2]
        click = await server.click(first, f"ib:u:{job_id}:1", user=server.user("bob"))
        await server.wait_for_response(click, lambda m: bool(m.attachments), timeout=TIMEOUT)
        await bot.jobs.idle()
        interaction = await server.send_command("gallery", user=server.moderator)
        reply = await server.wait_for_response(interaction, lambda m: m.ephemeral, timeout=60)
        found = re.search(r"(http://\S+/gallery\?t=[\w.-]+)", reply.content)
        assert found, reply.content
        async with chromium() as browser:
            page = await browser.new_page(viewport={"width": 1280, "height": 760}, device_scale_factor=2)
            await page.goto(found[1])
            for image in await page.locator("article.card img").element_handles():
                await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(args.out))
    print(f"saved {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery.png")
    parser.add_argument("--model", default="", help="default: the embedded model")
    asyncio.run(main(parser.parse_args()))
