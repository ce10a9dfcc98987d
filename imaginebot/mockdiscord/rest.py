"""REST routes called with the bot token (``Authorization: Bot <token>``): login, application info,
command sync, guild/channel/user look-ups, opening DMs, and messages in channels and DMs.
Attachments are served here too, without auth, like Discord's CDN.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import errors
from .messages import apply_edit, new_message_fields, read_body
from .models import Message
from .state import STATE_KEY, MockState

routes = web.RouteTableDef()
API = "/api/v10"


def _state(request: web.Request) -> MockState:
    """The state, once the request proved it holds the bot token (401 otherwise)."""
    state = request.app[STATE_KEY]
    if request.headers.get("Authorization") != f"Bot {state.bot_token}":
        raise errors.unauthorized()
    return state


def _app(request: web.Request) -> MockState:
    state = _state(request)
    if request.match_info.get("application_id") not in (None, str(state.app_id)):
        raise errors.DiscordError(404, 10002, "Unknown Application")
    if request.match_info.get("guild_id") not in (None, str(state.guild_id)):
        raise errors.DiscordError(404, 10004, "Unknown Guild")
    return state


def _int(request: web.Request, key: str) -> int:
    value = request.match_info[key]
    if not value.isdigit():
        raise errors.invalid_form_body([key], "NUMBER_TYPE_COERCE", f"Value {value!r} is not snowflake.")
    return int(value)


@routes.get(API + "/users/@me")
async def me(request: web.Request) -> web.Response:
    state = _state(request)
    return errors.json_response({**state.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0})


@routes.get(API + "/users/{user_id}")
async def get_user(request: web.Request) -> web.Response:
    state = _state(request)
    user = state.users.get(_int(request, "user_id"))
    if user is None:
        raise errors.unknown_user()
    return errors.json_response(user.payload())


@routes.post(API + "/users/@me/channels")
async def open_dm(request: web.Request) -> web.Response:
    """``{"recipient_id": id}`` → the DM channel with that user, the same one every time.

    discord.py sends the id as a JSON number (http.py:870-875, ``Client.create_dm`` and
    ``User.create_dm``); Discord takes a string too. It opens even to a user who closed DMs: only
    sends are refused then (403 50007).
    """
    state = _state(request)
    body, _ = await read_body(request, state)
    recipient = body.get("recipient_id")
    if recipient is None:
        raise errors.invalid_form_body(["recipient_id"], "BASE_TYPE_REQUIRED", "This field is required")
    if isinstance(recipient, bool) or not str(recipient).isdigit():
        raise errors.invalid_form_body(
            ["recipient_id"], "NUMBER_TYPE_COERCE", f"Value {recipient!r} is not snowflake."
        )
    user = state.users.get(int(recipient))
    if user is None or user.bot:
        raise errors.invalid_recipient()
    return errors.json_response(state.open_dm(user).payload())


def _application(state: MockState) -> dict[str, Any]:
    owner = next(u for u in state.members if state.is_moderator(u) and not u.bot)
    return {
        "id": str(state.app_id),
        "name": state.bot.username,
        "description": "The local Discord's application",
        "icon": None,
        "bot_public": False,
        "bot_require_code_grant": False,
        "owner": owner.payload(),
        "team": None,
        "verify_key": "0" * 64,
        "summary": "",
        "flags": 0,
        "bot": state.bot.payload(),
        "rpc_origins": [],
    }


@routes.get(API + "/oauth2/applications/@me")
@routes.get(API + "/applications/@me")
async def application_info(request: web.Request) -> web.Response:
    return errors.json_response(_application(_state(request)))


@routes.get(API + "/gateway")
@routes.get(API + "/gateway/bot")
async def gateway_url(request: web.Request) -> web.Response:
    url = str(request.url.origin().with_scheme("ws")) + "/"
    limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
    return errors.json_response({"url": url, "shards": 1, "session_start_limit": limit})


# -- application commands (tree.sync) -------------------------------------------------------------
def _scope(request: web.Request) -> int | None:
    return int(request.match_info["guild_id"]) if "guild_id" in request.match_info else None


@routes.get(API + "/applications/{application_id}/commands")
@routes.get(API + "/applications/{application_id}/guilds/{guild_id}/commands")
async def get_commands(request: web.Request) -> web.Response:
    state = _app(request)
    return errors.json_response([state.command_payload(c) for c in state.commands.get(_scope(request), [])])


@routes.put(API + "/applications/{application_id}/commands")
@routes.put(API + "/applications/{application_id}/guilds/{guild_id}/commands")
async def bulk_overwrite_commands(request: web.Request) -> web.Response:
    state = _app(request)
    body = await request.json()
    if not isinstance(body, list) or not all(isinstance(c, dict) and c.get("name") for c in body):
        raise errors.invalid_form_body([], "MODEL_TYPE_CONVERT", "Expected a list of commands with names.")
    names = [c["name"] for c in body]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise errors.invalid_form_body(
            [names.index(duplicate), "name"],
            "APPLICATION_COMMANDS_DUPLICATE_NAME",
            "Application command names must be unique",
        )
    stored = state.set_commands(_scope(request), body)
    return errors.json_response([state.command_payload(c) for c in stored])


@routes.post(API + "/applications/{application_id}/commands")
@routes.post(API + "/applications/{application_id}/guilds/{guild_id}/commands")
async def upsert_command(request: web.Request) -> web.Response:
    state = _app(request)
    body = await request.json()
    scope = _scope(request)
    others = [c.data for c in state.commands.get(scope, []) if c.name != body.get("name")]
    stored = state.set_commands(scope, [*others, body])
    return errors.json_response(state.command_payload(stored[-1]), status=201)


# -- guild, members, channels ---------------------------------------------------------------------
@routes.get(API + "/guilds/{guild_id}")
async def get_guild(request: web.Request) -> web.Response:
    state = _app(request)
    roles = [r.payload() for r in state.roles]
    body = {"id": str(state.guild_id), "name": state.guild_name, "icon": None, "roles": roles, "emojis": []}
    body.update(
        owner_id=_application(state)["owner"]["id"], features=[], stickers=[], preferred_locale="en-US"
    )
    return errors.json_response(body)


@routes.get(API + "/guilds/{guild_id}/channels")
async def get_channels(request: web.Request) -> web.Response:
    state = _app(request)
    return errors.json_response([c.payload() for c in state.channels.values()])


@routes.get(API + "/guilds/{guild_id}/members/{user_id}")
async def get_member(request: web.Request) -> web.Response:
    state = _app(request)
    user = state.users.get(_int(request, "user_id"))
    if user is None:
        raise errors.DiscordError(404, 10007, "Unknown Member")
    return errors.json_response(user.member_payload())


@routes.get(API + "/channels/{channel_id}")
async def get_channel(request: web.Request) -> web.Response:
    state = _state(request)
    return errors.json_response(state.channel(_int(request, "channel_id")).payload())


# -- channel messages (the bot token's way to edit once an interaction token has expired) ---------
def _channel_limited(state: MockState, channel_id: int) -> dict[str, str]:
    headers, refused = state.ratelimits.check("channel", str(channel_id))
    if refused is not None:
        raise errors.Refused(refused)
    return headers


def _bot_visible(state: MockState, request: web.Request) -> Message:
    """A channel message the bot can see: ephemeral messages are not reachable with the bot token."""
    channel_id = _int(request, "channel_id")
    state.channel(channel_id)
    message = state.get_message(_int(request, "message_id"), channel_id)
    if message.ephemeral_to is not None:
        raise errors.unknown_message()
    return message


@routes.get(API + "/channels/{channel_id}/messages")
async def history(request: web.Request) -> web.Response:
    state = _state(request)
    channel_id = _int(request, "channel_id")
    state.channel(channel_id)
    limit = max(1, min(100, int(request.query.get("limit", "50"))))
    before = int(request.query.get("before", str(1 << 63)))
    after = int(request.query.get("after", "0"))
    found = [m for m in state.visible_messages(channel_id, None) if after < m.id < before]
    found.sort(key=lambda m: m.id, reverse="after" not in request.query)
    return errors.json_response([state.message_payload(m) for m in found[:limit]])


@routes.get(API + "/channels/{channel_id}/messages/{message_id}")
async def get_message(request: web.Request) -> web.Response:
    state = _state(request)
    return errors.json_response(state.message_payload(_bot_visible(state, request)))


@routes.post(API + "/channels/{channel_id}/messages")
async def create_message(request: web.Request) -> web.Response:
    state = _state(request)
    channel_id = _int(request, "channel_id")
    state.channel(channel_id)
    headers = _channel_limited(state, channel_id)
    state.check_bot_may(channel_id, "send")
    body, uploads = await read_body(request, state)
    # enforce_nonce: a repeat of a send Discord already took returns the first message instead of a copy.
    nonce = str(body["nonce"]) if body.get("enforce_nonce") and body.get("nonce") else None
    if nonce is not None and (earlier := state.message_for_nonce(channel_id, nonce)) is not None:
        return errors.json_response(state.message_payload(earlier), headers=headers)
    fields = new_message_fields(state, channel_id, body, uploads)
    fields["flags"] &= ~(1 << 6)  # only interaction responses can be ephemeral
    message = state.create_message(channel_id, state.bot, **fields)
    if nonce is not None:
        state.remember_nonce(channel_id, nonce, message)
    return errors.json_response(state.message_payload(message), headers=headers)


@routes.patch(API + "/channels/{channel_id}/messages/{message_id}")
async def edit_message(request: web.Request) -> web.Response:
    state = _state(request)
    channel_id = _int(request, "channel_id")
    headers = _channel_limited(state, channel_id)
    state.channel(channel_id)
    state.check_bot_may(channel_id, "edit")
    message = _bot_visible(state, request)
    body, uploads = await read_body(request, state)
    if message.author.id != state.bot.id:
        raise errors.cannot_edit_others()
    apply_edit(state, message, body, uploads)
    return errors.json_response(state.message_payload(message), headers=headers)


@routes.delete(API + "/channels/{channel_id}/messages/{message_id}")
async def delete_message(request: web.Request) -> web.Response:
    state = _state(request)
    headers = _channel_limited(state, _int(request, "channel_id"))
    message = _bot_visible(state, request)
    if message.guild_id is None and message.author.id != state.bot.id:
        raise errors.cannot_act_on_dm()  # no Manage Messages in a DM: only its own messages
    state.delete_message(message)
    return web.Response(status=204, headers=headers)


@routes.get("/attachments/{channel_id}/{attachment_id}/{filename}")
async def attachment(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    found = state.attachments.get(int(request.match_info["attachment_id"]))
    if found is None or str(found.channel_id) != request.match_info["channel_id"]:
        raise web.HTTPNotFound()
    headers = {"Cache-Control": "public, max-age=31536000, immutable"}
    return web.Response(body=found.data, content_type=found.content_type, headers=headers)
