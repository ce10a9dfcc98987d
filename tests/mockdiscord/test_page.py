"""The web page in Debian's headless chromium: type /imagine, see the image and buttons, click; a DM
from the bot shows only to its user."""

from __future__ import annotations

import io
from typing import Any

import discord
import pytest
import pytest_asyncio
from mockbot import FINAL_PNG, EchoBot, ResultView

from imaginebot.mockdiscord import MockDiscord

pytestmark = pytest.mark.browser


@pytest_asyncio.fixture
async def page(test_bot: EchoBot, mock_page: Any) -> Any:
    return mock_page  # the bot must be connected before the page lists its commands


async def test_imagine_then_click_a_button(page, mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    await page.fill("#command", "/imagine a red fox")
    await page.press("#command", "Enter")
    image = page.locator("article.message img[alt='grid.png']")
    await image.wait_for(timeout=5000)
    assert await image.evaluate("img => img.complete && img.naturalWidth") == 4  # the bytes were served
    reply = page.locator("article.message", has=page.locator("img[alt='grid.png']"))
    # previews replace each other in place: one message, one image
    assert await reply.locator("img").count() == 1
    assert await page.locator("article.message").count() == 1
    assert test_bot.seen.commands == [("imagine", {"prompt": "a red fox"})]

    assert await reply.locator(".invoked").inner_text() == "Alice used /imagine"

    await reply.locator("button[data-custom-id='test:reroll']").click()
    await page.locator("article.message .content", has_text="rerolled by alice").wait_for(timeout=5000)
    assert test_bot.seen.clicks == [("test:reroll", "alice")]

    # an ephemeral answer shows only to the user who clicked
    await reply.locator("button[data-custom-id='test:u1']").click()
    await page.locator("article.message.ephemeral", has_text="upscaling for alice").wait_for(timeout=5000)
    upscaling = page.locator("article.message.ephemeral", has_text="upscaling for alice")
    assert await upscaling.locator(".invoked").inner_text() == "Alice pressed a button"
    await page.select_option("#user-picker", str(mock_discord.bob.id))
    await page.locator("article.message", has_text="rerolled by alice").wait_for(timeout=5000)
    assert await page.locator("article.message.ephemeral").count() == 0

    # a spoiler (a file named SPOILER_…) shows blurred under a label until clicked, as in Discord
    await page.fill("#command", "/imagine a spoiler")
    await page.press("#command", "Enter")
    spoiler = page.locator("article.message .spoiler", has=page.locator("img[alt='SPOILER_grid.png']"))
    await spoiler.wait_for(timeout=5000)
    image = spoiler.locator("img")
    assert "blur" in await image.evaluate("img => getComputedStyle(img).filter")
    assert await spoiler.locator(".spoiler-label").inner_text() == "SPOILER"
    await spoiler.click()
    assert await image.evaluate("img => getComputedStyle(img).filter") == "none"
    assert await spoiler.locator(".spoiler-label").is_hidden()
    assert test_bot.last_interaction is not None  # and a bot reading the message sees Discord's flag
    [attachment] = (await test_bot.last_interaction.original_response()).attachments
    assert attachment.flags.spoiler and attachment.is_spoiler()


async def test_select_moderator_command_and_delete(
    page, mock_discord: MockDiscord, test_bot: EchoBot
) -> None:
    # students don't see moderator commands (default_member_permissions), the teacher does
    await page.fill("#command", "/")
    assert "/imagine" in await page.locator("#suggestions").inner_text()
    assert "/quota set" not in await page.locator("#suggestions").inner_text()
    await page.select_option("#user-picker", str(mock_discord.moderator.id))
    await page.fill("#command", "/quo")
    await page.locator("#suggestions li", has_text="/quota set").click()
    await page.select_option("#options select[name='user']", "bob")
    await page.fill("#options input[name='images']", "7")
    await page.press("#command", "Enter")
    await page.locator("article.message.ephemeral", has_text="Bob: 7 images a day").wait_for(timeout=5000)
    name, options = test_bot.seen.commands[-1]
    assert name == "quota set" and options["user"].id == mock_discord.bob.id and options["images"] == 7

    await page.fill("#command", "/imagine an otter")
    await page.press("#command", "Enter")
    reply = page.locator("article.message", has=page.locator("img[alt='grid.png']"))
    await reply.wait_for(timeout=5000)
    await reply.locator("select[data-custom-id='test:size']").select_option("s")
    message = await mock_discord.wait_for_message(lambda m: m.content == "**an otter**")
    for _ in range(50):
        if test_bot.seen.selects:
            break
        await page.wait_for_timeout(50)
    assert test_bot.seen.selects == [("test:size", ["s"])]

    await reply.hover()
    await reply.locator("button.delete").click()
    await reply.wait_for(state="detached", timeout=5000)
    assert mock_discord.state.messages[message.id].deleted


async def test_direct_messages(page, mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    # the page acts as alice; the bot opens a DM with her and sends an image with buttons
    dm = await test_bot.create_dm(discord.Object(mock_discord.alice.id))
    await dm.send(
        "for you", file=discord.File(io.BytesIO(FINAL_PNG), "grid.png"), view=ResultView(test_bot.seen)
    )
    entry = page.locator("#dms li", has_text="@imaginebot")
    await entry.click()
    await page.locator("#channel-header", has_text="@imaginebot").wait_for(timeout=5000)
    reply = page.locator("article.message", has=page.locator("img[alt='grid.png']"))
    await reply.locator("button[data-custom-id='test:reroll']").click()
    await page.locator("article.message .content", has_text="rerolled by alice").wait_for(timeout=5000)
    assert test_bot.seen.clicks == [("test:reroll", "alice")]

    # bob sees neither the entry nor the messages
    await page.select_option("#user-picker", str(mock_discord.bob.id))
    await page.locator("#channel-header", has_text="# general").wait_for(timeout=5000)
    assert await page.locator("#dms li").count() == 0 and await page.locator("#dms-heading").is_hidden()
    assert await page.locator("article.message").count() == 0
