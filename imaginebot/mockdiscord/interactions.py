"""The users' side: what a Discord client does when someone runs a slash command (files for its
attachment options included), clicks a button, picks from a select menu, or fills in and submits a
modal. It checks what the Discord client checks (registered commands, required options, choices
and ranges, upload sizes, visible and enabled components, required and length-limited modal
fields), then dispatches an INTERACTION_CREATE and starts the 3-second acknowledgement clock.
"""

from __future__ import annotations

import asyncio
import itertools
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from .modals import Modal, ModalField, submission_components
from .models import STUDENT_PERMISSIONS, Attachment, Channel, Interaction, InteractionType, Message, User
from .payloads import CommandOptionPayload, InteractionDataPayload, InteractionPayload
from .state import Command, MockState, StateEvent

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
BUTTON, STRING_SELECT = 2, 3
CONTEXT_GUILD, CONTEXT_BOT_DM = 0, 1  # where an interaction happened (InteractionContextType)


class UserActionError(ValueError):
    """Something a Discord client would not let a user do; the message says why."""


@dataclass(frozen=True)
class CommandFile:
    """A file a user attaches to a slash command's attachment option (type 11).

    ``content_type`` None: guessed from the file name, as Discord does.
    """

    filename: str
    data: bytes
    content_type: str | None = None


def _command_file(value: Any) -> CommandFile:
    if isinstance(value, CommandFile):
        return value
    if isinstance(value, tuple) and 2 <= len(value) <= 3:
        return CommandFile(*value)
    raise ValueError("give a CommandFile(filename, data, content_type) or a (filename, data) tuple")


def _attach(state: MockState, value: Any, channel: Channel) -> Attachment:
    """Upload a command's file the way the Discord client does before it sends the command."""
    file = _command_file(value)
    if len(file.data) > state.attachment_size_limit:
        limit = state.attachment_size_limit
        raise UserActionError(f"{file.filename} is {len(file.data)} bytes: the upload limit is {limit} bytes")
    # Discord keeps a file name's letters, digits, dots, dashes and underscores; others become "_".
    filename = re.sub(r"[^\w.-]", "_", PurePosixPath(file.filename.replace("\\", "/")).name) or "file"
    content_type = file.content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return state.add_attachment(channel.id, filename, file.data, content_type, ephemeral=True)


def find_command(state: MockState, path: str) -> tuple[Command, list[str], list[dict[str, Any]]]:
    """``"quota set"`` → (the ``quota`` command, ``["set"]``, the options of ``set``)."""
    words = path.strip().lstrip("/").split()
    if not words:
        raise UserActionError("no command given")
    command = next((c for c in state.all_commands() if c.name == words[0]), None)
    if command is None:
        known = ", ".join(sorted("/" + c.name for c in state.all_commands())) or "none"
        raise UserActionError(f"the bot registered no command /{words[0]} (registered: {known})")
    options: list[dict[str, Any]] = list(command.data.get("options") or [])
    for depth, word in enumerate(words[1:], start=1):
        sub = next((o for o in options if o.get("name") == word and o.get("type") in (1, 2)), None)
        if sub is None:
            raise UserActionError(f"/{' '.join(words[:depth])} has no subcommand {word!r}")
        options = list(sub.get("options") or [])
    if any(o.get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in options):
        subs = ", ".join(o["name"] for o in options)
        raise UserActionError(f"/{' '.join(words)} needs a subcommand: {subs}")
    return command, words[1:], options


