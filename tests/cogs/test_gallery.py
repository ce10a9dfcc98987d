"""/gallery and taking an image down, end to end on the local Discord: the bot with its web side, a student's
and a moderator's private links, the takedown replacing the Discord message, /modlog, and undo."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from test_imagine import TIMEOUT, imagine, job_id_of

BotFactory = Any  # tests/cogs/conftest.py: bot_factory(**settings) -> RunningBot


async def gallery_link(mock: Any, user: Any) -> tuple[str, Any]:
    interaction = await mock.send_command("gallery", user=user)
    message = await mock.wait_for_response(interaction, lambda m: m.ephemeral, timeout=TIMEOUT)
    found = re.search(r"(http://\S+/gallery\?t=[\w.-]+)", message.content)
    assert found, message.content
    return found[1], message


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1 too


def key_of(html: str) -> str:
    found = re.search(r'name="key" value="([^"]+)"', html)
    assert found, html[-3000:]
    return found[1]


async def test_gallery_hands_each_their_own_private_link(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory(web=True)
    mock = mock_discord
    grid = await imagine(mock, mock.alice, "a red circle --steps 2 --seed 3")
    job_id = job_id_of(grid)
    link, message = await gallery_link(mock, mock.alice)
    assert link.startswith(running.web_url + "/gallery?t=")
    assert "Your gallery" in message.content and "don't share it" in message.content
    assert message.ephemeral and message not in mock.messages(visible_to=mock.bob)
    async with session() as alice:
        page = await alice.get(link)
        html = await page.text()
        assert page.status == 200 and f'data-job="{job_id}"' in html and "Take down" not in html
        assert ">Alice</a>" in html  # her display name, remembered when she used the bot
    teacher_link, message = await gallery_link(mock, mock.moderator)
    assert "The class gallery" in message.content
    async with session() as teacher:
        html = await (await teacher.get(teacher_link)).text()
        assert f'data-job="{job_id}"' in html and "Take down" in html
    bob_link, _ = await gallery_link(mock, mock.bob)
    async with session() as bob:
        assert (await bob.get(bob_link)).status == 200
        assert (await bob.get(f"{running.web_url}/gallery/jobs/{job_id}/grid.png")).status == 403
        assert (await bob.get(f"{running.web_url}/gallery/jobs/{job_id}")).status == 403
    async with session() as nobody:
        assert (await nobody.get(f"{running.web_url}/gallery")).status == 401
        assert (await nobody.get(link.replace("?t=", "?t=x"))).status == 403


async def test_gallery_says_so_when_the_web_side_is_off(mock_discord: Any, bot_factory: BotFactory) -> None:
    await bot_factory()  # IMAGINEBOT_WEB_PORT=off
    interaction = await mock_discord.send_command("gallery", user=mock_discord.alice)
    message = await mock_discord.wait_for_response(interaction, lambda m: m.ephemeral, timeout=TIMEOUT)
    assert "The gallery is off on this bot" in message.content and "http" not in message.content


async def test_take_down_replaces_the_message_goes_into_modlog_and_undo_restores_it(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory(web=True)
    mock = mock_discord
    grid = await imagine(mock, mock.alice, "a red circle --steps 2 --seed 3")
    job_id = job_id_of(grid)
    link, _ = await gallery_link(mock, mock.moderator)
    async with session() as teacher:
        html = await (await teacher.get(link)).text()
        answer = await teacher.post(
            f"{running.web_url}/gallery/jobs/{job_id}/take-down", data={"key": key_of(html)}
        )
        assert answer.status == 200 and f'data-job="{job_id}"' not in await answer.text()  # after its 303

        notice = await mock.wait_for_message(
            lambda m: m.id == grid.id and "taken down" in m.content, timeout=TIMEOUT
        )
        assert notice.content == f"🚫 An image by <@{mock.alice.id}> was taken down by a moderator."
        assert notice.attachments == [] and notice.custom_ids == []

        interaction = await mock.send_command("modlog", user=mock.moderator)
        log = await mock.wait_for_response(interaction, lambda m: m.ephemeral, timeout=TIMEOUT)
        assert f"<@{mock.moderator.id}> image.take-down <@{mock.alice.id}> job {job_id}" in log.content

        removed = await teacher.get(f"{running.web_url}/gallery/removed")
        html = await removed.text()
        assert f'data-job="{job_id}"' in html and ">Undo</button>" in html
        answer = await teacher.post(
            f"{running.web_url}/gallery/jobs/{job_id}/restore", data={"key": key_of(html)}
        )
        assert answer.status == 200
    back = await mock.wait_for_message(
        lambda m: m.id == grid.id and bool(m.attachments) and len(m.custom_ids) == 9, timeout=TIMEOUT
    )
    assert "a red circle" in back.content and back.attachments[0].data[:4] == b"\x89PNG"


async def test_a_message_the_bot_may_no_longer_edit_is_deleted_instead(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    mock = mock_discord
    grid = await imagine(mock, mock.alice, "a red circle --steps 2 --seed 3")
    mock.expire_tokens()  # past the interaction token's 15 minutes: only the bot token is left
    mock.deny_bot(mock.channel, edit=True)
    await running.jobs.take_down(job_id_of(grid), guild_id=mock.guild_id, by=mock.moderator.id)
    await running.jobs.idle()
    assert grid.id not in [m.id for m in mock.messages()]
    assert mock.requests(status=204, path_contains=f"/messages/{grid.id}")
