"""The web page: a live channel view to act as any user of the guild.

``/app/`` serves ``static/index.html`` (plain HTML + JS, no build step). The page reads the guild,
its users and the bot's synced commands from ``/app/api/state``, the channel from
``/app/api/messages``, the chosen user's DM with the bot from ``/app/api/dms``, and hears every
change over the ``/app/ws`` websocket, filtered to what the chosen user may see (ephemeral messages
only reach their user, a DM only its user). Commands, clicks, selects and deletes go through the
same functions as the Python test API. A modal the bot opens shows as a dialog to its user only
(``/app/api/modal``: GET the open one, POST a submission, POST ``/app/api/modal/dismiss`` to close
it); a file for a command's attachment option travels base64 in the command's JSON. The "Faults"
panel sets and clears fault injection through ``/app/api/faults`` (GET: what is active; POST: one
fault, see :func:`post_faults`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .errors import DiscordError
from .faults import RETRY_AFTER, Faults, fault_scope
from .interactions import (
    CommandFile,
    UserActionError,
    dismiss_modal,
    find_command,
    send_command,
    submit_modal,
    use_component,
)
from .modals import Modal
from .models import Interaction, InteractionType, Message, User
from .state import STATE_KEY, MockState, StateEvent

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(eq=False)
class PageSocket:
    ws: web.WebSocketResponse
    user_id: int | None
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


SOCKETS_KEY: web.AppKey[set[PageSocket]] = web.AppKey("mockdiscord_page_sockets")
routes = web.RouteTableDef()


def page_message(state: MockState, message: Message) -> dict[str, Any]:
    """A message as the page draws it: Discord's payload plus who ran the command and who sees it."""
    data: dict[str, Any] = state.message_payload(message)
    data["deleted"] = message.deleted
    data["ephemeral_to"] = str(message.ephemeral_to) if message.ephemeral_to is not None else None
    data["author_name"] = message.author.display_name
    data["revisions"] = message.revisions
    if message.interaction is not None:
        data["invoker"] = message.interaction.user.display_name
        data["invoked"] = _invoked(message.interaction)
    return data


def _invoked(interaction: Interaction) -> str:
    """What the page says the user did, under their name: "used /imagine", "pressed a button"."""
    if interaction.type is InteractionType.MESSAGE_COMPONENT:
        return "pressed a button" if interaction.values is None else "chose from a menu"
    if interaction.type is InteractionType.MODAL_SUBMIT:
        return "sent a form"
    return f"used /{interaction.command_name or '…'}"


def _fan_out(app: web.Application, event: StateEvent) -> None:
    state = app[STATE_KEY]
    for sock in app[SOCKETS_KEY]:
        if event.message is not None:
            # A delete goes to everyone who may view the channel (an ephemeral one to dismiss it).
            if event.kind == "message_delete":
                visible = state.may_view(sock.user_id, event.message.channel_id)
            else:
                visible = state.can_see(sock.user_id, event.message)
            if visible:
                sock.queue.put_nowait({"type": event.kind, "message": page_message(state, event.message)})
        elif event.kind == "dm_open" and event.channel is not None and event.channel.recipient is not None:
            if event.channel.recipient.id == sock.user_id:
                sock.queue.put_nowait({"type": "dm_open"})
        elif event.kind == "interaction_failed" and event.interaction is not None:
            if event.interaction.user.id == sock.user_id:
                name = event.interaction.command_name or event.interaction.custom_id
                text = f"The application did not respond ({name})"
                sock.queue.put_nowait({"type": "notice", "text": text})
        elif event.modal is not None and event.modal.user.id == sock.user_id:
            if event.kind == "modal_open":
                sock.queue.put_nowait({"type": "modal_open", "modal": event.modal.to_json()})
            else:
                sock.queue.put_nowait({"type": "modal_close", "modal": str(event.modal.id)})
        elif event.kind in ("commands_update", "gateway_ready", "gateway_resumed"):
            sock.queue.put_nowait({"type": event.kind})


def setup(app: web.Application) -> None:
    app[SOCKETS_KEY] = set()
    app.add_routes(routes)
    app.router.add_static("/app/static/", STATIC_DIR)
    app[STATE_KEY].listeners.append(lambda event: _fan_out(app, event))


async def close_sockets(app: web.Application) -> None:
    sockets: set[PageSocket] = app[SOCKETS_KEY]
    await asyncio.gather(*(s.ws.close() for s in list(sockets)))


@routes.get("/app/")
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


def _user_id(value: Any) -> int | None:
    return int(value) if value not in (None, "") and str(value).isdigit() else None


