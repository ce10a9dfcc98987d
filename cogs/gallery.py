"""/gallery: a private link to the class gallery (imaginebot/web). A moderator's link opens every student's
images with the moderation actions; a student's opens only their own. The reply is ephemeral: a link is a key,
only its user ever sees it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.common import guild_id_of, is_moderator

if TYPE_CHECKING:
    from bot import ImagineBot


class Gallery(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="gallery")
    @app_commands.guild_only()
    async def gallery(self, interaction: discord.Interaction[ImagineBot]) -> None:
        """A private link to the class gallery: your images (moderators: everyone's, and taking them down)."""
        links = self.bot.gallery_links
        if links is None:
            await interaction.response.send_message(
                "The gallery is off on this bot: its operator set IMAGINEBOT_WEB_PORT=off.", ephemeral=True
            )
            return
        guild, user = guild_id_of(interaction), interaction.user
        await self.bot.jobs.remember_name(guild, user.id, user.display_name)
        moderator = is_moderator(interaction)
        url, expires = links.link(guild, user.id, moderator=moderator)
        what = (
            "**The class gallery**: every student's images, with search and filters, and **Take down** for "
            "what should not be there."
            if moderator
            else "**Your gallery**: every image you made here, with search and filters."
        )
        await interaction.response.send_message(
            f"🖼️ {what}\n{url}\nThe link works until {discord.utils.format_dt(expires, 'f')} "
            f"({discord.utils.format_dt(expires, 'R')}). It opens the gallery as you: don't share it.",
            ephemeral=True,
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Gallery(bot))
