"""The local Discord's records: users, the guild, channels, messages, attachments, interactions.

Each record knows how to write itself as Discord's JSON (``payload()``); ids are real snowflakes so
that discord.py's ``created_at``/``Interaction.expires_at`` arithmetic works.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from .payloads import (
    AttachmentPayload,
    ChannelPayload,
    DMChannelPayload,
    InteractionMetadataPayload,
    MemberPayload,
    MessagePayload,
    RolePayload,
    UserPayload,
)

DISCORD_EPOCH_MS = 1420070400000

# Permission bits (discord-api-docs, "Permissions").
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_GUILD = 0x20
MANAGE_MESSAGES = 1 << 13
STUDENT_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_APPLICATION_COMMANDS
)

# Channel types.
GUILD_TEXT = 0
DM = 1

# Message flags.
EPHEMERAL = 1 << 6
LOADING = 1 << 7


class InteractionType(enum.IntEnum):
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    MODAL_SUBMIT = 5


class CallbackType(enum.IntEnum):
    CHANNEL_MESSAGE_WITH_SOURCE = 4
    DEFERRED_CHANNEL_MESSAGE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    MODAL = 9


class Snowflakes:
    """``(ms_since_2015 << 22) | counter``: increasing, unique within this server."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0
    color: int = 0

    def payload(self) -> RolePayload:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "hoist": False,
            "managed": False,
            "mentionable": False,
        }


@dataclass
class User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    role_ids: list[int] = field(default_factory=list)
    joined_at: dt.datetime = field(default_factory=now)

    @property
    def display_name(self) -> str:
        return self.global_name or self.username

    def payload(self) -> UserPayload:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
        }

    def member_payload(self, *, with_user: bool = True, permissions: int | None = None) -> MemberPayload:
        member: MemberPayload = {
            "nick": None,
            "roles": [str(r) for r in self.role_ids],
            "joined_at": iso(self.joined_at),
            "deaf": False,
            "mute": False,
            "flags": 0,
        }
        if with_user:
            member["user"] = self.payload()
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member


@dataclass
class Channel:
    """A guild text channel, or (``recipient`` set, ``guild_id`` None) the bot's DM with one user."""

    id: int
    guild_id: int | None  # None: a DM
    name: str  # a DM's is its user's username, for reading only: Discord sends DMs without a name
    position: int = 0
    type: int = GUILD_TEXT
    topic: str | None = None
    recipient: User | None = None  # the user at the other end of a DM
    last_message_id: int | None = None

    @property
    def is_dm(self) -> bool:
        return self.recipient is not None

    def payload(self) -> ChannelPayload | DMChannelPayload:
        if self.recipient is not None:
            return {
                "id": str(self.id),
                "type": DM,
                "last_message_id": None if self.last_message_id is None else str(self.last_message_id),
                "recipients": [self.recipient.payload()],
                "flags": 0,
            }
        return {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "guild_id": str(self.guild_id),
            "topic": self.topic,
            "nsfw": False,
            "parent_id": None,
            "permission_overwrites": [],
        }


SPOILER_PREFIX, IS_SPOILER = "SPOILER_", 1 << 3


@dataclass
class Attachment:
    id: int
    channel_id: int
    filename: str
    data: bytes
    content_type: str = "application/octet-stream"
    description: str | None = None
    width: int | None = None  # images only, as Discord reports them
    height: int | None = None
    ephemeral: bool = False  # uploaded with a slash command's attachment option

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def path(self) -> str:
        """Where the bytes are served, relative to the server root (like cdn.discordapp.com)."""
        return f"/attachments/{self.channel_id}/{self.id}/{self.filename}"

    def payload(self, base_url: str) -> AttachmentPayload:
        url = base_url + self.path
        out: AttachmentPayload = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": url,
            "proxy_url": url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            out["description"] = self.description
        if self.width is not None and self.height is not None:
            out["width"], out["height"] = self.width, self.height
        if self.ephemeral:
            out["ephemeral"] = True
        if self.filename.startswith(SPOILER_PREFIX):  # as Discord: the name says it, the flag repeats it
            out["flags"] = IS_SPOILER
        return out