@routes.get("/app/api/state")
async def get_state(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    gateway = state.gateway
    users = [
        {
            "id": str(u.id),
            "username": u.username,
            "display_name": u.display_name,
            "moderator": state.is_moderator(u),
            "permissions": str(state.permissions(u)),
            "bot": u.bot,
        }
        for u in state.members
    ]
    body = {
        "guild": {"id": str(state.guild_id), "name": state.guild_name},
        "channels": [c.payload() for c in state.channels.values()],
        "users": users,
        "roles": [r.payload() for r in state.roles],
        "commands": [state.command_payload(c) for c in state.all_commands()],
        "bot": state.bot.payload(),
        "bot_connected": gateway is not None and gateway.has_session,
        "attachment_size_limit": state.attachment_size_limit,
    }
    return web.json_response(body)


@routes.get("/app/api/dms")
async def get_dms(request: web.Request) -> web.Response:
    """The DM the bot opened with ``?user=`` (none or one), as the page lists it: "@imaginebot"."""
    state = request.app[STATE_KEY]
    user_id = _user_id(request.query.get("user"))
    dm = None if user_id is None else state.dms.get(user_id)
    shown = [] if dm is None else [{**dm.payload(), "label": "@" + state.bot.username}]
    return web.json_response(shown)


@routes.get("/app/api/messages")
async def get_messages(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    channel_id = _user_id(request.query.get("channel")) or state.default_channel.id
    user_id = _user_id(request.query.get("user"))
    if not state.may_view(user_id, channel_id):
        return web.json_response({"error": "that is another user's direct messages"}, status=403)
    found = state.visible_messages(channel_id, user_id)
    return web.json_response([page_message(state, m) for m in sorted(found, key=lambda m: m.id)])


@routes.get("/app/api/log")
async def get_log(request: web.Request) -> web.Response:
    entries = request.app[STATE_KEY].request_log[-200:]
    return web.json_response(
        [
            {"method": e.method, "path": e.path, "status": e.status, "code": e.code, "injected": e.injected}
            for e in entries
        ]
    )


async def _act(request: web.Request) -> tuple[MockState, dict[str, Any]]:
    state = request.app[STATE_KEY]
    body = await request.json()
    if not isinstance(body, dict):
        raise UserActionError("expected a JSON object")
    return state, body


# What a page user can get wrong (DiscordError: an unknown or deleted message or channel).
_USER_ERRORS = (UserActionError, LookupError, ValueError, KeyError, DiscordError)


def _error(exc: Exception) -> web.Response:
    return web.json_response({"error": str(exc)}, status=400)


def _option_value(value: Any) -> Any:
    """A file for an attachment option comes as ``{"filename", "content_type", "data"}``, the bytes
    base64 (JSON, like every other page request); other options as they are."""
    if not isinstance(value, dict):
        return value
    try:
        data = base64.b64decode(str(value["data"]), validate=True)
    except (KeyError, binascii.Error):
        raise UserActionError("a file option needs its bytes base64 in data") from None
    return CommandFile(str(value.get("filename") or "file"), data, value.get("content_type") or None)


@routes.post("/app/api/command")
async def post_command(request: web.Request) -> web.Response:
    """``{"user", "channel", "command": "quota set", "options": {name: value}}``."""
    try:
        state, body = await _act(request)
        user = state.user(body["user"])
        channel = state.channel(int(body.get("channel") or state.default_channel.id))
        path = str(body["command"])
        options = {k: _option_value(v) for k, v in (body.get("options") or {}).items() if v not in (None, "")}
        find_command(state, path)
        interaction = send_command(state, path, options, user=user, channel=channel)
    except _USER_ERRORS as exc:
        return _error(exc)
    return web.json_response({"interaction": str(interaction.id)})


@routes.post("/app/api/component")
async def post_component(request: web.Request) -> web.Response:
    """A button click (no ``values``) or a select menu choice."""
    try:
        state, body = await _act(request)
        user = state.user(body["user"])
        message = state.get_message(int(body["message"]))
        values = body.get("values")
        interaction = use_component(state, message, str(body["custom_id"]), user=user, values=values)
    except _USER_ERRORS as exc:
        return _error(exc)
    return web.json_response({"interaction": str(interaction.id)})


@routes.get("/app/api/modal")
async def get_modal(request: web.Request) -> web.Response:
    """The modal open for ``?user=``, or null."""
    state = request.app[STATE_KEY]
    modal = state.modals.get(_user_id(request.query.get("user")) or 0)
    return web.json_response(None if modal is None else modal.to_json())


def _open_modal(state: MockState, body: dict[str, Any]) -> tuple[User, Modal]:
    user = state.user(body["user"])
    modal = state.modals.get(user.id)
    if modal is None or str(modal.id) != str(body.get("modal")):
        raise UserActionError("that modal is no longer open")
    return user, modal


@routes.post("/app/api/modal")
async def post_modal(request: web.Request) -> web.Response:
    """Submit: ``{"user", "modal": id, "values": {custom_id: text or [values]}}``."""
    try:
        state, body = await _act(request)
        user, modal = _open_modal(state, body)
        values = body.get("values") or {}
        if not isinstance(values, dict):
            raise UserActionError("values must be an object of custom_id: value")
        interaction = submit_modal(state, modal, values, user=user)
    except _USER_ERRORS as exc:
        return _error(exc)
    return web.json_response({"interaction": str(interaction.id)})


@routes.post("/app/api/modal/dismiss")
async def post_modal_dismiss(request: web.Request) -> web.Response:
    try:
        state, body = await _act(request)
        user, modal = _open_modal(state, body)
        dismiss_modal(state, modal, user=user)
    except _USER_ERRORS as exc:
        return _error(exc)
    return web.json_response({"dismissed": str(modal.id)})


@routes.post("/app/api/delete")
async def post_delete(request: web.Request) -> web.Response:
    """Delete (or dismiss, if ephemeral) a message as its viewer: the bot then gets 10008 for it."""
    try:
        state, body = await _act(request)
        message = state.get_message(int(body["message"]))
        if not state.may_view(_user_id(body.get("user")), message.channel_id):
            raise UserActionError("that message is in another user's direct messages")
    except _USER_ERRORS as exc:
        return _error(exc)
    state.delete_message(message)
    return web.json_response({"deleted": str(message.id)})


@routes.post("/app/api/say")
async def post_say(request: web.Request) -> web.Response:
    try:
        state, body = await _act(request)
        user = state.user(body["user"])
        channel = state.channel(int(body.get("channel") or state.default_channel.id))
        content = str(body.get("content") or "").strip()[:2000]
        if not content:
            raise UserActionError("empty message")
        if not state.may_view(user.id, channel.id):
            raise UserActionError("that is another user's direct messages")
    except _USER_ERRORS as exc:
        return _error(exc)
    message = state.create_message(channel.id, user, content=content)
    return web.json_response({"message": str(message.id)})


# -- fault injection (faults.py) -----------------------------------------------------------------
_FAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "fail": ("count", "status", "scope", "retry_after"),
    "outage": ("seconds", "status", "scope"),
    "slow": ("delay", "seconds", "scope"),
    "gateway_drop": ("seconds",),
    "clear": (),
}


def _whole(body: dict[str, Any], key: str, default: int | None = None) -> int:
    value = body.get(key)
    if value is None and default is not None:
        return default
    if value is None:
        raise ValueError(f"{key} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be a whole number, got {json.dumps(value)}")
    return value


def _seconds(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number of seconds, got {json.dumps(value)}")
    return float(value)


def _required_seconds(body: dict[str, Any], key: str) -> float:
    value = _seconds(body, key)
    if value is None:
        raise ValueError(f"{key} is required (seconds)")
    return value


async def _set_fault(faults: Faults, body: dict[str, Any]) -> None:
    """One fault from the page's JSON; ValueError saying what was wrong and what is allowed."""
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in _FAULT_FIELDS:
        raise ValueError(f"kind must be one of {', '.join(_FAULT_FIELDS)}; got {json.dumps(kind)}")
    allowed = _FAULT_FIELDS[kind]
    unknown = sorted(set(body) - {"kind", *allowed})
    if unknown:
        raise ValueError(
            f"unknown field {', '.join(unknown)} for kind {kind} (allowed: {', '.join(allowed) or 'none'})"
        )
    scope = fault_scope(body.get("scope", "all"))
    if kind == "fail":
        retry_after = _seconds(body, "retry_after")
        faults.fail_next(
            _whole(body, "count"),
            _whole(body, "status", 429),
            scope,
            retry_after=RETRY_AFTER if retry_after is None else retry_after,
        )
    elif kind == "outage":
        faults.outage(_required_seconds(body, "seconds"), _whole(body, "status", 503), scope)
    elif kind == "slow":
        faults.slow(_required_seconds(body, "delay"), _seconds(body, "seconds"), scope)
    elif kind == "gateway_drop":
        seconds = _seconds(body, "seconds")
        await faults.drop_gateway(0.0 if seconds is None else seconds)
    else:
        faults.clear()


@routes.get("/app/api/faults")
async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].faults.describe().to_json())


