"""Small pieces the cogs share: who moderates, and how a user is told something went wrong."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)


def the_bot(interaction: discord.Interaction[Any]) -> ImagineBot:
    return interaction.client  # type: ignore[no-any-return]


def is_moderator(interaction: discord.Interaction[Any]) -> bool:
    """Manage Server, or the configured moderator role (by name or id). Checked in code on every call:
    Discord's default_permissions only hide commands in the client, which a user can get around."""
    member = interaction.user
    if not isinstance(member, discord.Member):
        return False
    if member.guild_permissions.manage_guild:
        return True
    role = the_bot(interaction).settings.moderator_role
    if not role:
        return False
    return any(str(r.id) == role or r.name.casefold() == role.casefold() for r in member.roles)


class NotModerator(app_commands.CheckFailure):
    """Raised by moderator-only commands; ``tree.on_error`` tells the user."""

    def __init__(self) -> None:
        super().__init__("Only moderators (Manage Server, or the moderator role) can do that.")


def require_moderator(interaction: discord.Interaction[Any]) -> None:
    if not is_moderator(interaction):
        raise NotModerator()


def guild_id_of(interaction: discord.Interaction[Any]) -> int:
    """The server the interaction came from; 0 in direct messages (quotas then are the bot-wide default)."""
    return interaction.guild_id or 0


async def tell(interaction: discord.Interaction[Any], message: str) -> None:
    """Say ``message`` to the user alone, whether or not the interaction was answered already."""
    if interaction.response.is_done():
        await interaction.followup.send(message, ephemeral=True)
    else:
        await interaction.response.send_message(message, ephemeral=True)


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# An interaction token is a credential, and it rides in the URL of every webhook and callback request.
_TOKEN_IN_URL = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?]+")


def describe_error(error: BaseException) -> str:
    """A failed call to Discord in one log line, with any interaction token masked (aiohttp's errors quote
    the URL they failed on)."""
    if isinstance(error, discord.HTTPException):
        what = "rate limited" if error.status == 429 else (error.text or error.response.reason or "")
        code = f" code {error.code}" if error.code else ""
        text = f"Discord answered {error.status}{code}: {what}".rstrip(": ")
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return _TOKEN_IN_URL.sub(r"\1<token>", text)


def about(seconds: float) -> str:
    """A wait, as roughly as it is known: "in about 15 s", "in about 3 min"."""
    if seconds < 2:
        return "any moment now"
    if seconds < 60:
        unit = 5 if seconds >= 10 else 1
        return f"in about {round(seconds / unit) * unit} s"
    if seconds < 3600:
        return f"in about {round(seconds / 60)} min"
    return f"in about {seconds / 3600:.1f} h"
