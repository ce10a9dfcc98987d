"""All of the local Discord's state, in memory: one guild, its channels and users, the bot's DMs
with them, the bot's synced commands, messages with their attachments and components, interactions
and a request log.

Everything that changes a message goes through :class:`MockState` so that the gateway (MESSAGE_*
dispatches to the bot), the web page (live channel view) and test waiters all hear about it.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiohttp import web

from . import errors
from .faults import Faults
from .modals import Modal
from .models import (
    DM,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    STUDENT_PERMISSIONS,
    Attachment,
    Channel,
    Interaction,
    Message,
    Role,
    Snowflakes,
    User,
    now,
)
from .ratelimit import RateLimiter

EventKind = Literal[
    "message_create",
    "message_update",
    "message_delete",
    "commands_update",
    "interaction_create",
    "interaction_ack",
    "interaction_failed",
    "gateway_ready",
    "gateway_resumed",
    "dm_open",
    "modal_open",
    "modal_close",
]

NONCE_LIFETIME = 300.0  # seconds a send's enforce_nonce keeps a repeat from posting a copy
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024  # Discord's default per-file upload limit (10 MiB)
REQUEST_SIZE_LIMIT = 25 * 1024 * 1024  # per request, all files together
ADMINISTRATOR = 0x8
# Gateway intents for MESSAGE_*: guild channels and DMs are separate intents.
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12


class Dispatcher(Protocol):
    """The gateway, as the state sees it: something that sends a dispatch to every bot session."""

    @property
    def has_session(self) -> bool:
        """A bot identified (it may be reconnecting: dispatches wait for its RESUME)."""
        ...

    def dispatch(self, event: str, data: Mapping[str, Any], *, intent: int | None = None) -> None: ...


@dataclass(frozen=True)
class StateEvent:
    kind: EventKind
    message: Message | None = None
    interaction: Interaction | None = None
    channel: Channel | None = None  # the DM of a "dm_open"
    detail: str = ""
    modal: Modal | None = None  # of "modal_open" / "modal_close" (detail: "submitted", "dismissed"...)


@dataclass(frozen=True)
class RequestLogEntry:
    at: float  # time.monotonic()
    method: str
    path: str
    status: int
    code: int | None  # Discord's JSON error code, if any
    auth: Literal["bot", "none", "invalid"]
    injected: bool = False  # answered by fault injection (state.faults), not handled


@dataclass(frozen=True)
class BotDenial:
    """What the bot token may not do in one channel (``MockDiscord.deny_bot``)."""

    edit: bool  # PATCH a message: 403 code 50001
    send: bool  # POST a message: 403 code 50013


@dataclass
class Command:
    """A synced application command, stored as the bot sent it plus the ids Discord adds."""

    id: int
    guild_id: int | None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.data["name"])


class MockState:
    def __init__(
        self,
        *,
        bot_token: str | None = None,
        ack_timeout: float = 3.0,
        token_lifetime: float = 15 * 60.0,
        attachment_size_limit: int = ATTACHMENT_SIZE_LIMIT,
        heartbeat_interval: float = 41.25,
        rate_limits: bool = False,
    ) -> None:
        self.snowflakes = Snowflakes()
        self.bot_token = bot_token or "mock." + secrets.token_urlsafe(24)
        self.ack_timeout = ack_timeout
        self.token_lifetime = token_lifetime
        self.attachment_size_limit = attachment_size_limit
        self.heartbeat_interval = heartbeat_interval
        self.ratelimits = RateLimiter(enabled=rate_limits)
        self.faults = Faults()
        self.base_url = ""  # http://host:port, set by the server once bound (attachment URLs need it)

        self.app_id = self.snowflakes.next()
        self.bot = User(self.app_id, "imaginebot", "imaginebot", bot=True)
        self.guild_id = self.snowflakes.next()
        self.guild_name = "Art class"
        self.roles = [
            Role(self.guild_id, "@everyone", STUDENT_PERMISSIONS),
            Role(
                self.snowflakes.next(), "Moderator", STUDENT_PERMISSIONS | MANAGE_GUILD | MANAGE_MESSAGES, 1
            ),
            Role(self.snowflakes.next(), "imaginebot", ADMINISTRATOR | STUDENT_PERMISSIONS, 2),
        ]
        self.moderator_role, self.bot_role = self.roles[1], self.roles[2]
        self.bot.role_ids = [self.bot_role.id]
        self.channels: dict[int, Channel] = {}
        self.bot_denials: dict[int, BotDenial] = {}  # channel id -> what the bot token may not do
        self.dms: dict[int, Channel] = {}  # user id -> the bot's DM with that user, once opened
        self.dms_closed: set[int] = set()  # users who don't accept DMs from the bot
        self._nonces: dict[tuple[int, str], tuple[int, float]] = {}  # (channel, nonce) -> (message, when)
        for position, name in enumerate(("general", "art")):
            channel = Channel(self.snowflakes.next(), self.guild_id, name, position)
            self.channels[channel.id] = channel
        self.users: dict[int, User] = {self.bot.id: self.bot}
        for username, global_name in (("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")):
            self.add_user(username, global_name)
        self.add_user("teacher", "Ms. Teacher", moderator=True)

        self.commands: dict[int | None, list[Command]] = {}  # guild id (None: global) -> commands
        self.messages: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.interactions: dict[int, Interaction] = {}
        self.interactions_by_token: dict[str, Interaction] = {}
        self.modals: dict[int, Modal] = {}  # user id -> the modal open on their screen (one at a time)
        self.request_log: list[RequestLogEntry] = []
        self.gateway: Dispatcher | None = None
        self.listeners: list[Callable[[StateEvent], None]] = []
        self._waiters: list[tuple[Callable[[StateEvent], bool], asyncio.Future[StateEvent]]] = []
        self._recent: deque[str] = deque(maxlen=12)  # the latest events, for a wait that times out

    # -- people and places ------------------------------------------------------------------------
    def add_user(self, username: str, global_name: str | None = None, *, moderator: bool = False) -> User:
        user = User(self.snowflakes.next(), username, global_name)
        if moderator:
            user.role_ids.append(self.moderator_role.id)
        self.users[user.id] = user
        return user

    def user(self, name_or_id: str | int) -> User:
        """A user by id, username or display name."""
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            user = self.users.get(int(name_or_id))
            if user is not None:
                return user
        key = str(name_or_id).lstrip("@").lower()
        for user in self.users.values():
            if key in (user.username.lower(), user.display_name.lower()):
                return user
        raise LookupError(f"no user {name_or_id!r} in the guild")

    @property
    def members(self) -> list[User]:
        return list(self.users.values())

    @property
    def default_channel(self) -> Channel:
        return next(iter(self.channels.values()))

    def channel(self, channel_id: int) -> Channel:
        """A guild channel or a DM; 404 10003 otherwise."""
        found = self.channels.get(channel_id) or self._dm_by_id(channel_id)
        if found is None:
            raise errors.unknown_channel()
        return found

    # -- direct messages --------------------------------------------------------------------------
    def message_for_nonce(self, channel_id: int, nonce: str) -> Message | None:
        """The message a send with ``enforce_nonce`` made in the last few minutes (Discord keeps them a few
        minutes), if it is still there."""
        found = self._nonces.get((channel_id, nonce))
        if found is None or time.monotonic() - found[1] > NONCE_LIFETIME:
            return None
        message = self.messages.get(found[0])
        return None if message is None or message.deleted else message

    def remember_nonce(self, channel_id: int, nonce: str, message: Message) -> None:
        self._nonces[(channel_id, nonce)] = (message.id, time.monotonic())

    def open_dm(self, user: User) -> Channel:
        """The bot's DM with ``user`` (``POST /users/@me/channels``): one per user, made once."""
        dm = self.dms.get(user.id)
        if dm is None:
            dm = Channel(self.snowflakes.next(), None, user.username, type=DM, recipient=user)
            self.dms[user.id] = dm
            self.emit(StateEvent("dm_open", channel=dm))
        return dm

    def _dm_by_id(self, channel_id: int) -> Channel | None:
        return next((dm for dm in self.dms.values() if dm.id == channel_id), None)

    def set_dms_closed(self, user: User, closed: bool) -> None:
        """Closed: the bot's sends to ``user`` answer 403 50007 (the DM channel itself still opens)."""
        if closed:
            self.dms_closed.add(user.id)
        else:
            self.dms_closed.discard(user.id)

    def may_view(self, user_id: int | None, channel_id: int) -> bool:
        """Every member sees the guild's channels; a DM only its user (the bot reads its own DMs
        through the bot token, not through here)."""
        dm = self._dm_by_id(channel_id)
        return dm is None or (dm.recipient is not None and dm.recipient.id == user_id)

    def can_see(self, user_id: int | None, message: Message) -> bool:
        return message.visible_to(user_id) and self.may_view(user_id, message.channel_id)

    def permissions(self, user: User) -> int:
        value = 0
        for role in self.roles:
            if role.id == self.guild_id or role.id in user.role_ids:
                value |= role.permissions
        return value

    def is_moderator(self, user: User) -> bool:
        return bool(self.permissions(user) & (MANAGE_GUILD | ADMINISTRATOR))

    def deny_bot(self, channel_id: int, *, edit: bool = True, send: bool = False) -> None:
        """Take edits and/or sends in a channel away from the bot token (not from interaction tokens)."""
        self.channel(channel_id)
        if edit or send:
            self.bot_denials[channel_id] = BotDenial(edit, send)
        else:
            self.bot_denials.pop(channel_id, None)

    def check_bot_may(self, channel_id: int, action: Literal["edit", "send"]) -> None:
        """403 as Discord answers a bot without the channel's permission: 50001 for an edit (the
        channel is out of its reach), 50013 for a send (Send Messages missing), 50007 for a send to
        a user who closed DMs (their existing messages stay editable)."""
        recipient = self.channel(channel_id).recipient
        if recipient is not None and action == "send" and recipient.id in self.dms_closed:
            raise errors.cannot_message_user()
        denial = self.bot_denials.get(channel_id)
        if denial is not None and action == "edit" and denial.edit:
            raise errors.missing_access()
        if denial is not None and action == "send" and denial.send:
            raise errors.missing_permissions()

    # -- commands ---------------------------------------------------------------------------------
    def set_commands(self, guild_id: int | None, commands: list[dict[str, Any]]) -> list[Command]:
        """A bulk overwrite (``tree.sync()``): keeps ids of commands that keep their name."""
        old = {c.name: c.id for c in self.commands.get(guild_id, [])}
        stored = []
        for data in commands:
            command_id = old.get(str(data["name"])) or self.snowflakes.next()
            stored.append(Command(command_id, guild_id, dict(data)))
        self.commands[guild_id] = stored
        self.emit(StateEvent("commands_update"))
        return stored

    def all_commands(self) -> list[Command]:
        """The commands a user of the guild can pick: the guild's, then the global ones."""
        guild = list(self.commands.get(self.guild_id, []))
        names = {c.name for c in guild}
        return guild + [c for c in self.commands.get(None, []) if c.name not in names]

    def command_payload(self, command: Command) -> dict[str, Any]:
        data: dict[str, Any] = {"type": 1, "description": "", "options": [], **command.data}
        data.update(id=str(command.id), application_id=str(self.app_id), version=str(command.id))
        if command.guild_id is not None:
            data["guild_id"] = str(command.guild_id)
        data.setdefault("default_member_permissions", None)
        return data

    # -- messages ---------------------------------------------------------------------------------
    def get_message(self, message_id: int, channel_id: int | None = None) -> Message:
        message = self.messages.get(message_id)
        if (
            message is None
            or message.deleted
            or (channel_id is not None and message.channel_id != channel_id)
        ):
            raise errors.unknown_message()
        return message

    def add_attachment(
        self, channel_id: int, filename: str, data: bytes, content_type: str, *, ephemeral: bool = False
    ) -> Attachment:
        attachment = Attachment(self.snowflakes.next(), channel_id, filename, data, content_type)
        attachment.ephemeral = ephemeral
        if content_type.startswith("image/"):
            attachment.width, attachment.height = _image_size(data) or (None, None)
        self.attachments[attachment.id] = attachment
        return attachment

    def create_message(self, channel_id: int, author: User, **fields: Any) -> Message:
        channel = self.channel(channel_id)
        message = Message(self.snowflakes.next(), channel_id, channel.guild_id, author, **fields)
        self.messages[message.id] = message
        if message.ephemeral_to is None:
            channel.last_message_id = message.id
        if message.ephemeral_to is None and self.gateway is not None:
            self.gateway.dispatch("MESSAGE_CREATE", self.message_payload(message), intent=_intent(message))
        self.emit(StateEvent("message_create", message))
        return message

    def message_edited(self, message: Message, previous: tuple[str, tuple[str, ...]]) -> None:
        """Call after changing a message's fields: records the revision and tells everyone."""
        message.history.append(previous)
        message.revisions += 1
        message.edited_at = now()
        if message.ephemeral_to is None and self.gateway is not None:
            self.gateway.dispatch("MESSAGE_UPDATE", self.message_payload(message), intent=_intent(message))
        self.emit(StateEvent("message_update", message))

    def delete_message(self, message: Message) -> None:
        message.deleted = True
        if message.ephemeral_to is None and self.gateway is not None:
            data = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                data["guild_id"] = str(message.guild_id)
            self.gateway.dispatch("MESSAGE_DELETE", data, intent=_intent(message))
        self.emit(StateEvent("message_delete", message))

    def message_payload(self, message: Message) -> dict[str, Any]:
        return dict(message.payload(self.base_url))

    def visible_messages(self, channel_id: int, user_id: int | None) -> list[Message]:
        return [m for m in self.messages.values() if m.channel_id == channel_id and m.visible_to(user_id)]

    # -- interactions -----------------------------------------------------------------------------
    def new_interaction(self, channel: Channel, **fields: Any) -> Interaction:
        interaction = Interaction(
            id=self.snowflakes.next(),
            token="aW50ZXJhY3Rpb24." + secrets.token_urlsafe(48),
            application_id=self.app_id,
            guild_id=channel.guild_id,
            channel_id=channel.id,
            created=time.monotonic(),
            **fields,
        )
        self.interactions[interaction.id] = interaction
        self.interactions_by_token[interaction.token] = interaction
        return interaction

    def token_expired(self, interaction: Interaction) -> bool:
        return interaction.expired or time.monotonic() - interaction.created > self.token_lifetime

    def interaction_for_token(self, token: str) -> Interaction:
        """The interaction behind a webhook token; 401 50027 once the token has expired."""
        interaction = self.interactions_by_token.get(token)
        if interaction is None or self.token_expired(interaction):
            raise errors.invalid_webhook_token()
        return interaction

    def expire_tokens(self) -> int:
        """Expire every interaction token now, as if 15 minutes had passed. Returns how many."""
        live = [i for i in self.interactions.values() if not i.expired]
        for interaction in live:
            interaction.expired = True
        return len(live)

    def original_message(self, interaction: Interaction) -> Message:
        if interaction.original_message_id is None:
            raise errors.unknown_message()
        return self.get_message(interaction.original_message_id)

    def ack_deadline_passed(self, interaction: Interaction) -> bool:
        return time.monotonic() - interaction.created > self.ack_timeout

    def check_acknowledged(self, interaction: Interaction) -> None:
        """Called ack_timeout after dispatch: Discord's 'The application did not respond'."""
        if not interaction.acknowledged:
            self.emit(StateEvent("interaction_failed", interaction=interaction, detail="did not respond"))

    # -- modals -----------------------------------------------------------------------------------
    def open_modal(self, modal: Modal) -> None:
        """Show ``modal`` to its user; a modal already open for them closes (the client shows one)."""
        earlier = self.modals.get(modal.user.id)
        if earlier is not None:
            self.close_modal(earlier, "replaced")
        self.modals[modal.user.id] = modal
        self.emit(StateEvent("modal_open", interaction=modal.interaction, modal=modal))

    def close_modal(self, modal: Modal, why: Literal["submitted", "dismissed", "replaced"]) -> None:
        modal.closed = True
        if self.modals.get(modal.user.id) is modal:
            del self.modals[modal.user.id]
        self.emit(StateEvent("modal_close", interaction=modal.interaction, modal=modal, detail=why))

    # -- events and waiting -----------------------------------------------------------------------
    def emit(self, event: StateEvent) -> None:
        self._recent.append(_describe(event))
        for listener in list(self.listeners):
            listener(event)
        for entry in list(self._waiters):
            predicate, future = entry
            if future.done():
                self._waiters.remove(entry)
                continue
            try:
                matched = predicate(event)
            except Exception as exc:  # a broken predicate fails the waiting test, not the server
                future.set_exception(exc)
                self._waiters.remove(entry)
                continue
            if matched:
                future.set_result(event)
                self._waiters.remove(entry)

    async def wait_for(
        self,
        predicate: Callable[[StateEvent], bool],
        timeout: float,  # noqa: ASYNC109
        what: str = "an event",
    ) -> StateEvent:
        """The first event from now on for which ``predicate`` holds. A time-out says what it waited for
        and the latest events, so a failing test explains itself."""
        future: asyncio.Future[StateEvent] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            recent = "\n  ".join(self._recent) or "(none)"
            raise TimeoutError(
                f"the local Discord waited {timeout:g} s for {what}; its latest events:\n  {recent}"
            ) from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def log(self, entry: RequestLogEntry) -> None:
        self.request_log.append(entry)
        del self.request_log[:-5000]

    @property
    def invalid_requests(self) -> int:
        """401/403/429 answers: real Discord bans an IP after 10,000 of them in 10 minutes."""
        return sum(1 for e in self.request_log if e.status in (401, 403, 429))


