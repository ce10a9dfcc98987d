"""Every refusal the local Discord makes, with Discord's status and code, over raw HTTP.

A raw websocket IDENTIFYs as the bot so that interactions can be dispatched; the test then plays
the bot by hand, which lets it do what discord.py would never do (a late or second ack...).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from imaginebot.mockdiscord import MockState, create_app
from imaginebot.mockdiscord.interactions import UserActionError, send_command
from imaginebot.mockdiscord.models import Interaction
from imaginebot.mockdiscord.ratelimit import Limit

API = "/api/v10"


class RawBot:
    """The bot's side of the protocol, by hand."""

    def __init__(
        self, client: TestClient[Any, Any], state: MockState, ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        self.client, self.state, self.ws = client, state, ws
        self.auth = {"Authorization": f"Bot {state.bot_token}"}

    async def next_dispatch(self, event: str) -> dict[str, Any]:
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 5)
            if msg.get("t") == event:
                return msg

    async def command(self, name: str = "imagine", **options: Any) -> Interaction:
        interaction = send_command(
            self.state, name, options or {"prompt": "x"}, user=self.state.user("alice")
        )
        await self.next_dispatch("INTERACTION_CREATE")
        return interaction

    async def callback(self, interaction: Interaction, body: dict[str, Any]) -> aiohttp.ClientResponse:
        url = f"{API}/interactions/{interaction.id}/{interaction.token}/callback?with_response=true"
        return await self.client.post(url, json=body)

    def webhook(self, interaction: Interaction, rest: str = "") -> str:
        return f"{API}/webhooks/{self.state.app_id}/{interaction.token}{rest}"


async def discord_error(response: aiohttp.ClientResponse) -> tuple[int, int]:
    assert response.headers["Content-Type"] == "application/json"
    body = await response.json()
    return response.status, body["code"]


StateFactory = Callable[..., Awaitable[RawBot]]


@pytest_asyncio.fixture
async def raw_bot(aiohttp_client: Any) -> AsyncIterator[StateFactory]:
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def make(**options: Any) -> RawBot:
        state = MockState(**options)
        client = await aiohttp_client(create_app(state))
        ws = await client.ws_connect("/?v=10&encoding=json")
        sockets.append(ws)
        hello = await ws.receive_json()
        assert hello["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": state.bot_token, "intents": 1 << 9, "properties": {}}})
        bot = RawBot(client, state, ws)
        ready = await bot.next_dispatch("READY")
        assert ready["d"]["session_id"] and ready["d"]["resume_gateway_url"].startswith("ws://")
        commands = [
            {
                "name": "imagine",
                "description": "d",
                "options": [{"name": "prompt", "type": 3, "required": True}],
            }
        ]
        put = await client.put(f"{API}/applications/{state.app_id}/commands", json=commands, headers=bot.auth)
        assert put.status == 200 and (await put.json())[0]["id"]
        return bot

    yield make
    for ws in sockets:
        await ws.close()


async def test_ack_after_three_seconds_is_unknown_interaction(raw_bot: StateFactory) -> None:
    bot = await raw_bot(ack_timeout=0.1)
    interaction = await bot.command()
    await asyncio.sleep(0.15)
    assert await discord_error(await bot.callback(interaction, {"type": 5})) == (404, 10062)


async def test_second_ack_is_refused(raw_bot: StateFactory) -> None:
    bot = await raw_bot()
    interaction = await bot.command()
    first = await bot.callback(interaction, {"type": 5, "data": {"flags": 64}})
    body = await first.json()
    assert first.status == 200 and body["interaction"]["response_message_loading"] is True
    assert body["interaction"]["response_message_ephemeral"] is True
    assert await discord_error(await bot.callback(interaction, {"type": 4, "data": {"content": "hi"}})) == (
        400,
        40060,
    )


async def test_expired_token_is_invalid_webhook_token(raw_bot: StateFactory) -> None:
    bot = await raw_bot(token_lifetime=0.2)
    interaction = await bot.command()
    assert (await bot.callback(interaction, {"type": 4, "data": {"content": "hi"}})).status == 200
    ok = await bot.client.patch(bot.webhook(interaction, "/messages/@original"), json={"content": "edit"})
    assert ok.status == 200 and (await ok.json())["content"] == "edit"
    await asyncio.sleep(0.25)  # the shortened 15-minute lifetime
    late = await bot.client.patch(bot.webhook(interaction, "/messages/@original"), json={"content": "late"})
    assert await discord_error(late) == (401, 50027)

    fresh = await bot.command()
    await bot.callback(fresh, {"type": 5})
    bot.state.expire_tokens()
    followup = await bot.client.post(bot.webhook(fresh, "?wait=true"), json={"content": "late"})
    assert await discord_error(followup) == (401, 50027)