@dataclass
class Message:
    """A message as the channel shows it now; ``revisions`` counts edits, ``history`` keeps old contents."""

    id: int
    channel_id: int
    guild_id: int | None  # None: a DM
    author: User
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    created_at: dt.datetime = field(default_factory=now)
    edited_at: dt.datetime | None = None
    deleted: bool = False
    ephemeral_to: int | None = None  # the only user who sees an ephemeral message
    interaction: Interaction | None = None  # the interaction this message answers
    application_id: int | None = None
    revisions: int = 0
    history: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """A deferred response still 'thinking'."""
        return bool(self.flags & LOADING)

    def visible_to(self, user_id: int | None) -> bool:
        return not self.deleted and (self.ephemeral_to is None or self.ephemeral_to == user_id)

    def iter_components(self) -> list[dict[str, Any]]:
        """Every interactive component (buttons, selects) in every action row."""
        return [c for row in self.components for c in row.get("components", [])]

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if "custom_id" in c]

    def component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in self.iter_components() if c.get("custom_id") == custom_id), None)

    @property
    def button_labels(self) -> list[str]:
        return [str(c.get("label") or c.get("emoji", {}).get("name", "")) for c in self.iter_components()]

    def payload(self, base_url: str) -> MessagePayload:
        out: MessagePayload = {
            "id": str(self.id),
            "type": 0 if self.interaction is None else 20,  # 20: CHAT_INPUT_COMMAND reply
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edited_at) if self.edited_at else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.payload(base_url) for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "flags": self.flags,
        }
        # In a DM Discord sends neither guild_id nor member: discord.py takes a message without
        # guild_id for a DM (state.py:541-544), and a member there would have no guild.
        if self.guild_id is not None:
            out["guild_id"] = str(self.guild_id)
        if self.application_id is not None:
            out["application_id"] = str(self.application_id)
        if self.interaction is not None:
            inter = self.interaction
            if inter.type != InteractionType.APPLICATION_COMMAND:
                out["type"] = 0
            out["webhook_id"] = str(inter.application_id)
            out["interaction_metadata"] = inter.metadata()
        if self.guild_id is not None and (not self.author.bot or self.interaction is None):
            out["member"] = self.author.member_payload(with_user=False)
        return out


@dataclass
class Interaction:
    """One INTERACTION_CREATE and what the bot did with its token."""

    id: int
    token: str
    type: InteractionType
    application_id: int
    guild_id: int | None  # None: used in a DM
    channel_id: int
    user: User
    created: float  # time.monotonic() when dispatched
    command_name: str | None = None  # "quota set" for a subcommand
    custom_id: str | None = None
    values: list[str] | None = None
    message_id: int | None = None  # the message a component (or the modal's button) was used on
    trigger: Interaction | None = None  # a modal submit's: the interaction that opened the modal
    response_type: CallbackType | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    expired: bool = False  # set by expire_tokens(); otherwise the lifetime decides

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def integration_owners(self) -> dict[str, str]:
        """``authorizing_integration_owners`` of a guild-installed app: the guild, "0" in the bot's DM."""
        return {"0": "0" if self.guild_id is None else str(self.guild_id)}

    def metadata(self) -> InteractionMetadataPayload:
        """``interaction_metadata`` of a message answering this interaction; a modal submit's names the
        command or click that opened the modal (``triggering_interaction_metadata``)."""
        meta: InteractionMetadataPayload = {
            "id": str(self.id),
            "type": int(self.type),
            "user": self.user.payload(),
            "authorizing_integration_owners": self.integration_owners,
        }
        if self.command_name:
            meta["name"] = self.command_name
        if self.message_id is not None and self.type == InteractionType.MESSAGE_COMPONENT:
            meta["interacted_message_id"] = str(self.message_id)
        if self.trigger is not None:
            meta["triggering_interaction_metadata"] = self.trigger.metadata()
        return meta