def _image_size(data: bytes) -> tuple[int, int] | None:
    """An image's width and height, as Discord puts them on image attachments (None: not an image
    Pillow reads; Discord then leaves them out)."""
    from PIL import Image, UnidentifiedImageError  # here: only image uploads need Pillow

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _intent(message: Message) -> int:
    """The intent a bot needs to hear about ``message``: a guild-only bot never gets DM events."""
    return GUILD_MESSAGES if message.guild_id is not None else DIRECT_MESSAGES


STATE_KEY = web.AppKey("mockdiscord_state", MockState)


def _describe(event: StateEvent) -> str:
    """One line of what happened, for a time-out's message."""
    parts: list[str] = [event.kind]
    if event.interaction is not None:
        what = event.interaction.command_name or event.interaction.custom_id or event.interaction.type.name
        parts.append(f"interaction {event.interaction.id} ({what})")
    if event.message is not None:
        m = event.message
        content = " ".join(m.content.split())
        parts.append(f"message {m.id}: {content[:60]!r}")
        if m.attachments:
            parts.append(f"{len(m.attachments)} attachment(s)")
        if m.custom_ids:
            parts.append("buttons " + " ".join(m.custom_ids[:3]) + (" …" if len(m.custom_ids) > 3 else ""))
    if event.detail:
        parts.append(event.detail[:60])
    return ", ".join(parts)