@pytest.mark.parametrize(
    ("components", "field"),
    [
        (
            [{"type": 1, "components": [{"type": 2, "style": 1, "label": "x", "custom_id": "c" * 101}]}],
            "custom_id",
        ),
        (
            [
                {"type": 1, "components": [{"type": 2, "style": 1, "label": "x", "custom_id": f"r{r}"}]}
                for r in range(6)
            ],
            "components",
        ),
        (
            [
                {
                    "type": 1,
                    "components": [
                        {"type": 2, "style": 1, "label": "x", "custom_id": f"b{b}"} for b in range(6)
                    ],
                }
            ],
            "components",
        ),
        (
            [{"type": 1, "components": [{"type": 2, "style": 1, "label": "x", "custom_id": "same"}] * 2}],
            "custom_id",
        ),
    ],
    ids=["custom_id-over-100", "six-rows", "six-buttons-in-a-row", "duplicate-custom_id"],
)
async def test_invalid_components_are_invalid_form_body(
    raw_bot: StateFactory, components: list[dict[str, Any]], field: str
) -> None:
    bot = await raw_bot()
    interaction = await bot.command()
    refused = await bot.callback(interaction, {"type": 4, "data": {"content": "x", "components": components}})
    assert await discord_error(refused) == (400, 50035)
    assert field in json.dumps((await refused.json())["errors"])
    assert not interaction.acknowledged  # a refused response acknowledges nothing
    good = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "ok", "custom_id": "c" * 100}]}]
    assert (
        await bot.callback(interaction, {"type": 4, "data": {"content": "x", "components": good}})
    ).status == 200


def multipart(payload: dict[str, Any], files: list[tuple[str, bytes]]) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("payload_json", json.dumps(payload), content_type="application/json")
    for n, (name, data) in enumerate(files):
        form.add_field(f"files[{n}]", data, filename=name, content_type="image/png")
    return form


async def test_file_over_the_attachment_limit_is_too_large(raw_bot: StateFactory) -> None:
    bot = await raw_bot(attachment_size_limit=1000)
    interaction = await bot.command()
    await bot.callback(interaction, {"type": 5})
    url = bot.webhook(interaction, "/messages/@original")
    payload = {"content": "img", "attachments": [{"id": 0, "filename": "a.png"}]}
    big = await bot.client.patch(url, data=multipart(payload, [("a.png", b"x" * 1001)]))
    assert await discord_error(big) == (413, 40005)
    ok = await bot.client.patch(url, data=multipart(payload, [("a.png", b"x" * 1000)]))
    body = await ok.json()
    assert ok.status == 200 and [a["filename"] for a in body["attachments"]] == ["a.png"]
    served = await bot.client.get(body["attachments"][0]["url"].removeprefix(bot.state.base_url))
    assert await served.read() == b"x" * 1000
    # "attachments" is the final set: keeping none removes the image.
    cleared = await bot.client.patch(url, json={"attachments": []})
    assert (await cleared.json())["attachments"] == []


async def test_webhook_rate_limit_answers_like_discord(raw_bot: StateFactory) -> None:
    bot = await raw_bot()
    bot.state.ratelimits.set("webhook", Limit(2, 5.0))
    interaction = await bot.command()
    await bot.callback(interaction, {"type": 4, "data": {"content": "hi"}})
    url = bot.webhook(interaction, "/messages/@original")
    first = await bot.client.patch(url, json={"content": "1"})
    assert first.headers["X-RateLimit-Remaining"] == "1" and first.headers["X-RateLimit-Limit"] == "2"
    assert float(first.headers["X-RateLimit-Reset-After"]) > 0 and first.headers["X-RateLimit-Bucket"]
    second = await bot.client.patch(url, json={"content": "2"})
    assert second.headers["X-RateLimit-Remaining"] == "0"
    third = await bot.client.patch(url, json={"content": "3"})
    assert (
        third.status == 429 and third.headers["Via"] and third.headers["Content-Type"] == "application/json"
    )
    body = await third.json()
    assert body["global"] is False and 0 < body["retry_after"] <= 5.0
    assert bot.state.get_message(interaction.original_message_id or 0).content == "2"