def _convert(
    state: MockState,
    schema: dict[str, Any],
    value: Any,
    resolved: dict[str, dict[str, Any]],
    channel: Channel,
) -> Any:
    name, kind = schema["name"], schema.get("type")
    try:
        if kind == ATTACHMENT:
            attachment = _attach(state, value, channel)
            out: Any = str(attachment.id)
            resolved.setdefault("attachments", {})[out] = attachment.payload(state.base_url)
        elif kind == STRING:
            out = str(value)
            if not schema.get("min_length", 0) <= len(out) <= schema.get("max_length", 6000):
                raise UserActionError(
                    f"{name}: length must be {schema.get('min_length', 0)}..{schema.get('max_length')}"
                )
        elif kind in (INTEGER, NUMBER):
            if isinstance(value, bool):
                raise ValueError
            out = int(value) if kind == INTEGER else float(value)
            low, high = schema.get("min_value"), schema.get("max_value")
            if (low is not None and out < low) or (high is not None and out > high):
                raise UserActionError(f"{name}: must be between {low} and {high}, not {out}")
        elif kind == BOOLEAN:
            out = value if isinstance(value, bool) else str(value).lower() in ("true", "yes", "1", "on")
        elif kind in (USER, MENTIONABLE):
            user = value if isinstance(value, User) else state.user(value)
            out = str(user.id)
            resolved.setdefault("users", {})[out] = user.payload()
            perms = state.permissions(user)
            resolved.setdefault("members", {})[out] = user.member_payload(with_user=False, permissions=perms)
        elif kind == CHANNEL:
            picked = next(
                (c for c in state.channels.values() if str(value).lstrip("#") in (c.name, str(c.id))), None
            )
            if picked is None:
                raise UserActionError(f"{name}: no channel {value!r}")
            out = str(picked.id)
            resolved.setdefault("channels", {})[out] = {**picked.payload(), "permissions": str(1 << 10)}
        elif kind == ROLE:
            role = next((r for r in state.roles if str(value).lstrip("@") in (r.name, str(r.id))), None)
            if role is None:
                raise UserActionError(f"{name}: no role {value!r}")
            out = str(role.id)
            resolved.setdefault("roles", {})[out] = role.payload()
        else:
            raise UserActionError(f"{name}: option type {kind} is not supported by the local Discord")
    except (ValueError, LookupError) as exc:
        if isinstance(exc, UserActionError):
            raise
        raise UserActionError(f"{name}: {value!r} is not a valid value ({exc})") from None
    choices = schema.get("choices")
    if choices and out not in [c["value"] for c in choices]:
        allowed = ", ".join(str(c["value"]) for c in choices)
        raise UserActionError(f"{name}: {out!r} is not one of the choices ({allowed})")
    return out


def _base_payload(state: MockState, interaction: Interaction, channel: Channel) -> InteractionPayload:
    user = interaction.user
    payload: InteractionPayload = {
        "id": str(interaction.id),
        "application_id": str(state.app_id),
        "type": int(interaction.type),
        "token": interaction.token,
        "version": 1,
        "data": {},
        "channel_id": str(channel.id),
        "channel": channel.payload(),
        # In a DM, Discord's text permissions (what discord.py's DMChannel.permissions_for lists).
        "app_permissions": str(STUDENT_PERMISSIONS if channel.is_dm else state.permissions(state.bot)),
        "locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": interaction.integration_owners,
        "context": CONTEXT_BOT_DM if channel.is_dm else CONTEXT_GUILD,
        "attachment_size_limit": state.attachment_size_limit,
    }
    if channel.is_dm:
        # No guild_id: discord.py then builds interaction.user from "user" and the channel (a
        # DMChannel) from the channel's type 1 (discord/interactions.py:244-292).
        payload["user"] = user.payload()
    else:
        payload["guild_id"] = str(state.guild_id)
        payload["guild"] = {"id": str(state.guild_id), "locale": "en-US", "features": []}
        payload["member"] = user.member_payload(permissions=state.permissions(user))
        payload["guild_locale"] = "en-US"
    return payload


