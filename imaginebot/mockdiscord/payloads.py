"""Discord's JSON shapes, as far as the local Discord writes them (after discord-api-docs and
discord.py's ``discord/types``). Only what discord.py reads is here."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class UserPayload(TypedDict):
    id: str
    username: str
    discriminator: str
    global_name: str | None
    avatar: str | None
    bot: bool


class RolePayload(TypedDict):
    id: str
    name: str
    permissions: str
    position: int
    color: int
    hoist: bool
    managed: bool
    mentionable: bool


class MemberPayload(TypedDict):
    user: NotRequired[UserPayload]
    nick: str | None
    roles: list[str]
    joined_at: str
    deaf: bool
    mute: bool
    flags: int
    permissions: NotRequired[str]


class ChannelPayload(TypedDict):
    id: str
    type: int
    name: str
    position: int
    guild_id: str
    topic: str | None
    nsfw: bool
    parent_id: str | None
    permission_overwrites: list[Any]


class DMChannelPayload(TypedDict):
    """A DM as ``POST /users/@me/channels`` answers it (discord.py ``types/channel.py`` DMChannel)."""

    id: str
    type: int  # 1
    last_message_id: str | None
    recipients: list[UserPayload]
    flags: int


class AttachmentPayload(TypedDict):
    id: str
    filename: str
    size: int
    url: str
    proxy_url: str
    content_type: NotRequired[str]
    description: NotRequired[str]
    width: NotRequired[int]
    height: NotRequired[int]
    ephemeral: NotRequired[bool]
    flags: NotRequired[int]  # IS_SPOILER (1 << 3): a file named SPOILER_…, hidden behind a click


class InteractionMetadataPayload(TypedDict):
    id: str
    type: int
    user: UserPayload
    authorizing_integration_owners: dict[str, str]
    name: NotRequired[str]
    interacted_message_id: NotRequired[str]
    triggering_interaction_metadata: NotRequired[InteractionMetadataPayload]


class MessagePayload(TypedDict):
    id: str
    type: int
    channel_id: str
    guild_id: NotRequired[str]  # absent in a DM
    author: UserPayload
    content: str
    timestamp: str
    edited_timestamp: str | None
    tts: bool
    mention_everyone: bool
    mentions: list[Any]
    mention_roles: list[str]
    attachments: list[AttachmentPayload]
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    pinned: bool
    flags: int
    webhook_id: NotRequired[str]
    application_id: NotRequired[str]
    interaction_metadata: NotRequired[InteractionMetadataPayload]
    member: NotRequired[MemberPayload]


class CommandOptionPayload(TypedDict):
    name: str
    type: int
    value: NotRequired[Any]
    options: NotRequired[list[CommandOptionPayload]]


class InteractionDataPayload(TypedDict, total=False):
    id: str
    name: str
    type: int
    guild_id: str
    options: list[CommandOptionPayload]
    resolved: dict[str, Any]
    custom_id: str
    component_type: int
    values: list[str]
    components: list[dict[str, Any]]  # a modal submit's, in the shape of the modal


class InteractionPayload(TypedDict):
    id: str
    application_id: str
    type: int
    token: str
    version: int
    data: InteractionDataPayload
    # In a guild: guild_id, guild, member and guild_locale. In a DM: user instead, and none of those.
    guild_id: NotRequired[str]
    guild: NotRequired[dict[str, Any]]
    channel_id: str
    channel: ChannelPayload | DMChannelPayload
    member: NotRequired[MemberPayload]
    user: NotRequired[UserPayload]
    app_permissions: str
    locale: str
    guild_locale: NotRequired[str]
    entitlements: list[Any]
    authorizing_integration_owners: dict[str, str]
    context: int
    attachment_size_limit: int
    message: NotRequired[MessagePayload]


class ErrorPayload(TypedDict):
    message: str
    code: int
    errors: NotRequired[dict[str, Any]]


# discord.py's HTTPClient reads "global", which a class body can't spell: hence the functional form.
RateLimitedBody = TypedDict(
    "RateLimitedBody", {"message": str, "retry_after": float, "global": bool, "code": int}
)
