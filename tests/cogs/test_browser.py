"""The whole product in a browser: the real bot on the local Discord's page, driven like a student would."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from imaginebot.edits import ARROWS
from imaginebot.store_models import EditKind, JobKind, JobStatus

pytestmark = pytest.mark.browser
BotFactory = Any  # tests/cogs/conftest.py: bot_factory(**settings) -> RunningBot


async def test_type_imagine_get_a_grid_and_upscale(
    mock_discord: Any, bot_factory: BotFactory, mock_page: Any
) -> None:
    page = mock_page
    running = await bot_factory()
    await page.fill("#command", "/imagine a red circle on a blue background --steps 4 --seed 12")
    await page.press("#command", "Enter")

    upscale_button = page.locator("button[data-custom-id^='ib:u:']")
    await upscale_button.first.wait_for(timeout=60_000)
    reply = page.locator("article.message", has=upscale_button)
    assert await reply.locator("button[data-custom-id^='ib:']").count() == 9
    image = reply.locator("img")
    assert await image.count() == 1  # previews replaced each other in place
    await page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=await image.element_handle()
    )
    text = await reply.inner_text()
    assert "--seed 12" in text
    # Discord's markdown is rendered: the bold prompt, the author's mention, the canonical prompt as code
    assert "**" not in text and "<@" not in text and "@Alice" in text
    assert await reply.locator("strong", has_text="a red circle on a blue background").count() == 1
    assert await reply.locator("code", has_text="--seed 12").count() == 1

    await reply.locator("button", has_text="U2").click()
    vary = page.locator("button[data-custom-id^='ib:s:']")
    await vary.first.wait_for(timeout=60_000)
    upscale = page.locator("article.message", has=vary)
    assert "Upscale of image 2" in await upscale.inner_text()
    jobs = await running.store.recent_jobs(mock_discord.guild_id, mock_discord.alice.id)
    assert [(job.kind, job.tile_index) for job in jobs] == [("upscale", 1), ("imagine", None)]


async def test_custom_zoom_in_a_modal_then_pan_an_upscale(
    mock_discord: Any, bot_factory: BotFactory, mock_page: Any, tmp_path: Path
) -> None:
    page = mock_page
    running = await bot_factory()
    await page.fill("#command", "/imagine a red circle --steps 4 --seed 2")
    await page.press("#command", "Enter")
    grid = page.locator("article.message", has=page.locator("button[data-custom-id^='ib:u:']"))
    await grid.first.wait_for(timeout=30_000)

    await grid.first.locator("button", has_text="U1").click()
    custom_zoom = page.locator("button[data-custom-id^='ib:m:']")
    await custom_zoom.wait_for(timeout=30_000)
    upscale = page.locator("article.message", has=custom_zoom)
    assert "Upscale of image 1" in await upscale.locator(".content").inner_text()
    labels = await upscale.locator("button.component").all_inner_texts()
    for tool in ("Upscale (Subtle)", "Vary (Strong)", "Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom"):
        assert any(tool in label for label in labels), (tool, labels)
    arrows = list(ARROWS.values())
    assert [label for label in labels if label in arrows] == arrows  # ⬅️ ➡️ ⬆️ ⬇️
    assert not any("Make Square" in label for label in labels)  # the upscale is square

    # Custom Zoom: a dialog with the prompt and the factor, both pre-filled
    await custom_zoom.click()
    dialog = page.locator("dialog#modal[open]")
    await dialog.wait_for(timeout=10_000)
    assert await dialog.locator("h2").inner_text() == "Custom Zoom"
    prompt = dialog.locator("textarea[name='prompt']")
    factor = dialog.locator("input[name='factor']")
    prefilled = await prompt.input_value()
    assert prefilled.startswith("a red circle ") and "--steps 4" in prefilled and "--seed 2" in prefilled
    assert await factor.input_value() == "2"
    assert await dialog.locator(".modal-label").all_text_contents() == ["Prompt", "Zoom out by (1 to 2)"]
    await factor.fill("1.5")
    # the pre-filled prompt says its --ar already; a second one would be refused, so it is changed
    await prompt.fill(re.sub(r"\s*--ar \S+", "", prefilled) + " --ar 2:1")
    await dialog.locator("#modal-submit").click()
    await page.locator("dialog#modal[open]").wait_for(state="detached", timeout=10_000)

    zoomed = page.locator(
        "article.message",
        has=page.locator(".content", has_text="Zoom Out 1.5x"),
    ).filter(has=page.locator("button[data-custom-id^='ib:u:']"))
    await zoomed.wait_for(timeout=30_000)
    zoom_text = await zoomed.locator(".content").inner_text()
    assert "--ar 2:1" in zoom_text and "@Alice" in zoom_text
    jobs = await running.store.recent_jobs(mock_discord.guild_id, mock_discord.alice.id)
    newest = jobs[0]
    assert newest.kind is JobKind.EDIT and newest.status is JobStatus.DONE
    assert newest.edit is not None and newest.edit.kind is EditKind.ZOOM and newest.edit.factor == 1.5
    assert newest.spec.width == 2 * newest.spec.height
    assert newest.parent_id == jobs[1].id and jobs[1].kind is JobKind.UPSCALE

    # ⬅️ on the upscale (still there, its buttons still live): a pan, a new grid
    await upscale.locator("button", has_text="⬅️").click()
    panned = page.locator(
        "article.message",
        has=page.locator(".content", has_text="Pan ⬅️"),
    ).filter(has=page.locator("button[data-custom-id^='ib:u:']"))
    await panned.wait_for(timeout=30_000)
    jobs = await running.store.recent_jobs(mock_discord.guild_id, mock_discord.alice.id)
    assert jobs[0].edit is not None and jobs[0].edit.kind is EditKind.PAN
    assert jobs[0].parent_id == jobs[2].id  # the upscale's
    for image in await page.locator("article.message img").element_handles():
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image)
    assert await page.locator("dialog#modal[open]").count() == 0
    # the messages scroll in their own pane: a tall window shows the upscale and both new grids
    await page.set_viewport_size({"width": 1280, "height": 1800})
    await page.locator("#messages").evaluate("box => { box.scrollTop = box.scrollHeight; }")
    await page.screenshot(path=str(tmp_path / "custom-zoom-and-pan.png"))