def _dispatch(state: MockState, interaction: Interaction, payload: InteractionPayload) -> Interaction:
    gateway = state.gateway
    if gateway is None or not gateway.has_session:
        raise UserActionError("the bot is not connected to the local Discord")
    gateway.dispatch("INTERACTION_CREATE", payload)
    asyncio.get_running_loop().call_later(state.ack_timeout, state.check_acknowledged, interaction)
    state.emit(StateEvent("interaction_create", interaction=interaction))
    return interaction


def send_command(
    state: MockState,
    path: str,
    options: Mapping[str, Any] | None,
    *,
    user: User,
    channel: Channel | None = None,
) -> Interaction:
    """Run ``/path`` (``"imagine"``, ``"quota set"``) with named option values as ``user``."""
    command, subs, schemas = find_command(state, path)
    given = dict(options or {})
    unknown = set(given) - {s["name"] for s in schemas}
    if unknown:
        raise UserActionError(f"/{path}: unknown option(s) {', '.join(sorted(unknown))}")
    channel = channel or state.default_channel
    if channel.is_dm:
        # Commands in DMs need the command's contexts (and installs) honoured; not modelled here.
        raise UserActionError("the local Discord runs slash commands in guild channels only, not in DMs")
    resolved: dict[str, dict[str, Any]] = {}
    leaf: list[CommandOptionPayload] = []
    for schema in schemas:
        value = given.get(schema["name"])
        if value is None or value == "":
            if schema.get("required"):
                raise UserActionError(f"/{path}: option {schema['name']} is required")
            continue
        leaf.append(
            {
                "name": schema["name"],
                "type": schema["type"],
                "value": _convert(state, schema, value, resolved, channel),
            }
        )
    top = leaf
    sub_schemas: list[dict[str, Any]] = list(command.data.get("options") or [])
    chain: list[CommandOptionPayload] = []
    for word in subs:
        schema = next(o for o in sub_schemas if o.get("name") == word)
        chain.append({"name": word, "type": schema["type"], "options": []})
        sub_schemas = list(schema.get("options") or [])
    if chain:
        for parent, child in itertools.pairwise(chain):
            parent["options"] = [child]
        chain[-1]["options"] = leaf
        top = [chain[0]]
    interaction = state.new_interaction(
        channel,
        type=InteractionType.APPLICATION_COMMAND,
        user=user,
        command_name=" ".join([command.name, *subs]),
    )
    data: InteractionDataPayload = {"id": str(command.id), "name": command.name, "type": 1, "options": top}
    if resolved:
        data["resolved"] = resolved
    if command.guild_id is not None:
        data["guild_id"] = str(command.guild_id)  # the tree looks guild commands up by it
    payload = _base_payload(state, interaction, channel)
    payload["data"] = data
    return _dispatch(state, interaction, payload)


def use_component(
    state: MockState, message: Message, custom_id: str, *, user: User, values: list[str] | None = None
) -> Interaction:
    """Click a button (``values=None``) or choose ``values`` in a select menu on ``message``."""
    if message.deleted or not state.can_see(user.id, message):
        raise UserActionError(f"message {message.id} is not visible to {user.username}")
    component = message.component(custom_id)
    if component is None:
        raise UserActionError(
            f"message {message.id} has no component {custom_id!r} (has {message.custom_ids})"
        )
    if component.get("disabled"):
        raise UserActionError(f"component {custom_id!r} is disabled")
    kind = int(component["type"])
    data: InteractionDataPayload = {"custom_id": custom_id, "component_type": kind}
    if kind == BUTTON:
        if values is not None:
            raise UserActionError(f"{custom_id!r} is a button: click it, don't select values")
    else:
        if values is None:
            raise UserActionError(f"{custom_id!r} is a select menu: choose values")
        low, high = int(component.get("min_values", 1)), int(component.get("max_values", 1))
        if not low <= len(values) <= high:
            raise UserActionError(f"{custom_id!r}: choose between {low} and {high} values")
        if kind == STRING_SELECT:
            allowed = [o["value"] for o in component.get("options", [])]
            bad = [v for v in values if v not in allowed]
            if bad:
                raise UserActionError(f"{custom_id!r}: {bad} not among the options {allowed}")
        data["values"] = list(values)
    channel = state.channel(message.channel_id)
    interaction = state.new_interaction(
        channel,
        type=InteractionType.MESSAGE_COMPONENT,
        user=user,
        custom_id=custom_id,
        values=values,
        message_id=message.id,
    )
    payload = _base_payload(state, interaction, channel)
    payload["data"] = data
    payload["message"] = message.payload(state.base_url)
    return _dispatch(state, interaction, payload)


