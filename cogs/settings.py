"""/settings (the user's own /imagine defaults), /models, /info (usage and quota) and /queue."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs.common import about, guild_id_of, short
from imaginebot.catalog import Catalog
from imaginebot.engine.api import SAMPLERS
from imaginebot.params import CFG_RANGE, MODELS_LISTED, RequestDefaults, pick_name
from imaginebot.store_models import UserSettings

if TYPE_CHECKING:
    from bot import ImagineBot

STEP_CHOICES = (10, 15, 20, 25, 30, 40, 50)
ASPECT_CHOICES = ("1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16")
CFG_STEP = 0.5
DEFAULT = "default"  # the select option that clears the user's own value


def describe(defaults: RequestDefaults, mine: UserSettings) -> str:
    def mark(own: object) -> str:
        return "" if own is None else " (yours)"

    width, height = defaults.aspect
    model = f"model **{defaults.model}**{mark(mine.model)} · " if defaults.model else ""
    return "\n".join(
        [
            "**Your /imagine defaults** — flags in a prompt always win.",
            f"{model}steps **{defaults.steps}**{mark(mine.steps)} · cfg **{defaults.cfg:g}**{mark(mine.cfg)}"
            f" · aspect **{width}:{height}**{mark(mine.aspect)}"
            f" · sampler **{defaults.sampler}**{mark(mine.sampler)}"
            f" · images **{defaults.images}**{mark(mine.images)}",
            f"Remix mode **{'on' if mine.remix else 'off'}**: "
            + (
                "V, 🔄, Vary, Zoom and Pan first let you change the prompt."
                if mine.remix
                else "buttons act at once."
            ),
            "Mode **Relax**: your jobs cost no quota and start when no fast job waits (--fast for one job)."
            if mine.relax
            else "Mode **Fast**: your jobs count against your daily quota (--relax for one job).",
        ]
    )


def describe_models(catalog: Catalog, yours: str | None) -> str:
    lines = ["**Models** — pick one with `--model name`, or for all your prompts with `/settings model:`"]
    for i, model in enumerate(catalog.models):
        d = model.defaults
        marks = [mark for mark, on in (("default", i == 0), ("yours", model.name == yours)) if on]
        lines.append(
            f"- **{model.name}**{' (' + ', '.join(marks) + ')' if marks else ''}: {model.kind}; "
            f"steps {d.steps} · cfg {d.cfg:g} · sampler {d.sampler}"
        )
    loras = sorted(catalog.loras())
    if loras:
        lines.append("**LoRAs** — add one with `--lora name:0.8` (weights 0–2; more than one allowed): ")
        lines[-1] += ", ".join(f"`{name}`" for name in loras)
    else:
        lines.append("No LoRAs: the bot's operator can put LoRA files in IMAGINEBOT_LORA_DIR.")
    return "\n".join(lines)


class SettingsPanel(discord.ui.View):
    """Selects and buttons that save at once. Ephemeral, so only its user ever sees it."""

    def __init__(self, bot: ImagineBot, user_id: int, mine: UserSettings) -> None:
        super().__init__(timeout=600)
        self.bot, self.user_id, self.mine = bot, user_id, mine
        self._fill()

    def _fill(self) -> None:
        self.clear_items()
        mine = self.mine
        self._select("steps", "Steps", [str(s) for s in STEP_CHOICES], mine.steps, 0)
        self._select("aspect", "Aspect ratio", list(ASPECT_CHOICES), mine.aspect, 1)
        self._select("sampler", "Sampler", list(SAMPLERS), mine.sampler, 2)
        self._select("images", "Images per grid", ["1", "2", "3", "4"], mine.images, 3)
        for label, delta in (("CFG −", -CFG_STEP), ("CFG +", CFG_STEP)):
            button: discord.ui.Button[SettingsPanel] = discord.ui.Button(label=label, row=4)
            button.callback = self._cfg_callback(delta)  # type: ignore[method-assign]
            self.add_item(button)
        remix: discord.ui.Button[SettingsPanel] = discord.ui.Button(
            label=f"Remix mode: {'on' if mine.remix else 'off'}",
            style=discord.ButtonStyle.success if mine.remix else discord.ButtonStyle.secondary,
            row=4,
        )
        remix.callback = self._toggle_remix  # type: ignore[method-assign]
        self.add_item(remix)
        mode: discord.ui.Button[SettingsPanel] = discord.ui.Button(
            label="Relax mode" if mine.relax else "Fast mode",
            style=discord.ButtonStyle.success if mine.relax else discord.ButtonStyle.primary,
            row=4,
        )
        mode.callback = self._toggle_relax  # type: ignore[method-assign]
        self.add_item(mode)
        reset: discord.ui.Button[SettingsPanel] = discord.ui.Button(
            label="Reset all", style=discord.ButtonStyle.danger, row=4
        )
        reset.callback = self._reset  # type: ignore[method-assign]
        self.add_item(reset)

    def _select(self, field: str, name: str, values: list[str], current: object, row: int) -> None:
        options = [discord.SelectOption(label=f"{name}: bot default", value=DEFAULT, default=current is None)]
        options += [
            discord.SelectOption(label=f"{name}: {value}", value=value, default=str(current) == value)
            for value in values
        ]
        select: discord.ui.Select[SettingsPanel] = discord.ui.Select(options=options, row=row)

        async def chosen(interaction: discord.Interaction[Any]) -> None:
            value = select.values[0]
            parsed: Any = None
            if value != DEFAULT:
                parsed = int(value) if field in ("steps", "images") else value
            changes: dict[str, Any] = {field: parsed}
            await self._save(interaction, replace(self.mine, **changes))

        select.callback = chosen  # type: ignore[method-assign]
        self.add_item(select)

    def _cfg_callback(self, delta: float) -> Any:
        async def callback(interaction: discord.Interaction[Any]) -> None:
            base = self.bot.jobs.defaults_of(self.mine).cfg
            cfg = min(CFG_RANGE[1], max(CFG_RANGE[0], base + delta))
            await self._save(interaction, replace(self.mine, cfg=cfg))

        return callback

    async def _toggle_remix(self, interaction: discord.Interaction[Any]) -> None:
        await self._save(interaction, replace(self.mine, remix=not self.mine.remix))

    async def _toggle_relax(self, interaction: discord.Interaction[Any]) -> None:
        if not self.mine.relax and not await self.bot.store.relax_on(guild_id_of(interaction)):
            await interaction.response.send_message(
                "Relax mode is off on this server: your jobs run fast and count against your quota. "
                "A moderator turns relax on with /quota relax on.",
                ephemeral=True,
            )
            return
        await self._save(interaction, replace(self.mine, relax=not self.mine.relax))

    async def _reset(self, interaction: discord.Interaction[Any]) -> None:
        await self._save(interaction, UserSettings())

    async def _save(self, interaction: discord.Interaction[Any], mine: UserSettings) -> None:
        await self.bot.store.save_settings(self.user_id, mine)
        self.mine = mine
        self._fill()
        text = describe(self.bot.jobs.defaults_of(mine), mine)
        await interaction.response.edit_message(content=text, view=self)


class Settings(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="settings")
    @app_commands.describe(model="the model your prompts use without --model (/models lists them)")
    async def settings(self, interaction: discord.Interaction[ImagineBot], model: str | None = None) -> None:
        """Your own defaults for /imagine: model, steps, cfg, aspect, sampler, images, Remix, Fast/Relax."""
        mine = await self.bot.store.get_settings(interaction.user.id)
        if model is not None:
            catalog = self.bot.jobs.catalog
            name = pick_name("model", model.strip(), catalog.names, "model", MODELS_LISTED)
            mine = replace(mine, model=None if name == catalog.default.name else name)
            await self.bot.store.save_settings(interaction.user.id, mine)
        text = describe(self.bot.jobs.defaults_of(mine), mine)
        await interaction.response.send_message(
            text, view=SettingsPanel(self.bot, interaction.user.id, mine), ephemeral=True
        )

    @app_commands.command(name="info")
    async def info(self, interaction: discord.Interaction[ImagineBot]) -> None:
        """Your images today, your quota, and your latest jobs."""
        store, user = self.bot.store, interaction.user.id
        status = await store.quota_status(guild_id_of(interaction), user)
        limit = "no limit" if status.limit is None else f"{status.left} of {status.limit} left"
        guild = guild_id_of(interaction)
        relaxed = await store.relax_images_today(guild, user)
        relax = (
            "on here: once your quota is used up, your jobs run in relax"
            if await store.relax_on(guild)
            else "off here"
        )
        lines = [
            f"**Today:** {status.used} images made, {limit}; "
            f"resets {discord.utils.format_dt(status.resets_at, 'R')}.",
            f"**Relax:** {relaxed} images made in relax today (no quota). Relax mode is {relax}.",
        ]
        queued = [e for e in self.bot.jobs.queue().queued if e.user_id == user]
        if queued:
            nxt = queued[0]
            when = f", starts {about(nxt.eta_s)}" if nxt.eta_s is not None else ""
            lines.append(f"**Waiting:** {len(queued)} job(s), next at position {nxt.position}{when}.")
        jobs = await store.recent_jobs(guild_id_of(interaction), user, limit=5)
        if jobs:
            lines.append("**Latest jobs:**")
            lines += [f"- #{job.id} {job.kind} · {job.status} · {short(job.spec.prompt, 60)}" for job in jobs]
        mine = await store.get_settings(user)
        lines.append(describe(self.bot.jobs.defaults_of(mine), mine))
        await interaction.response.send_message(short("\n".join(lines), 1900), ephemeral=True)

    @app_commands.command(name="models")
    async def models(self, interaction: discord.Interaction[ImagineBot]) -> None:
        """The models and LoRAs this bot has, with each model's defaults."""
        catalog = self.bot.jobs.catalog
        mine = await self.bot.store.get_settings(interaction.user.id)
        await interaction.response.send_message(
            short(describe_models(catalog, mine.model), 1900), ephemeral=True
        )

    @app_commands.command(name="queue")
    async def queue(self, interaction: discord.Interaction[ImagineBot]) -> None:
        """What is being made now and what is waiting."""
        snapshot = self.bot.jobs.queue()
        lines = [
            f"▶️ <@{e.user_id}> {e.kind}: {short(e.prompt, 80)}" + (" · relax" if e.relax else "")
            for e in snapshot.running
        ]
        lines += [
            f"{e.position}. <@{e.user_id}> {e.kind}: {short(e.prompt, 80)}"
            + (" · relax" if e.relax else "")
            + (f" · starts {about(e.eta_s)}" if e.eta_s is not None else "")
            for e in snapshot.queued[:20]
        ]
        if len(snapshot.queued) > 20:
            lines.append(f"… and {len(snapshot.queued) - 20} more.")
        text = "\n".join(lines) if lines else "The queue is empty: /imagine starts at once."
        await interaction.response.send_message(
            short(text, 1900), ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Settings(bot))
