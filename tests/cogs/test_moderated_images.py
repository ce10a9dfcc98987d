"""Image moderation end to end on the local Discord: the bot's worker runs a real (random-weight) safety
checker after decoding; what it flags is posted blurred as a spoiler, refused to U/V, and changes when a
moderator releases or removes it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops
from safetycheckers import save_checker
from test_imagine import TIMEOUT, imagine, job_id_of, refusal

from imaginebot.engine import DiffusionEngine
from imaginebot.engine.models import ModelSet
from imaginebot.engine.safety import load_safety_checker
from imaginebot.review import held_back_picture
from imaginebot.store_models import Review

BotFactory = Any  # tests/cogs/conftest.py: bot_factory(engine, **settings) -> RunningBot
MODEL = "shapes-64"  # the name the settings give the one model


def picture(attachment: Any) -> Image.Image:
    with Image.open(io.BytesIO(attachment.data)) as image:
        return image.convert("RGB")


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


async def checked_bot(bot_factory: BotFactory, engine: DiffusionEngine, folder: Path, *, flags: bool) -> Any:
    checker = load_safety_checker(save_checker(folder, flags=flags), device="cpu")
    return await bot_factory(ModelSet({MODEL: engine}, safety=checker))


async def test_a_flagged_grid_is_a_blurred_spoiler_until_a_moderator_releases_it(
    mock_discord: Any, bot_factory: BotFactory, tiny_engine: DiffusionEngine, tmp_path: Path
) -> None:
    running = await checked_bot(bot_factory, tiny_engine, tmp_path / "checker", flags=True)
    alice, bob = mock_discord.alice, mock_discord.bob
    grid = await imagine(mock_discord, alice, "a red circle --seed 5 --steps 2")
    job = await running.store.get_job(job_id_of(grid))
    assert job is not None and (job.flagged, job.review) == ((0, 1, 2, 3), Review.WAITING)
    [posted] = grid.attachments
    assert posted.filename.startswith("SPOILER_")  # Discord hides it behind a click
    assert posted.payload(mock_discord.url)["flags"] == 8  # IS_SPOILER, as Discord sets it
    assert "Images 1, 2, 3, 4 were flagged by the safety checker" in grid.content
    tiles = [await running.store.load_image(path) for path in job.images]
    clear = await running.store.load_image(job.grid)
    # blurred, from the stored tiles (the same code on the same tiles: the very pixels), not the clear grid
    assert same_pixels(picture(posted), held_back_picture(job, tiles))
    assert not same_pixels(picture(posted), clear)

    # U and V on a flagged tile: refused, told to the one who pressed, nothing charged
    for button in (f"ib:u:{job.id}:1", f"ib:v:{job.id}:3"):
        click = await mock_discord.click(grid, button, user=bob)
        assert "Image" in (said := await refusal(mock_discord, click)) and "moderator's review" in said
    assert (await running.store.quota_status(mock_discord.guild_id, bob.id)).used == 0

    await running.jobs.reviews.release(mock_discord.guild_id, job.id, by=mock_discord.moderator.id)
    released = await mock_discord.wait_for_message(
        lambda m: (
            m.id == grid.id and bool(m.attachments) and not m.attachments[0].filename.startswith("SPOILER_")
        ),
        timeout=TIMEOUT,
    )
    assert same_pixels(picture(released.attachments[0]), clear)
    assert "flagged" not in released.content and released.custom_ids == grid.custom_ids
    click = await mock_discord.click(released, f"ib:u:{job.id}:1", user=bob)
    upscaled = await mock_discord.wait_for_response(
        click, lambda m: "ib:s:" in str(m.custom_ids), timeout=TIMEOUT
    )
    # every job is checked: this checker flags the upscale too
    assert (
        upscaled.attachments[0].filename.startswith("SPOILER_")
        and "This image was flagged" in upscaled.content
    )


async def test_a_removed_grid_becomes_a_notice(
    mock_discord: Any, bot_factory: BotFactory, tiny_engine: DiffusionEngine, tmp_path: Path
) -> None:
    running = await checked_bot(bot_factory, tiny_engine, tmp_path / "checker", flags=True)
    grid = await imagine(mock_discord, mock_discord.alice, "a blue square --seed 7 --steps 2")
    job_id = job_id_of(grid)
    await running.jobs.reviews.remove(mock_discord.guild_id, job_id, by=mock_discord.moderator.id)
    notice = await mock_discord.wait_for_message(
        lambda m: m.id == grid.id and not m.attachments, timeout=TIMEOUT
    )
    assert "was taken down by a moderator" in notice.content and notice.custom_ids == []
    assert "a blue square" not in notice.content  # the takedown's notice: the prompt may be why


async def test_a_checker_that_flags_nothing_changes_nothing(
    mock_discord: Any, bot_factory: BotFactory, tiny_engine: DiffusionEngine, tmp_path: Path
) -> None:
    running = await checked_bot(bot_factory, tiny_engine, tmp_path / "checker", flags=False)
    grid = await imagine(mock_discord, mock_discord.alice, "a red circle --seed 5 --steps 2")
    job = await running.store.get_job(job_id_of(grid))
    assert job is not None and (job.flagged, job.review) == ((), None)
    [posted] = grid.attachments
    assert not posted.filename.startswith("SPOILER_") and "flags" not in posted.payload(mock_discord.url)
    assert same_pixels(picture(posted), await running.store.load_image(job.grid))
    assert "flagged" not in grid.content
