"""A small real discord.py bot for the local Discord's tests (the real cogs are tested in tests/cogs).

``/imagine prompt`` defers, edits in a preview image, then the final image with buttons and a
select menu (the image as a spoiler when the prompt says "spoiler"); ``/quota set user images`` is a
moderator subcommand; clicks and selects are recorded.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from imaginebot.mockdiscord.clients import FAST_BOT_OPTIONS


def tiny_png(rgb: tuple[int, int, int], size: int = 4) -> bytes:
    """A valid size×size PNG of one colour, without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


PREVIEW_PNG = tiny_png((200, 200, 200))
FINAL_PNG = tiny_png((220, 40, 40))


@dataclass
class Seen:
    """What the test bot received."""

    commands: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    clicks: list[tuple[str, str]] = field(default_factory=list)  # (custom_id, user name)
    selects: list[tuple[str, list[str]]] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)


class ResultView(discord.ui.View):
    """Persistent-style: a custom_id on every item, no timeout."""

    def __init__(self, seen: Seen) -> None:
        super().__init__(timeout=None)
        self.seen = seen

    @discord.ui.button(label="U1", custom_id="test:u1", style=discord.ButtonStyle.secondary)
    async def upscale(self, interaction: discord.Interaction, button: discord.ui.Button[ResultView]) -> None:
        self.seen.clicks.append(("test:u1", interaction.user.name))
        await interaction.response.send_message(f"upscaling for {interaction.user.name}", ephemeral=True)

    @discord.ui.button(label="🔄", custom_id="test:reroll", style=discord.ButtonStyle.primary)
    async def reroll(self, interaction: discord.Interaction, button: discord.ui.Button[ResultView]) -> None:
        self.seen.clicks.append(("test:reroll", interaction.user.name))
        await interaction.response.edit_message(content=f"rerolled by {interaction.user.name}")

    @discord.ui.select(
        custom_id="test:size",
        options=[
            discord.SelectOption(label="Small", value="s"),
            discord.SelectOption(label="Large", value="l"),
        ],
    )
    async def size(self, interaction: discord.Interaction, select: discord.ui.Select[ResultView]) -> None:
        self.seen.selects.append(("test:size", list(select.values)))
        await interaction.response.defer()


class EchoBot(commands.Bot):
    def __init__(self, guild_id: int, **options: Any) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), **FAST_BOT_OPTIONS, **options)
        self.seen = Seen()
        self.guild_id = guild_id
        self.last_interaction: discord.Interaction | None = None

        @self.tree.command(description="Draw an image")
        async def imagine(interaction: discord.Interaction, prompt: str) -> None:
            self.seen.commands.append(("imagine", {"prompt": prompt}))
            self.last_interaction = interaction
            await interaction.response.defer()
            preview = discord.File(io.BytesIO(PREVIEW_PNG), "preview.png")
            await interaction.edit_original_response(content=f"**{prompt}** (preview)", attachments=[preview])
            # "spoiler" in the prompt: the grid as a spoiler, as the bot posts an image a checker flagged
            final = discord.File(io.BytesIO(FINAL_PNG), "grid.png", spoiler="spoiler" in prompt)
            await interaction.edit_original_response(
                content=f"**{prompt}**", attachments=[final], view=ResultView(self.seen)
            )

        quota = app_commands.Group(
            name="quota", description="Quotas", default_permissions=discord.Permissions(manage_guild=True)
        )

        @quota.command(name="set", description="Set a daily quota")
        async def quota_set(
            interaction: discord.Interaction, user: discord.Member, images: app_commands.Range[int, 0, 100]
        ) -> None:
            self.seen.commands.append(("quota set", {"user": user, "images": images}))
            await interaction.response.send_message(
                f"{user.display_name}: {images} images a day", ephemeral=True
            )

        self.tree.add_command(quota, guild=discord.Object(guild_id))

    async def setup_hook(self) -> None:
        self.add_view(ResultView(self.seen))
        await self.tree.sync()
        await self.tree.sync(guild=discord.Object(self.guild_id))

    async def on_error(self, event: str, *args: Any, **kwargs: Any) -> None:
        raise
