"""A real discord.py ``commands.Bot`` (unmodified; only Route.BASE and DEFAULT_GATEWAY set) against
the local Discord: connect, sync, slash commands, defer + edits with attachments, 429 retries,
buttons, selects, the bot-token fallback, deleted messages and RESUME."""

from __future__ import annotations

import asyncio

import aiohttp
import discord
import pytest
from mockbot import FINAL_PNG, PREVIEW_PNG, EchoBot

from imaginebot.mockdiscord import MockDiscord


async def test_connects_and_syncs(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    assert test_bot.user is not None and test_bot.user.id == mock_discord.application_id
    guild = test_bot.get_guild(mock_discord.guild_id)
    assert guild is not None and {c.name for c in guild.text_channels} == {"general", "art"}
    assert guild.me is not None and guild.get_member(mock_discord.alice.id) is None  # no members intent
    assert [c.name for c in mock_discord.state.commands[None]] == ["imagine"]
    assert [c.name for c in mock_discord.state.commands[mock_discord.guild_id]] == ["quota"]
    paths = [(e.method, e.path, e.status) for e in mock_discord.request_log]
    assert ("GET", "/api/v10/users/@me", 200) in paths
    assert ("GET", "/api/v10/oauth2/applications/@me", 200) in paths
    assert ("PUT", f"/api/v10/applications/{mock_discord.application_id}/commands", 200) in paths


async def test_slash_command_defer_and_edits_with_attachments(
    mock_discord: MockDiscord, test_bot: EchoBot
) -> None:
    inter = await mock_discord.send_command("imagine", {"prompt": "a red fox"}, user=mock_discord.alice)
    reply = await mock_discord.wait_for_response(inter, lambda m: bool(m.components))
    assert test_bot.seen.commands == [("imagine", {"prompt": "a red fox"})]
    assert reply.content == "**a red fox**"
    assert [a.filename for a in reply.attachments] == ["grid.png"]
    assert reply.attachments[0].data == FINAL_PNG
    assert reply.custom_ids == ["test:u1", "test:reroll", "test:size"]
    # deferred → "thinking" → preview → final: the preview was replaced in place, not added.
    assert reply.history == [("", ()), ("**a red fox** (preview)", ("preview.png",))]
    assert mock_discord.state.attachments and any(
        a.data == PREVIEW_PNG for a in mock_discord.state.attachments.values()
    )
    # discord.py reads attachments from their url: the local Discord serves the bytes back.
    message = await test_bot.last_interaction.original_response()  # type: ignore[union-attr]
    assert await message.attachments[0].read() == FINAL_PNG


async def test_button_click_and_select(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    inter = await mock_discord.send_command("imagine", {"prompt": "otter"}, user=mock_discord.alice)
    reply = await mock_discord.wait_for_response(inter, lambda m: bool(m.components))

    click = await mock_discord.click(reply, "test:reroll", user=mock_discord.bob)
    await mock_discord.wait_for_message(lambda m: m.id == reply.id and m.content == "rerolled by bob")
    assert click.response_type == 7 and test_bot.seen.clicks == [("test:reroll", "bob")]

    click = await mock_discord.click(reply, "test:u1", user=mock_discord.alice)
    ephemeral = await mock_discord.wait_for_response(click)
    assert ephemeral.ephemeral and ephemeral.ephemeral_to == mock_discord.alice.id
    assert ephemeral.content == "upscaling for alice"
    assert ephemeral not in mock_discord.messages(visible_to=mock_discord.bob)

    choice = await mock_discord.select(reply, "test:size", ["l"], user=mock_discord.alice)
    await mock_discord.wait_for_ack(choice)
    assert choice.response_type == 6 and test_bot.seen.selects == [("test:size", ["l"])]


async def test_subcommand_with_user_option(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    bob = mock_discord.bob
    inter = await mock_discord.send_command(
        "quota set", {"user": bob, "images": 5}, user=mock_discord.moderator
    )
    reply = await mock_discord.wait_for_response(inter)
    assert reply.content == "Bob: 5 images a day" and reply.ephemeral
    name, options = test_bot.seen.commands[-1]
    assert name == "quota set" and options["user"].id == bob.id and options["images"] == 5
    assert test_bot.seen.errors == []


async def test_rate_limited_edit_is_retried(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    # Hidden headers: the bot can't pace itself and must live with real 429s (Via + retry_after).
    mock_discord.set_rate_limit("webhook", 1, per=0.3, headers=False)
    inter = await mock_discord.send_command("imagine", {"prompt": "slow"}, user=mock_discord.alice)
    reply = await mock_discord.wait_for_response(inter, lambda m: bool(m.components), timeout=5)
    assert reply.content == "**slow**"
    refused = mock_discord.requests(status=429, path_contains="/webhooks/")
    assert refused, "the second edit should have been refused once"
    assert test_bot.seen.errors == []


async def test_rate_limit_headers_make_the_bot_wait(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    mock_discord.set_rate_limit("webhook", 1, per=0.2)
    inter = await mock_discord.send_command("imagine", {"prompt": "paced"}, user=mock_discord.alice)
    await mock_discord.wait_for_response(inter, lambda m: bool(m.components), timeout=5)
    assert mock_discord.requests(status=429) == []  # X-RateLimit-Remaining: 0 made discord.py wait


async def test_expired_token_then_bot_token_fallback(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    inter = await mock_discord.send_command("imagine", {"prompt": "late"}, user=mock_discord.alice)
    reply = await mock_discord.wait_for_response(inter, lambda m: bool(m.components))
    assert mock_discord.expire_tokens() >= 1
    interaction = test_bot.last_interaction
    assert interaction is not None
    with pytest.raises(discord.HTTPException) as refused:
        await interaction.edit_original_response(content="too late")
    assert refused.value.status == 401 and refused.value.code == 50027
    channel = test_bot.get_channel(mock_discord.channel.id)
    assert isinstance(channel, discord.TextChannel)
    await channel.get_partial_message(reply.id).edit(content="edited with the bot token")
    assert mock_discord.state.messages[reply.id].content == "edited with the bot token"


async def test_deleted_message_is_unknown_to_the_bot(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    inter = await mock_discord.send_command("imagine", {"prompt": "gone"}, user=mock_discord.alice)
    reply = await mock_discord.wait_for_response(inter, lambda m: bool(m.components))
    mock_discord.delete_message(reply)
    with pytest.raises(discord.NotFound) as webhook:
        await test_bot.last_interaction.edit_original_response(content="x")  # type: ignore[union-attr]
    channel = test_bot.get_channel(mock_discord.channel.id)
    with pytest.raises(discord.NotFound) as bot_token:
        await channel.get_partial_message(reply.id).edit(content="x")  # type: ignore[union-attr]
    assert webhook.value.code == bot_token.value.code == 10008


async def test_survives_gateway_reconnect_with_resume(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    gateway = mock_discord.gateway
    resumed = asyncio.ensure_future(mock_discord.wait_for_resume())
    await mock_discord.disconnect_gateway()
    # Sent while the bot is away: kept in the session and replayed after RESUME.
    inter = await mock_discord.send_command("imagine", {"prompt": "after resume"}, user=mock_discord.alice)
    await resumed
    reply = await mock_discord.wait_for_response(inter, lambda m: bool(m.components))
    assert reply.content == "**after resume**"
    assert gateway.identifies == 1 and gateway.resumes == 1

    mock_discord.request_reconnect()  # op 7
    await mock_discord.wait_for_resume()
    assert gateway.identifies == 1 and gateway.resumes == 2
    assert test_bot.is_ready() and not test_bot.is_closed()


async def test_an_invalidated_session_identifies_afresh(mock_discord: MockDiscord, test_bot: EchoBot) -> None:
    gateway = mock_discord.gateway
    mock_discord.invalidate_session()  # op 9, not resumable: discord.py forgets its session
    await mock_discord.wait_until_ready(timeout=20)  # a second READY, after a new IDENTIFY
    assert gateway.identifies == 2 and gateway.resumes == 0
    inter = await mock_discord.send_command("imagine", {"prompt": "after identify"}, user=mock_discord.alice)
    reply = await mock_discord.wait_for_response(inter, lambda m: bool(m.components))
    assert reply.content == "**after identify**"


async def test_bad_token_is_a_login_failure(mock_discord: MockDiscord) -> None:
    client = discord.Client(intents=discord.Intents.none())
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()


async def test_json_content_type_is_exact(mock_discord: MockDiscord) -> None:
    headers = {"Authorization": f"Bot {mock_discord.bot_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(mock_discord.url + "/api/v10/users/@me", headers=headers) as r,
    ):
        assert r.headers["Content-Type"] == "application/json"


async def test_members_intent_gets_every_member(mock_discord: MockDiscord, start_bot) -> None:
    intents = discord.Intents.default()
    intents.members = True
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)
    await start_bot(client)
    guild = client.get_guild(mock_discord.guild_id)
    assert guild is not None and guild.chunked
    moderator = guild.get_member(mock_discord.moderator.id)
    assert moderator is not None and moderator.guild_permissions.manage_guild
    assert not guild.get_member(mock_discord.alice.id).guild_permissions.manage_guild  # type: ignore[union-attr]
