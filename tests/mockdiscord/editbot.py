"""A second small real discord.py bot for the local Discord's tests: what Midjourney-style editing
tools use. Kept apart from mockbot.EchoBot so that bot's synced commands and views stay as its
tests expect them.

- ``/describe`` opens :class:`PromptModal` (a classic row text input, a Label around a text input,
  a Label around a multi-select) and replies with what was submitted.
- ``/remix`` posts a message with an "Edit prompt" button; the button opens the same modal and the
  submission edits that message (callback type 7).
- ``/badmodal title_length`` sends a modal whose title is that long (Discord allows 45).
- ``/upload image`` takes a ``discord.Attachment``, reads it back from the local Discord and replies
  with its size and dimensions.
- ``/styles`` posts a multi-select (up to three of four styles) and records the choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import discord
from discord.ext import commands

from imaginebot.mockdiscord.clients import FAST_BOT_OPTIONS

STYLES = [("Watercolor", "watercolor"), ("Ink", "ink"), ("Oil", "oil"), ("Pixel art", "pixel")]


@dataclass
class Edits:
    """What the editing bot received."""

    submissions: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[tuple[str, int, bytes]] = field(default_factory=list)  # (filename, size, bytes read)
    styles: list[list[str]] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)


class PromptModal(discord.ui.Modal, title="Edit prompt"):
    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label="Prompt", custom_id="edit:prompt", style=discord.TextStyle.paragraph, max_length=200
    )
    negative: discord.ui.Label[PromptModal] = discord.ui.Label(
        text="Leave out",
        description="What the image should not show",
        component=discord.ui.TextInput(
            custom_id="edit:negative", required=False, min_length=3, max_length=50
        ),
    )
    styles: discord.ui.Label[PromptModal] = discord.ui.Label(
        text="Styles",
        component=discord.ui.Select(
            custom_id="edit:styles",
            options=[discord.SelectOption(label=label, value=value) for label, value in STYLES],
            min_values=1,
            max_values=2,
        ),
    )

    def __init__(self, edits: Edits, prompt: str, *, update_message: bool = False) -> None:
        super().__init__(custom_id="edit:modal")
        self.edits = edits
        self.prompt.default = prompt
        self.update_message = update_message

    async def on_submit(self, interaction: discord.Interaction) -> None:
        negative = self.negative.component
        styles = self.styles.component
        assert isinstance(negative, discord.ui.TextInput) and isinstance(styles, discord.ui.Select)
        submitted = {"prompt": self.prompt.value, "negative": negative.value, "styles": list(styles.values)}
        self.edits.submissions.append(submitted)
        without = negative.value or "nothing"
        text = f"remixed: {self.prompt.value} (without {without}; {', '.join(styles.values)})"
        if self.update_message:
            await interaction.response.edit_message(content=text, view=None)
        else:
            await interaction.response.send_message(text)

    # discord.ui.Modal.on_error has this signature; mypy compares it with BaseView's
    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:  # type: ignore[override]
        self.edits.errors.append(error)


class RemixView(discord.ui.View):
    def __init__(self, edits: Edits) -> None:
        super().__init__(timeout=None)
        self.edits = edits

    @discord.ui.button(label="Edit prompt", custom_id="edit:open", style=discord.ButtonStyle.primary)
    async def open(self, interaction: discord.Interaction, button: discord.ui.Button[RemixView]) -> None:
        content = interaction.message.content if interaction.message else ""
        await interaction.response.send_modal(PromptModal(self.edits, content, update_message=True))


class StylesView(discord.ui.View):
    def __init__(self, edits: Edits) -> None:
        super().__init__(timeout=None)
        self.edits = edits

    @discord.ui.select(
        custom_id="edit:pick",
        placeholder="Styles",
        min_values=1,
        max_values=3,
        options=[discord.SelectOption(label=label, value=value) for label, value in STYLES],
    )
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[StylesView]) -> None:
        self.edits.styles.append(list(select.values))
        await interaction.response.send_message(f"styles: {', '.join(select.values)}", ephemeral=True)


class EditBot(commands.Bot):
    def __init__(self, **options: Any) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), **FAST_BOT_OPTIONS, **options)
        self.edits = Edits()

        @self.tree.command(description="Describe an image in a form")
        async def describe(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(PromptModal(self.edits, "a red fox"))

        @self.tree.command(description="Post a prompt to edit")
        async def remix(interaction: discord.Interaction, prompt: str) -> None:
            await interaction.response.send_message(prompt, view=RemixView(self.edits))

        @self.tree.command(description="Open a modal with a title of this length")
        async def badmodal(interaction: discord.Interaction, title_length: int) -> None:
            modal = PromptModal(self.edits, "x")
            modal.title = "T" * title_length  # discord.py doesn't check the length; Discord does
            await interaction.response.send_modal(modal)

        @self.tree.command(description="Upload an image")
        async def upload(interaction: discord.Interaction, image: discord.Attachment) -> None:
            data = await image.read()  # from the local Discord's /attachments route
            self.edits.uploads.append((image.filename, image.size, data))
            await interaction.response.send_message(
                f"{image.filename}: {image.size} bytes, {image.width}x{image.height}, read {len(data)}"
            )

        @self.tree.command(description="Pick styles")
        async def styles(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("Pick up to three", view=StylesView(self.edits))

    async def setup_hook(self) -> None:
        self.add_view(RemixView(self.edits))
        self.add_view(StylesView(self.edits))
        await self.tree.sync()

    async def on_error(self, event: str, *args: Any, **kwargs: Any) -> None:
        raise


def app_command_errors(bot: EditBot) -> Any:
    """A tree.on_error that records the original exception (a refused callback: HTTPException)."""

    async def on_app_command_error(interaction: discord.Interaction, error: Exception) -> None:
        bot.edits.errors.append(getattr(error, "original", error))

    return on_app_command_error
