"""The whole product in a browser: the real bot on the local Discord's page, driven like a student would."""

from __future__ import annotations

from typing import Any

import pytest

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
