"""Fault injection and per-channel bot permissions, against the real discord.py client (EchoBot),
over raw HTTP for the exact answers, and on the page's "Faults" panel."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import discord
import pytest
from mockbot import EchoBot

from imaginebot.mockdiscord import MockDiscord, MockState, create_app

API = "/api/v10"


def text_channel(bot: EchoBot, mock_discord: MockDiscord) -> discord.TextChannel:
    channel = bot.get_channel(mock_discord.channel.id)
    assert isinstance(channel, discord.TextChannel)
    return channel


async def imagine(mock_discord: MockDiscord, prompt: str) -> None:
    inter = await mock_discord.send_command("imagine", {"prompt": prompt}, user=mock_discord.alice)
    reply = await mock_discord.wait_for_response(inter, lambda m: bool(m.components), timeout=8)
    assert reply.content == f"**{prompt}**"


# -- with discord.py ------------------------------------------------------------------------------
async def test_three_429s_on_the_webhook_are_retried(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    mock_discord.fail_next(3, scope="webhook")
    # The edits carry files: a refused upload must be read to the end, or discord.py sees a reset.
    await imagine(mock_discord, "patient fox")
    refused = mock_discord.requests(status=429, injected=True)
    assert len(refused) == 3 and all("/webhooks/" in e.path for e in refused)
    assert all(e.status < 400 for e in mock_discord.requests(path_contains="/callback"))
    assert not mock_discord.faults.describe().active and test_bot.seen.errors == []


async def test_eight_429s_make_the_edit_raise(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    await imagine(mock_discord, "fox")
    mock_discord.fail_next(8, 429, "webhook")
    interaction = test_bot.last_interaction
    assert interaction is not None
    with pytest.raises(discord.HTTPException) as refused:
        await interaction.edit_original_response(content="never")
    assert refused.value.status == 429
    assert len(mock_discord.requests(status=429, injected=True)) == 5  # discord.py's five attempts
    assert [f.count for f in mock_discord.faults.describe().fail_next] == [3]
    mock_discord.clear_faults()
    await interaction.edit_original_response(content="after clear")
    assert mock_discord.messages()[-1].content == "after clear"


async def test_a_5xx_on_the_callback_is_retried(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    mock_discord.fail_next(1, 500, "callback")  # retried after 1 s: still inside the 3 s ack window
    await imagine(mock_discord, "late ack")
    statuses = [e.status for e in mock_discord.requests(path_contains="/callback")]
    assert statuses == [500, 200]


async def test_webhook_outage_waits_then_succeeds(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    await imagine(mock_discord, "fox")
    interaction = test_bot.last_interaction
    assert interaction is not None
    started = time.monotonic()
    mock_discord.outage(0.8, 503, "webhook")  # shorter than discord.py's 1 s wait before its retry
    await interaction.edit_original_response(content="after the outage")  # 503, sleep 1 s, 200
    assert time.monotonic() - started >= 0.8
    edits = mock_discord.requests(path_contains="/messages/@original")
    assert [(e.status, e.injected) for e in edits[-2:]] == [(503, True), (200, False)]
    assert mock_discord.messages()[-1].content == "after the outage"


async def test_bot_token_503_raises_at_once(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    channel = text_channel(test_bot, mock_discord)
    mock_discord.outage(30, 503, "channel")
    with pytest.raises(discord.DiscordServerError) as refused:
        await channel.send("during the outage")
    assert refused.value.status == 503
    assert len(mock_discord.requests(status=503)) == 1  # http.py retries 500/502/504/524, not 503
    mock_discord.clear_faults()
    assert (await channel.send("after it")).content == "after it"


async def test_slow_answers_are_slow(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    channel = text_channel(test_bot, mock_discord)
    mock_discord.slow(0.3, scope="channel")
    started = time.monotonic()
    await channel.send("slowly")
    assert time.monotonic() - started >= 0.3
    assert mock_discord.faults.describe().slow is not None
    mock_discord.slow(0.1, seconds=0.2)
    await asyncio.sleep(0.25)
    assert mock_discord.faults.describe().slow is None


async def test_gateway_drop_then_resume(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    gateway = mock_discord.gateway
    resumed = asyncio.ensure_future(mock_discord.wait_for_resume(timeout=20))
    started = time.monotonic()
    await mock_discord.drop_gateway(seconds=0.5)
    # No command while the bot is out: its RESUME may come after the 3 s ack deadline.
    await resumed  # discord.py's backoff is random: 0-2 s, then 0-4 s
    assert time.monotonic() - started >= 0.5
    assert gateway.refused >= 1 and gateway.resumes == 1 and gateway.identifies == 1
    await imagine(mock_discord, "after the drop")
    assert not test_bot.is_closed()


async def test_deny_bot(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    await imagine(mock_discord, "fox")
    reply = mock_discord.messages()[-1]
    channel = text_channel(test_bot, mock_discord)
    mock_discord.deny_bot(mock_discord.channel, edit=True, send=True)
    with pytest.raises(discord.Forbidden) as edit:
        await channel.get_partial_message(reply.id).edit(content="x")
    with pytest.raises(discord.Forbidden) as send:
        await channel.send("x")
    assert (edit.value.status, edit.value.code, send.value.code) == (403, 50001, 50013)
    interaction = test_bot.last_interaction
    assert interaction is not None
    await interaction.edit_original_response(content="the interaction token still edits")
    assert mock_discord.state.messages[reply.id].content == "the interaction token still edits"

    mock_discord.deny_bot(mock_discord.channel)  # edits only, the default
    assert (await channel.send("sends are allowed")).content == "sends are allowed"
    mock_discord.allow_bot(mock_discord.channel)
    await channel.get_partial_message(reply.id).edit(content="allowed again")
    assert mock_discord.state.messages[reply.id].content == "allowed again"


# -- the exact answers, over raw HTTP -------------------------------------------------------------
async def test_fault_answers_look_like_discord(aiohttp_client: Any) -> None:
    state = MockState()
    client = await aiohttp_client(create_app(state))
    auth = {"Authorization": f"Bot {state.bot_token}"}
    attachment = state.add_attachment(state.default_channel.id, "a.png", b"png", "image/png")

    state.faults.fail_next(1, 429, retry_after=0.25)
    limited = await client.get(f"{API}/users/@me", headers=auth)
    assert limited.status == 429 and limited.headers["Content-Type"] == "application/json"
    assert limited.headers["Via"] and limited.headers["Retry-After"] == "1"
    assert limited.headers["X-RateLimit-Remaining"] == "0" and limited.headers["X-RateLimit-Bucket"]
    assert float(limited.headers["X-RateLimit-Reset-After"]) == 0.25
    body = await limited.json()
    assert body == {"message": "You are being rate limited.", "retry_after": 0.25, "global": False, "code": 0}

    state.faults.fail_next(1, 502)
    state.faults.fail_next(1, 500)
    bad_gateway = await client.get(f"{API}/users/@me", headers=auth)
    assert bad_gateway.status == 502 and bad_gateway.content_type == "text/html"
    internal = await client.get(f"{API}/users/@me", headers=auth)
    assert internal.status == 500 and (await internal.json())["message"] == "500: Internal Server Error"

    state.faults.outage(30, 503)
    assert (await client.get(f"{API}/users/@me", headers=auth)).status == 503
    # the page and attachment downloads are never faulted
    assert (await client.get("/app/api/state")).status == 200
    assert await (await client.get(attachment.path)).read() == b"png"
    assert [(e.status, e.injected) for e in state.request_log] == [
        (429, True),
        (502, True),
        (500, True),
        (503, True),
    ]
    state.faults.clear()
    assert (await client.get(f"{API}/users/@me", headers=auth)).status == 200


async def test_scopes_pick_their_requests(aiohttp_client: Any) -> None:
    state = MockState()
    client = await aiohttp_client(create_app(state))
    auth = {"Authorization": f"Bot {state.bot_token}"}
    state.faults.fail_next(1, 503, "channel")
    assert (await client.get(f"{API}/users/@me", headers=auth)).status == 200  # not a channel route
    unknown_webhook = f"{API}/webhooks/{state.app_id}/nope/messages/@original"
    assert (await client.get(unknown_webhook)).status == 401  # handled: an unknown token
    assert (await client.get(f"{API}/channels/{state.default_channel.id}", headers=auth)).status == 503
    assert (await client.get(f"{API}/channels/{state.default_channel.id}", headers=auth)).status == 200


# -- the page's JSON API --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"kind": "nope"}, "kind must be one of fail, outage, slow, gateway_drop, clear"),
        ({"kind": "fail"}, "count is required"),
        ({"kind": "fail", "count": 0}, "count must be 1-1000"),
        ({"kind": "fail", "count": "8"}, 'count must be a whole number, got "8"'),
        ({"kind": "fail", "count": 2, "status": 404}, "status must be 429 or 500-599"),
        ({"kind": "outage", "seconds": -1}, "seconds must be more than 0"),
        ({"kind": "outage", "seconds": True}, "seconds must be a number"),
        ({"kind": "slow"}, "delay is required"),
        ({"kind": "slow", "delay": 2, "scope": "everywhere"}, "scope must be one of all, webhook"),
        ({"kind": "clear", "count": 1}, "unknown field count for kind clear"),
        ([1, 2], "expected a JSON object"),
    ],
)
async def test_page_fault_api_refuses_bad_input(aiohttp_client: Any, body: Any, complaint: str) -> None:
    state = MockState()
    client = await aiohttp_client(create_app(state))
    response = await client.post("/app/api/faults", json=body)
    assert response.status == 400
    assert complaint in (await response.json())["error"]
    assert not state.faults.describe().active


async def test_page_fault_api(aiohttp_client: Any) -> None:
    state = MockState()
    client = await aiohttp_client(create_app(state))
    assert (await client.post("/app/api/faults", data="{not json")).status == 400
    await client.post("/app/api/faults", json={"kind": "fail", "count": 8, "status": 429, "scope": "webhook"})
    await client.post("/app/api/faults", json={"kind": "outage", "seconds": 60, "status": 502})
    answer = await client.post("/app/api/faults", json={"kind": "slow", "delay": 2, "seconds": 30})
    active = await answer.json()
    assert active["active"] and active["fail_next"] == [
        {"count": 8, "status": 429, "scope": "webhook", "retry_after": 0.05}
    ]
    assert active["outage"]["status"] == 502 and 0 < active["outage"]["seconds_left"] <= 60
    assert active["slow"]["delay"] == 2 and "502 outage" in active["text"]

    await client.post("/app/api/faults", json={"kind": "gateway_drop", "seconds": 5})
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/?v=10&encoding=json")
    assert refused.value.status == 503
    assert (await (await client.get("/app/api/faults")).json())["gateway_refused_for"] > 0

    cleared = await (await client.post("/app/api/faults", json={"kind": "clear"})).json()
    assert cleared["active"] is False and cleared["text"] == "no faults"
    ws = await client.ws_connect("/?v=10&encoding=json")
    assert (await ws.receive_json())["op"] == 10
    await ws.close()


@pytest.mark.browser
async def test_page_faults_panel(mock_page: Any, mock_discord: MockDiscord) -> None:
    page = mock_page
    await page.click("#faults-panel summary")
    await page.select_option("#fault-scope", "webhook")
    await page.fill("#outage-seconds", "45")
    await page.select_option("#outage-status", "502")
    await page.click("#fault-outage")
    await page.locator("#faults-active", has_text="502 outage (webhook)").wait_for(timeout=5000)
    outage = mock_discord.faults.describe().outage
    assert outage is not None and (outage.status, outage.scope) == (502, "webhook")

    await page.fill("#fault-count", "")
    await page.click("#fault-fail")
    await page.locator("#notices .notice", has_text="count is required").wait_for(timeout=5000)

    await page.click("#fault-clear")
    await page.locator("#faults-active", has_text="no faults").wait_for(timeout=5000)
    assert not mock_discord.faults.describe().active
