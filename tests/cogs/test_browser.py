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


async def test_the_gallery_in_a_browser_search_take_down_and_a_students_link(
    mock_discord: Any, bot_factory: BotFactory, mock_page: Any
) -> None:
    """A grid made on the page appears in the gallery; search finds it by a word of its prompt; the moderator
    takes it down and its Discord message changes; a student's link can't open another student's image."""
    page = mock_page
    running = await bot_factory(web=True)
    await page.fill("#command", "/imagine a purple triangle on a yellow background --steps 2 --seed 4")
    await page.press("#command", "Enter")
    grid_message = page.locator("article.message", has=page.locator("button[data-custom-id^='ib:u:']"))
    await grid_message.first.wait_for(timeout=60_000)
    (job,) = await running.store.recent_jobs(mock_discord.guild_id, mock_discord.alice.id)

    async def link_for(user: Any) -> str:
        interaction = await mock_discord.send_command("gallery", user=user)
        reply = await mock_discord.wait_for_response(interaction, lambda m: m.ephemeral, timeout=30)
        found = re.search(r"(http://\S+/gallery\?t=[\w.-]+)", reply.content)
        assert found, reply.content
        return found[1]

    browser = page.context.browser
    teacher_context = await browser.new_context()
    gallery = await teacher_context.new_page()
    problems: list[str] = []
    gallery.on("pageerror", lambda error: problems.append(str(error)))
    gallery.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    gallery.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status == 404 else None)
    try:
        await gallery.goto(await link_for(mock_discord.moderator))
        assert "?t=" not in gallery.url  # the token went into a cookie
        card = gallery.locator(f"article.card[data-job='{job.id}']")
        await card.wait_for(timeout=10_000)
        thumb = card.locator("img")
        await gallery.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=await thumb.element_handle()
        )
        assert "a purple triangle" in await card.inner_text() and "Alice" in await card.inner_text()

        await gallery.fill("input[name=q]", "otter")
        await gallery.press("input[name=q]", "Enter")
        await gallery.locator(".empty").wait_for(timeout=10_000)
        await gallery.fill("input[name=q]", "triangles")
        await gallery.press("input[name=q]", "Enter")
        await card.wait_for(timeout=10_000)
        assert await gallery.locator("article.card").count() == 1

        # Bob's link, in his own browser: his gallery, but not Alice's image
        bob_context = await browser.new_context()
        try:
            bob = await bob_context.new_page()
            await bob.goto(await link_for(mock_discord.bob))
            assert "Your images" in await bob.locator("h1").inner_text()
            assert await bob.locator("article.card").count() == 0
            for path in (f"/gallery/jobs/{job.id}", f"/gallery/jobs/{job.id}/grid.png"):
                answer = await bob.goto(running.web_url + path)
                assert answer is not None and answer.status == 403, path
        finally:
            await bob_context.close()

        await card.locator("button", has_text="Take down").click()
        await card.wait_for(state="detached", timeout=10_000)
        assert await gallery.locator(".empty").count() == 1
        # the Discord message changed on the local Discord's page
        notice = page.locator("article.message", has_text="was taken down by a moderator")
        await notice.wait_for(timeout=30_000)
        assert await notice.locator("img").count() == 0
        assert await notice.locator("button[data-custom-id^='ib:']").count() == 0
        await gallery.goto(running.web_url + "/gallery/removed")
        await gallery.locator(f"article.card[data-job='{job.id}'] button", has_text="Undo").wait_for()
        await gallery.screenshot(path=str(Path(running.store.data_dir) / "gallery-removed.png"))
        assert problems == []
    finally:
        await teacher_context.close()