async def test_channel_rate_limit(raw_bot: StateFactory) -> None:
    bot = await raw_bot()
    bot.state.ratelimits.set("channel", Limit(1, 5.0))
    url = f"{API}/channels/{bot.state.default_channel.id}/messages"
    assert (await bot.client.post(url, json={"content": "a"}, headers=bot.auth)).status == 200
    refused = await bot.client.post(url, json={"content": "b"}, headers=bot.auth)
    assert refused.status == 429 and "retry_after" in await refused.json()
    other = f"{API}/channels/{list(bot.state.channels)[1]}/messages"
    assert (await bot.client.post(other, json={"content": "c"}, headers=bot.auth)).status == 200


async def test_deleted_or_unknown_message_is_unknown_message(raw_bot: StateFactory) -> None:
    bot = await raw_bot()
    interaction = await bot.command()
    await bot.callback(interaction, {"type": 4, "data": {"content": "hi"}})
    message = bot.state.original_message(interaction)
    bot.state.delete_message(message)  # a user deleted the bot's reply
    deleted = await bot.next_dispatch("MESSAGE_DELETE")
    assert deleted["d"]["id"] == str(message.id)
    webhook = await bot.client.patch(bot.webhook(interaction, "/messages/@original"), json={"content": "x"})
    assert await discord_error(webhook) == (404, 10008)
    channel_url = f"{API}/channels/{message.channel_id}/messages/{message.id}"
    assert await discord_error(
        await bot.client.patch(channel_url, json={"content": "x"}, headers=bot.auth)
    ) == (
        404,
        10008,
    )
    assert await discord_error(await bot.client.delete(channel_url, headers=bot.auth)) == (404, 10008)
    unknown = f"{API}/channels/{message.channel_id}/messages/123"
    assert await discord_error(await bot.client.get(unknown, headers=bot.auth)) == (404, 10008)


async def test_ephemeral_messages_are_invisible_to_the_bot_token(raw_bot: StateFactory) -> None:
    bot = await raw_bot()
    interaction = await bot.command()
    await bot.callback(interaction, {"type": 4, "data": {"content": "secret", "flags": 64}})
    message = bot.state.original_message(interaction)
    assert message.ephemeral_to == bot.state.user("alice").id
    url = f"{API}/channels/{message.channel_id}/messages/{message.id}"
    assert await discord_error(await bot.client.get(url, headers=bot.auth)) == (404, 10008)


async def test_bad_bot_token(raw_bot: StateFactory) -> None:
    bot = await raw_bot()
    refused = await bot.client.get(f"{API}/users/@me", headers={"Authorization": "Bot nope"})
    assert refused.status == 401
    ws = await bot.client.ws_connect("/")
    await ws.receive_json()
    await ws.send_json({"op": 2, "d": {"token": "nope", "intents": 0}})
    closed = await ws.receive()
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4004
    assert bot.state.invalid_requests >= 1


async def test_users_cannot_do_what_discord_clients_cannot(raw_bot: StateFactory) -> None:
    bot = await raw_bot()
    alice = bot.state.user("alice")
    with pytest.raises(UserActionError, match="no command /nope"):
        send_command(bot.state, "nope", {}, user=alice)
    with pytest.raises(UserActionError, match="prompt is required"):
        send_command(bot.state, "imagine", {}, user=alice)


async def test_followups_with_attachments_and_original(raw_bot: StateFactory) -> None:
    bot = await raw_bot()
    interaction = await bot.command()
    response = await bot.client.post(
        f"{API}/interactions/{interaction.id}/{interaction.token}/callback", json={"type": 5}
    )
    assert response.status == 204  # without with_response
    loading = bot.state.original_message(interaction)
    assert loading.loading
    payload = {"content": "first", "attachments": [{"id": 0, "filename": "a.png"}]}
    first = await bot.client.post(
        bot.webhook(interaction, "?wait=true"), data=multipart(payload, [("a.png", b"png")])
    )
    body = await first.json()
    assert body["id"] == str(loading.id) and not loading.loading  # fills the "thinking…" message
    assert body["attachments"][0]["content_type"] == "image/png"
    second = await bot.client.post(
        bot.webhook(interaction, "?wait=true"), json={"content": "second", "flags": 64}
    )
    followup = await second.json()
    assert followup["id"] != body["id"] and followup["flags"] & 64
    got = await bot.client.get(bot.webhook(interaction, f"/messages/{followup['id']}"))
    assert (await got.json())["content"] == "second"
    original = await bot.client.get(bot.webhook(interaction, "/messages/@original"))
    assert (await original.json())["content"] == "first"
    deleted = await bot.client.delete(bot.webhook(interaction, "/messages/@original"))
    assert deleted.status == 204 and bot.state.messages[loading.id].deleted
    other = await bot.command()
    foreign = await bot.client.get(bot.webhook(other, f"/messages/{followup['id']}"))
    assert await discord_error(foreign) == (404, 10008)  # a token only reaches its own messages
