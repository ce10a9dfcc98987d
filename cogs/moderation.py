"""Moderators' commands: quotas and relax mode, blocking students, banned words, the moderation log.

Every command here is hidden from students in Discord's client (``default_permissions(manage_guild=True)``:
a server admin can open them to the moderator role in Server Settings → Integrations) and checked in code
(``interaction_check``) for Manage Server or the configured moderator role, since hiding is not a check.
Every change is written to the moderation log by the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.common import guild_id_of, require_moderator, short
from imaginebot.errors import ImagineError
from imaginebot.params import normalise_words

if TYPE_CHECKING:
    from bot import ImagineBot

MAX_DAILY = 10_000


def _limit(limit: int | None) -> str:
    return "unlimited" if limit is None else f"{limit} images a day"


MODERATORS = discord.Permissions(manage_guild=True)  # who sees the commands by default


class Moderation(commands.Cog):
    quota = app_commands.Group(
        name="quota",
        description="Daily image quotas (moderators)",
        guild_only=True,
        default_permissions=MODERATORS,
    )
    banned = app_commands.Group(
        name="banned",
        description="Words not allowed in prompts (moderators)",
        guild_only=True,
        default_permissions=MODERATORS,
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction[ImagineBot]) -> bool:  # type: ignore[override]
        require_moderator(interaction)
        return True

    # -- /quota ------------------------------------------------------------------------------------------

    @quota.command(name="set")
    @app_commands.describe(
        images="images per UTC day (0 stops the user)",
        user="whose quota; leave out to set the server's default",
        unlimited="no limit at all (images is then ignored)",
    )
    async def quota_set(
        self,
        interaction: discord.Interaction[ImagineBot],
        images: app_commands.Range[int, 0, MAX_DAILY],
        user: discord.Member | None = None,
        unlimited: bool = False,
    ) -> None:
        """Set a user's daily images, or the server's default."""
        limit = None if unlimited else images
        store, guild = self.bot.store, guild_id_of(interaction)
        if user is None:
            await store.set_guild_quota(guild, limit, by=interaction.user.id)
            text = f"The server's default quota is now {_limit(limit)}."
        else:
            await store.set_user_quota(guild, user.id, limit, by=interaction.user.id)
            text = f"{user.mention}'s quota is now {_limit(limit)}."
        await interaction.response.send_message(text, ephemeral=True)

    @quota.command(name="reset")
    @app_commands.describe(user="whose usage today is given back", clear="also drop their own quota")
    async def quota_reset(
        self, interaction: discord.Interaction[ImagineBot], user: discord.Member, clear: bool = False
    ) -> None:
        """Give a user today's images back (and, with clear, return them to the server's default)."""
        store, guild = self.bot.store, guild_id_of(interaction)
        await store.reset_usage(guild, user.id, by=interaction.user.id)
        if clear:
            await store.clear_user_quota(guild, user.id, by=interaction.user.id)
        status = await store.quota_status(guild, user.id)
        await interaction.response.send_message(
            f"{user.mention} has all of today's images back: {_limit(status.limit)}"
            + (", the server's default." if clear else "."),
            ephemeral=True,
        )

    @quota.command(name="relax")
    @app_commands.describe(
        state="on: a student whose quota is used up may still queue in relax (after the fast jobs, free)"
    )
    async def quota_relax(
        self, interaction: discord.Interaction[ImagineBot], state: Literal["on", "off"]
    ) -> None:
        """Whether students out of quota may still queue in relax mode (and anyone may choose relax)."""
        on = state == "on"
        await self.bot.store.set_relax(guild_id_of(interaction), on, by=interaction.user.id)
        text = (
            "Relax mode is on: a student whose daily quota is used up may still queue jobs, in relax (they "
            "start when no fast job waits, and cost no quota); anyone may choose Relax in /settings."
            if on
            else "Relax mode is off: every job counts against the daily quota. Relax jobs already queued "
            "still run."
        )
        await interaction.response.send_message(text, ephemeral=True)

    @quota.command(name="show")
    @app_commands.describe(user="whose quota; leave out for the server's default and today's usage")
    async def quota_show(
        self, interaction: discord.Interaction[ImagineBot], user: discord.Member | None = None
    ) -> None:
        """Show a user's quota, or the server's default and who used what today."""
        store, guild = self.bot.store, guild_id_of(interaction)
        if user is not None:
            status = await store.quota_status(guild, user.id)
            left = "" if status.left is None else f", {status.left} left"
            text = (
                f"{user.mention}: {_limit(status.limit)}; used {status.used} today{left}. "
                f"Resets {discord.utils.format_dt(status.resets_at, 'R')}."
            )
        else:
            relax = "on" if await store.relax_on(guild) else "off"
            lines = [
                f"Server default: {_limit(await store.guild_quota(guild))}. Relax mode: {relax}.",
                "Used today:",
            ]
            usage = await store.usage_report(guild)
            lines += [f"- <@{row.user_id}>: {row.images}" for row in usage[:25]] or ["- nobody yet"]
            text = "\n".join(lines)
        await interaction.response.send_message(
            text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    # -- /block, /unblock ----------------------------------------------------------------------------------

    @app_commands.command(name="block")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(user="who may no longer make images here", reason="noted in the moderation log")
    async def block(
        self, interaction: discord.Interaction[ImagineBot], user: discord.Member, reason: str = ""
    ) -> None:
        """Stop a user from making images on this server."""
        await self.bot.store.block_user(
            guild_id_of(interaction), user.id, by=interaction.user.id, reason=reason
        )
        cancelled = await self.bot.jobs.cancel_user(guild_id_of(interaction), user.id)
        extra = f" Cancelled {cancelled} waiting job(s)." if cancelled else ""
        await interaction.response.send_message(f"{user.mention} is blocked.{extra}", ephemeral=True)

    @app_commands.command(name="unblock")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(user="who may make images again")
    async def unblock(self, interaction: discord.Interaction[ImagineBot], user: discord.Member) -> None:
        """Let a blocked user make images again."""
        was = await self.bot.store.unblock_user(guild_id_of(interaction), user.id, by=interaction.user.id)
        text = f"{user.mention} is unblocked." if was else f"{user.mention} was not blocked."
        await interaction.response.send_message(text, ephemeral=True)

    # -- /banned -----------------------------------------------------------------------------------------

    @banned.command(name="add")
    @app_commands.describe(word="a word or phrase refused in prompts and --no")
    async def banned_add(
        self, interaction: discord.Interaction[ImagineBot], word: app_commands.Range[str, 1, 100]
    ) -> None:
        """Refuse prompts that contain a word."""
        word = normalise_words(word)
        if not word:
            raise ImagineError("The word is empty: give a word or phrase of 1 to 100 characters.")
        added = await self.bot.store.add_banned_word(guild_id_of(interaction), word, by=interaction.user.id)
        text = f"'{word}' is now refused in prompts." if added else f"'{word}' was already on the list."
        await interaction.response.send_message(text, ephemeral=True)

    @banned.command(name="remove")
    @app_commands.describe(word="the word or phrase to allow again")
    async def banned_remove(self, interaction: discord.Interaction[ImagineBot], word: str) -> None:
        """Allow a banned word again."""
        word = normalise_words(word)
        removed = await self.bot.store.remove_banned_word(
            guild_id_of(interaction), word, by=interaction.user.id
        )
        text = f"'{word}' is allowed again." if removed else f"'{word}' was not on the list."
        await interaction.response.send_message(text, ephemeral=True)

    @banned.command(name="list")
    async def banned_list(self, interaction: discord.Interaction[ImagineBot]) -> None:
        """Show the banned words."""
        words = await self.bot.store.banned_words(guild_id_of(interaction))
        text = "Banned words: " + ", ".join(f"'{w}'" for w in words) if words else "No words are banned."
        await interaction.response.send_message(short(text, 1900), ephemeral=True)

    # -- /modlog -----------------------------------------------------------------------------------------

    @app_commands.command(name="modlog")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def modlog(self, interaction: discord.Interaction[ImagineBot]) -> None:
        """The last moderator actions on this server."""
        actions = await self.bot.store.moderation_log(guild_id_of(interaction), limit=20)
        lines = [
            f"{discord.utils.format_dt(a.at, 'f')} <@{a.actor_id}> {a.action}"
            + (f" <@{a.target_id}>" if a.target_id else "")
            + (f" {a.detail}" if a.detail else "")
            for a in actions
        ] or ["No moderator actions yet."]
        await interaction.response.send_message(
            short("\n".join(lines), 1900), ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Moderation(bot))
