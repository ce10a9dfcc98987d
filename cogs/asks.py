"""What a button asks before its job is made (``imaginebot.actions.asks_for``): Discord's modals and menus.

- Remix mode: a modal with the prompt to change (V, 🔄, Vary, Zoom, Pan).
- Custom Zoom: a modal with the prompt and the zoom factor (1.0-2.0; ``--ar`` in the prompt is allowed).
- Vary (Region): Discord cannot paint a mask, so an ephemeral menu of the nine cells of a 3×3 grid (pick
  one or more), then a modal with the region's prompt.

The region menu is a DynamicItem (its custom_id carries the job), so it works after a restart; a modal lives
only while its user fills it in, as on Discord, and every one ends in ``Imagine.make`` with a ``Tweak``.
"""

from __future__ import annotations

import math
from typing import Any

import discord

from imaginebot import edits
from imaginebot.actions import Action, Tweak
from imaginebot.errors import ImagineError

PROMPT_CHARS = 1500  # as /imagine's prompt option
REGION_ID = r"ib:region:(?P<job>[0-9]{1,20})"


def _prompt_input(prompt: str, label: str = "Prompt") -> discord.ui.TextInput[Any]:
    return discord.ui.TextInput(
        label=label,
        custom_id="prompt",
        style=discord.TextStyle.paragraph,
        default=prompt[:PROMPT_CHARS],
        min_length=1,
        max_length=PROMPT_CHARS,
    )


class _AskModal(discord.ui.Modal):
    """A modal whose submission makes the button's job."""

    def __init__(self, title: str, action: Action, job_id: int, tile: int) -> None:
        super().__init__(title=title, timeout=900)
        self.action, self.job_id, self.tile = action, job_id, tile

    def tweak(self) -> Tweak:
        raise NotImplementedError

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        cog: Any = interaction.client.get_cog("Imagine")
        try:
            tweak = self.tweak()
        except ImagineError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        await cog.make(interaction, self.action, self.job_id, self.tile, tweak)


class RemixModal(_AskModal):
    """Remix mode: the prompt (flags included) to change before the job is made."""

    def __init__(self, action: Action, job_id: int, tile: int, prompt: str) -> None:
        super().__init__("Remix", action, job_id, tile)
        self.prompt = _prompt_input(prompt, "New prompt")
        self.add_item(self.prompt)

    def tweak(self) -> Tweak:
        return Tweak(prompt=self.prompt.value)


class ZoomModal(_AskModal):
    """Custom Zoom: the prompt (``--ar`` changes the shape) and how far to zoom out."""

    def __init__(self, job_id: int, prompt: str) -> None:
        super().__init__("Custom Zoom", Action.CUSTOM_ZOOM, job_id, 0)
        low, high = edits.ZOOM_RANGE
        self.prompt = _prompt_input(prompt)
        self.factor: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label=f"Zoom out by ({low:g} to {high:g})",
            custom_id="factor",
            default="2",
            min_length=1,
            max_length=8,
        )
        self.add_item(self.prompt)
        self.add_item(self.factor)

    def tweak(self) -> Tweak:
        low, high = edits.ZOOM_RANGE
        try:
            factor = float(self.factor.value.strip().rstrip("xX"))  # "1.5" or "1.5x"
        except ValueError:
            factor = math.nan
        if not math.isfinite(factor):
            allowed = f"a number from {low:g} to {high:g}, like 1.5"
            raise ImagineError(f"The zoom factor must be {allowed}; not '{self.factor.value}'.")
        return Tweak(prompt=self.prompt.value, factor=factor)  # the job service checks the range


class RegionModal(_AskModal):
    """Vary (Region), once the cells are chosen: what to draw there."""

    def __init__(self, job_id: int, cells: tuple[int, ...], prompt: str) -> None:
        super().__init__("Vary (Region)", Action.VARY_REGION, job_id, 0)
        self.cells = cells
        self.prompt = _prompt_input(prompt, "What to draw in the region")
        self.add_item(self.prompt)

    def tweak(self) -> Tweak:
        return Tweak(prompt=self.prompt.value, cells=self.cells)


class RegionSelect(discord.ui.DynamicItem[discord.ui.Select[Any]], template=REGION_ID):
    """The cells of a 3×3 grid over the upscale; choosing opens the region's prompt."""

    def __init__(self, job_id: int) -> None:
        options = [
            discord.SelectOption(label=f"{cell}. {name}", value=str(cell))
            for cell, name in enumerate(edits.CELL_NAMES, start=1)
        ]
        super().__init__(
            discord.ui.Select(
                custom_id=f"ib:region:{job_id}",
                placeholder="The parts of the picture to redraw",
                min_values=1,
                max_values=len(options),
                options=options,
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls, interaction: discord.Interaction[Any], item: discord.ui.Select[Any], match: Any, /
    ) -> RegionSelect:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog: Any = interaction.client.get_cog("Imagine")
        cells = tuple(sorted(int(value) for value in self.item.values))
        await cog.ask_region_prompt(interaction, self.job_id, cells)


def region_menu(job_id: int) -> tuple[str, discord.ui.View]:
    """The ephemeral message that asks which cells to redraw."""
    view = discord.ui.View(timeout=None)
    view.add_item(RegionSelect(job_id))
    grid = "\n".join(
        " · ".join(f"{row * 3 + column + 1}" for column in range(3)) for row in range(3)
    )  # the numbers as they lie over the picture
    text = (
        f"**Vary (Region)** — pick the parts of the picture to redraw (a 3×3 grid over it):\n```\n{grid}\n```"
    )
    return text, view
