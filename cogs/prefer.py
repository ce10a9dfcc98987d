"""/prefer: a student's own ``--name`` shortcuts and the suffix added to every prompt (Midjourney's custom
options). Everything here is the student's own, so every answer is ephemeral."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.common import short
from imaginebot.errors import ParamError
from imaginebot.prefer import MAX_VALUE_CHARS, check_name, check_value

if TYPE_CHECKING:
    from bot import ImagineBot


class Prefer(commands.Cog):
    prefer = app_commands.Group(name="prefer", description="Your own shortcuts and suffix for /imagine")
    option = app_commands.Group(name="option", description="Your own --name shortcuts", parent=prefer)

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @option.command(name="set")
    @app_commands.describe(
        name="the shortcut's name: then --name in a prompt stands for the text",
        value="the text it stands for, flags too (leave it out to delete the shortcut)",
    )
    async def option_set(
        self,
        interaction: discord.Interaction[ImagineBot],
        name: app_commands.Range[str, 1, 40],
        value: app_commands.Range[str, 1, MAX_VALUE_CHARS] | None = None,
    ) -> None:
        """Save a --name shortcut for your prompts, or delete it (no value)."""
        store, user = self.bot.store, interaction.user.id
        name = check_name(name)
        if value is None or not value.strip():
            deleted = await store.delete_prefer_option(user, name)
            text = f"--{name} is deleted." if deleted else f"You had no shortcut --{name}."
            await interaction.response.send_message(text, ephemeral=True)
            return
        value = check_value(f"--{name}'s text", value)
        try:
            await self.bot.jobs.check_preference(user, value, shortcuts=False)
        except ParamError as error:
            raise ParamError(f"--{name} was not saved: in a prompt, its text would fail. {error}") from None
        await store.set_prefer_option(user, name, value)
        await interaction.response.send_message(
            f"Saved: `--{name}` in a prompt now stands for `{short(value, 300)}`.", ephemeral=True
        )

    @option.command(name="list")
    async def option_list(self, interaction: discord.Interaction[ImagineBot]) -> None:
        """Your shortcuts and your suffix."""
        store, user = self.bot.store, interaction.user.id
        options, suffix = await store.prefer_options(user), await store.prefer_suffix(user)
        lines = [f"- `--{name}` → `{short(value, 200)}`" for name, value in options.items()]
        if not lines:
            lines = ["You have no shortcuts yet: `/prefer option set name value` saves one."]
        else:
            lines.insert(0, "**Your shortcuts:**")
        lines.append(f"**Your suffix:** `{short(suffix, 300)}`" if suffix else "You have no suffix.")
        await interaction.response.send_message(short("\n".join(lines), 1900), ephemeral=True)

    @prefer.command(name="suffix")
    @app_commands.describe(value="added to the end of every /imagine of yours (leave it out to remove it)")
    async def suffix(
        self,
        interaction: discord.Interaction[ImagineBot],
        value: app_commands.Range[str, 1, MAX_VALUE_CHARS] | None = None,
    ) -> None:
        """Text (and flags) added to the end of every prompt of yours; a prompt's own flags win."""
        user = interaction.user.id
        text = check_value("The suffix", value or "")
        if text:
            try:
                await self.bot.jobs.check_preference(user, text, shortcuts=True)
            except ParamError as error:
                raise ParamError(f"The suffix was not saved: in a prompt, it would fail. {error}") from None
        await self.bot.store.set_prefer_suffix(user, text)
        answer = (
            f"Saved: `{short(text, 300)}` is added to every /imagine of yours (flags you type win)."
            if text
            else "Your suffix is removed."
        )
        await interaction.response.send_message(answer, ephemeral=True)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Prefer(bot))