@routes.post("/app/api/faults")
async def post_faults(request: web.Request) -> web.Response:
    """``{"kind": "fail", "count": 8, "status": 429}``, ``{"kind": "outage", "seconds": 60}``,
    ``{"kind": "slow", "delay": 2, "seconds": 30}``, ``{"kind": "gateway_drop", "seconds": 5}``,
    ``{"kind": "clear"}`` (``scope`` optional); answers what is active now."""
    faults = request.app[STATE_KEY].faults
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError('expected a JSON object like {"kind": "fail", "count": 3}')
        await _set_fault(faults, body)
    except ValueError as exc:  # bad JSON included (JSONDecodeError is a ValueError)
        return _error(exc)
    return web.json_response(faults.describe().to_json())


@routes.get("/app/ws")
async def page_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    sock = PageSocket(ws, _user_id(request.query.get("user")))
    request.app[SOCKETS_KEY].add(sock)
    writer = asyncio.create_task(_writer(sock))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "ping":
                sock.queue.put_nowait({"type": "pong"})
    finally:
        request.app[SOCKETS_KEY].discard(sock)
        sock.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await writer
    return ws


async def _writer(sock: PageSocket) -> None:
    while (item := await sock.queue.get()) is not None:
        if sock.ws.closed:
            break
        try:
            await sock.ws.send_str(json.dumps(item))
        except ConnectionError:
            break
