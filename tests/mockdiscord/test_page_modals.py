"""The page in Debian's headless chromium with editbot.EditBot: a modal opens as a dialog for its
user only, is filled in and submitted; a file goes to a command's attachment option; a multi-select
takes several choices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from editbot import EditBot
from mockbot import tiny_png

from imaginebot.mockdiscord import MockDiscord

pytestmark = pytest.mark.browser


@pytest_asyncio.fixture
async def page(edit_bot: EditBot, mock_page: Any) -> Any:
    return mock_page  # the bot must be connected before the page lists its commands


async def test_fill_in_and_submit_a_modal(page: Any, mock_discord: MockDiscord, edit_bot: EditBot) -> None:
    await page.fill("#command", "/describe")
    await page.press("#command", "Enter")
    dialog = page.locator("dialog#modal[open]")
    await dialog.wait_for(timeout=5000)
    assert await dialog.locator("h2").inner_text() == "Edit prompt"
    prompt = dialog.locator("textarea[name='edit:prompt']")
    assert await prompt.input_value() == "a red fox"  # pre-filled
    assert await prompt.get_attribute("maxlength") == "200"
    assert await dialog.locator(".modal-field.required .modal-label", has_text="Prompt").count() == 1
    assert "What the image should not show" in await dialog.inner_text()

    # another user doesn't see it; back as alice it is still open
    await page.select_option("#user-picker", str(mock_discord.bob.id))
    await page.locator("dialog#modal:not([open])").wait_for(state="attached", timeout=5000)
    await page.select_option("#user-picker", str(mock_discord.alice.id))
    await dialog.wait_for(timeout=5000)

    await prompt.fill("a fox in the snow")
    await dialog.locator("input[name='edit:negative']").fill("no")  # too short (at least 3)
    await dialog.locator("select[name='edit:styles']").select_option(["ink", "pixel"])
    await dialog.locator("#modal-submit").click()
    await dialog.locator("#modal-error", has_text="must be 3..50 characters").wait_for(timeout=5000)
    assert edit_bot.edits.submissions == []

    await dialog.locator("input[name='edit:negative']").fill("trees")
    await dialog.locator("#modal-submit").click()
    reply = page.locator("article.message .content", has_text="remixed: a fox in the snow")
    await reply.wait_for(timeout=5000)
    assert await reply.inner_text() == "remixed: a fox in the snow (without trees; ink, pixel)"
    assert await page.locator("dialog#modal[open]").count() == 0
    assert edit_bot.edits.submissions == [
        {"prompt": "a fox in the snow", "negative": "trees", "styles": ["ink", "pixel"]}
    ]

    # Cancel closes it without a word to the bot
    await page.fill("#command", "/describe")
    await page.press("#command", "Enter")
    await dialog.wait_for(timeout=5000)
    await dialog.locator("#modal-cancel").click()
    await page.locator("dialog#modal[open]").wait_for(state="detached", timeout=5000)
    for _ in range(50):
        if mock_discord.modal_for(mock_discord.alice) is None:
            break
        await page.wait_for_timeout(20)
    assert mock_discord.modal_for(mock_discord.alice) is None and len(edit_bot.edits.submissions) == 1


async def test_attachment_option_and_multi_select(
    page: Any, mock_discord: MockDiscord, edit_bot: EditBot, tmp_path: Path
) -> None:
    png = tiny_png((0, 120, 255), size=6)
    (tmp_path / "sketch.png").write_bytes(png)
    await page.fill("#command", "/upload")
    await page.locator("#options input[type=file][name='image']").set_input_files(
        str(tmp_path / "sketch.png")
    )
    await page.press("#command", "Enter")
    await page.locator("article.message .content", has_text=f"sketch.png: {len(png)} bytes, 6x6").wait_for(
        timeout=5000
    )
    assert edit_bot.edits.uploads == [("sketch.png", len(png), png)]

    await page.fill("#command", "/styles")
    await page.press("#command", "Enter")
    menu = page.locator("select[data-custom-id='edit:pick']")
    await menu.wait_for(timeout=5000)
    assert await menu.get_attribute("multiple") is not None
    await menu.select_option(["watercolor", "oil"])
    await page.locator("article.message", has=menu).locator("button", has_text="Choose").click()
    await page.locator("article.message.ephemeral", has_text="styles: watercolor, oil").wait_for(timeout=5000)
    assert edit_bot.edits.styles == [["watercolor", "oil"]]
