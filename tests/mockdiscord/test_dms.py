"""Direct messages between the bot and a user, with the real discord.py client (EchoBot), over raw
HTTP for the exact answers, and through the page's JSON API."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import discord
import pytest
from mockbot import FINAL_PNG, EchoBot

from imaginebot.mockdiscord import MockDiscord, MockState, UserActionError, create_app
from imaginebot.mockdiscord.clients import FAST_BOT_OPTIONS

API = "/api/v10"


class DMView(discord.ui.View):
    """One button; remembers the interactions it got."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.clicks: list[discord.Interaction] = []

    @discord.ui.button(label="OK", custom_id="dm:ok")
    async def ok(self, interaction: discord.Interaction, button: discord.ui.Button[DMView]) -> None:
        self.clicks.append(interaction)
        await interaction.response.send_message(f"ok, {interaction.user.name}")


async def test_create_dm_and_send_a_file(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    alice = mock_discord.alice
    assert mock_discord.dm_channel(alice) is None
    dm = await test_bot.create_dm(discord.Object(alice.id))
    assert isinstance(dm, discord.DMChannel) and dm.recipient is not None and dm.recipient.id == alice.id

    # EchoBot has the default intents, DIRECT_MESSAGES among them: it hears its own DM.
    heard = asyncio.ensure_future(test_bot.wait_for("message", check=lambda m: m.content == "your image"))
    sent = await dm.send("your image", file=discord.File(io.BytesIO(FINAL_PNG), "grid.png"))
    assert isinstance(sent.channel, discord.DMChannel) and sent.guild is None
    assert await sent.attachments[0].read() == FINAL_PNG
    message = await heard
    assert isinstance(message.channel, discord.DMChannel) and message.guild is None
    assert message.author.id == mock_discord.application_id

    channel = mock_discord.dm_channel(alice)
    assert channel is not None and channel.id == dm.id and channel.is_dm
    [stored] = mock_discord.messages(channel)
    assert stored.id == sent.id and stored.guild_id is None and stored.author.bot
    assert [a.data for a in stored.attachments] == [FINAL_PNG]
    assert (await mock_discord.wait_for_message(channel=channel)).id == sent.id
    assert mock_discord.messages() == []  # nothing in #general

    # The same DM channel every time (discord.py caches it, so ask the REST API itself).
    again = await test_bot.http.start_private_message(alice.id)
    assert again == {
        "id": str(dm.id),
        "type": 1,
        "last_message_id": str(sent.id),
        "recipients": [alice.payload()],
        "flags": 0,
    }
    fetched = await test_bot.fetch_channel(dm.id)
    assert isinstance(fetched, discord.DMChannel) and fetched.id == dm.id

    edited = await sent.edit(content="your image, edited")
    assert edited.content == stored.content == "your image, edited"
    await sent.delete()
    assert mock_discord.messages(channel) == []


async def test_guild_only_intents_hear_no_dms(mock_discord: MockDiscord, start_bot: Any) -> None:
    client = discord.Client(intents=discord.Intents(guilds=True), **FAST_BOT_OPTIONS)
    await start_bot(client)
    dm = await client.create_dm(discord.Object(mock_discord.bob.id))
    sent = await dm.send("hello bob")
    assert sent.channel.id == dm.id and sent.guild is None
    mock_discord.say("hi back", user=mock_discord.bob, channel=mock_discord.dm_channel(mock_discord.bob))
    sent_events = [p["t"] for s in mock_discord.gateway.sessions.values() for p in s.sent]
    assert "MESSAGE_CREATE" not in sent_events and "READY" in sent_events


async def test_closed_dms_are_forbidden(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    bob = mock_discord.bob
    mock_discord.block_dms(bob)
    dm = await test_bot.create_dm(discord.Object(bob.id))  # opening still works
    with pytest.raises(discord.Forbidden) as refused:
        await dm.send("are you there?")
    assert (refused.value.status, refused.value.code) == (403, 50007)
    assert refused.value.text == "Cannot send messages to this user"
    mock_discord.allow_dms(bob)
    assert (await dm.send("there you are")).content == "there you are"
    # deny_bot still takes a guild channel's permissions away on its own
    mock_discord.deny_bot(mock_discord.channel, send=True)
    channel = test_bot.get_channel(mock_discord.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.Forbidden) as denied:
        await channel.send("x")
    assert denied.value.code == 50013
    assert (await dm.send("DMs are not that channel")).guild is None


async def test_a_dm_is_only_its_users(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    alice, bob = mock_discord.alice, mock_discord.bob
    dm = await test_bot.create_dm(discord.Object(alice.id))
    sent = await dm.send("for alice only", view=DMView())
    dm_id = dm.id
    async with aiohttp.ClientSession(mock_discord.url) as page:
        mine = await page.get(f"/app/api/messages?channel={dm_id}&user={alice.id}")
        assert [m["content"] for m in await mine.json()] == ["for alice only"]
        theirs = await page.get(f"/app/api/messages?channel={dm_id}&user={bob.id}")
        assert theirs.status == 403
        assert (await page.get(f"/app/api/messages?channel={dm_id}")).status == 403
        assert [d["label"] for d in await (await page.get(f"/app/api/dms?user={alice.id}")).json()] == [
            "@imaginebot"
        ]
        assert await (await page.get(f"/app/api/dms?user={bob.id}")).json() == []
        click = {"user": str(bob.id), "message": str(sent.id), "custom_id": "dm:ok"}
        assert (await page.post("/app/api/component", json=click)).status == 400
        say = {"user": str(bob.id), "channel": str(dm_id), "content": "let me in"}
        assert (await page.post("/app/api/say", json=say)).status == 400
        delete = {"user": str(bob.id), "message": str(sent.id)}
        assert (await page.post("/app/api/delete", json=delete)).status == 400
    channel = mock_discord.dm_channel(alice)
    assert channel is not None
    assert mock_discord.messages(channel, visible_to=bob) == []
    assert [m.id for m in mock_discord.messages(channel, visible_to=alice)] == [sent.id]
    with pytest.raises(UserActionError):
        await mock_discord.click(mock_discord.messages(channel)[0], "dm:ok", user=bob)


async def test_button_click_in_a_dm(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    alice = mock_discord.alice
    view = DMView()
    dm = await test_bot.create_dm(discord.Object(alice.id))
    sent = await dm.send("press it", view=view)
    channel = mock_discord.dm_channel(alice)
    [message] = mock_discord.messages(channel)
    click = await mock_discord.click(message, "dm:ok", user=alice)
    reply = await mock_discord.wait_for_response(click)
    assert reply.content == "ok, alice" and reply.channel_id == dm.id and reply.guild_id is None
    [interaction] = view.clicks
    assert interaction.guild is None and interaction.guild_id is None
    assert isinstance(interaction.channel, discord.DMChannel) and interaction.channel.id == dm.id
    assert type(interaction.user) is discord.User and interaction.user.id == alice.id
    assert interaction.context.dm_channel and not interaction.context.guild
    assert interaction.message is not None and interaction.message.id == sent.id
    with pytest.raises(UserActionError, match="guild channels only"):
        await mock_discord.send_command("imagine", {"prompt": "x"}, user=alice, channel=channel)


async def test_dm_answers_look_like_discord(aiohttp_client: Any) -> None:
    state = MockState()
    client = await aiohttp_client(create_app(state))
    auth = {"Authorization": f"Bot {state.bot_token}"}
    alice = state.user("alice")

    async def open_dm(body: Any) -> tuple[int, Any]:
        response = await client.post(f"{API}/users/@me/channels", json=body, headers=auth)
        return response.status, await response.json()

    status, dm = await open_dm({"recipient_id": str(alice.id)})  # a string works as well as a number
    assert status == 200 and dm["type"] == 1 and dm["last_message_id"] is None
    assert (await open_dm({"recipient_id": alice.id}))[1]["id"] == dm["id"]
    assert (await open_dm({"recipient_id": "12345"}))[1]["code"] == 50033
    assert (await open_dm({"recipient_id": str(state.bot.id)}))[1]["code"] == 50033
    status, missing = await open_dm({})
    assert (status, missing["code"]) == (400, 50035) and "recipient_id" in missing["errors"]
    assert (await open_dm({"recipient_id": "alice"}))[1]["code"] == 50035
    assert (await client.post(f"{API}/users/@me/channels", json={"recipient_id": alice.id})).status == 401

    got = await client.get(f"{API}/channels/{dm['id']}", headers=auth)
    assert await got.json() == dm
    # The bot may not delete what the user wrote in a DM (no Manage Messages there).
    theirs = state.create_message(int(dm["id"]), alice, content="hello bot")
    refused = await client.delete(f"{API}/channels/{dm['id']}/messages/{theirs.id}", headers=auth)
    assert (refused.status, (await refused.json())["code"]) == (403, 50003)
    history = await client.get(f"{API}/channels/{dm['id']}/messages", headers=auth)
    [payload] = await history.json()
    assert payload["content"] == "hello bot" and "guild_id" not in payload and "member" not in payload


async def test_a_repeated_send_with_enforce_nonce_returns_the_first_message(
    mock_discord: MockDiscord, test_bot: EchoBot
) -> None:
    channel = test_bot.get_partial_messageable(mock_discord.channel.id)
    first = await channel.send("the grid", nonce="ib42")
    again = await channel.send("the grid", nonce="ib42")  # discord.py sets enforce_nonce with a nonce
    other = await channel.send("another", nonce="ib43")
    assert again.id == first.id and other.id != first.id
    assert [m.content for m in mock_discord.messages()] == ["the grid", "another"]