def _modal_value(item: ModalField, given: str | list[str] | None) -> str | list[str]:
    """What the client would send for one field, or UserActionError where it would not let the user
    submit. Left out: the pre-filled value (or default options) stays."""
    value = item.default if given is None else given
    name = f"{item.label!r} ({item.custom_id})"
    if item.is_select:
        if isinstance(value, str):
            raise UserActionError(f"{name} is a select menu: give a list of values")
        low = item.min_values if item.required or value else 0
        if not low <= len(value) <= item.max_values:
            raise UserActionError(f"{name}: choose between {low} and {item.max_values} values")
        allowed = [str(o["value"]) for o in item.options]
        bad = [v for v in value if v not in allowed]
        if bad:
            raise UserActionError(f"{name}: {bad} not among the options {allowed}")
        return list(value)
    if not isinstance(value, str):
        raise UserActionError(f"{name} is a text input: give a string")
    if not value and item.required:
        raise UserActionError(f"{name} is required")
    if value and not item.min_length <= len(value) <= item.max_length:
        raise UserActionError(
            f"{name}: must be {item.min_length}..{item.max_length} characters, not {len(value)}"
        )
    return value


def submit_modal(
    state: MockState, modal: Modal, values: Mapping[str, str | list[str]], *, user: User
) -> Interaction:
    """Fill in ``modal`` (text by custom_id, a list of values for a select) and submit it as ``user``:
    a MODAL_SUBMIT (type 5) whose ``data.components`` follow the modal's layout, with the message
    the modal was opened from when a component opened it."""
    if modal.user.id != user.id:
        raise UserActionError(
            f"the modal {modal.title!r} is open for {modal.user.username}, not {user.username}"
        )
    if modal.closed or state.modals.get(user.id) is not modal:
        raise UserActionError(f"the modal {modal.title!r} is no longer open")
    unknown = set(values) - set(modal.custom_ids)
    if unknown:
        raise UserActionError(
            f"the modal has no field(s) {', '.join(sorted(unknown))} (has {modal.custom_ids})"
        )
    chosen = {f.custom_id: _modal_value(f, values.get(f.custom_id)) for f in modal.fields}
    channel = state.channel(modal.channel_id)
    message = state.messages.get(modal.message_id or 0)
    if message is not None and message.deleted:
        message = None  # the client still submits; the bot just can't act on the message
    interaction = state.new_interaction(
        channel,
        type=InteractionType.MODAL_SUBMIT,
        user=user,
        custom_id=modal.custom_id,
        message_id=None if message is None else message.id,
        trigger=modal.interaction,
    )
    payload = _base_payload(state, interaction, channel)
    payload["data"] = {"custom_id": modal.custom_id, "components": submission_components(modal, chosen)}
    if message is not None:
        payload["message"] = message.payload(state.base_url)
    _dispatch(state, interaction, payload)
    state.close_modal(modal, "submitted")
    return interaction


def dismiss_modal(state: MockState, modal: Modal, *, user: User) -> None:
    """Close ``modal`` without submitting (Cancel, Escape): Discord tells the bot nothing."""
    if modal.user.id != user.id:
        raise UserActionError(
            f"the modal {modal.title!r} is open for {modal.user.username}, not {user.username}"
        )
    if not modal.closed:
        state.close_modal(modal, "dismissed")
