"""/imagine and its buttons: U1–U4, V1–V4, 🔄, Cancel, and Vary (Subtle/Strong) after an upscale.

Thin on purpose: parse, check, reserve the quota, submit to the executor, and render its events into one
message (cogs/jobmessage.py). Buttons are DynamicItems whose custom_id carries the job id, so they work
after the 3-minute view timeout, after the 15-minute token, and after a restart (the job's parameters,
seeds and images are in the store).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs import render
from cogs.common import guild_id_of, is_moderator, tell
from cogs.jobmessage import JobMessage, MessageGone, Render
from imaginebot.engine.api import GenerateSpec
from imaginebot.errors import Forbidden, ImagineError, ParamError, QueueFull
from imaginebot.executor import (
    Cancelled,
    Done,
    Failed,
    Interrupted,
    JobHandle,
    JobRequest,
    Progress,
    Queued,
    Started,
)
from imaginebot.params import SEED_RANGE, ImagineRequest, RequestDefaults, parse
from imaginebot.store_models import Job, JobKind, JobParams, JobStatus, NewJob, UserSettings

if TYPE_CHECKING:
    from PIL import Image

    from bot import ImagineBot

log = logging.getLogger(__name__)

VARY_SUBTLE, VARY_STRONG = 0.35, 0.75
# ib:<action>:<job id>:<tile>; tile 1-4 for U/V (0 where no tile applies). Well under Discord's 100 chars.
CUSTOM_ID = r"ib:(?P<action>[uvrcst]):(?P<job>[0-9]{1,20}):(?P<tile>[0-4])"


def custom_id(action: str, job_id: int, tile: int = 0) -> str:
    return f"ib:{action}:{job_id}:{tile}"


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
    """Every button on a job's message; its state is the custom_id and the store."""

    def __init__(self, action: str, job_id: int, tile: int = 0, *, row: int | None = None) -> None:
        label, emoji, style = render.button_look(action, tile)
        super().__init__(
            discord.ui.Button(
                label=label, emoji=emoji, style=style, row=row, custom_id=custom_id(action, job_id, tile)
            )
        )
        self.action, self.job_id, self.tile = action, job_id, tile

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls, interaction: discord.Interaction[Any], item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(match["action"], int(match["job"]), int(match["tile"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = interaction.client.get_cog(Imagine.__cog_name__)
        assert isinstance(cog, Imagine)
        await cog.on_button(interaction, self.action, self.job_id, self.tile)


def job_view(buttons: list[tuple[str, int, int, int]]) -> discord.ui.View:
    """A view of JobButtons: (action, job id, tile, row) each. timeout=None: it never expires."""
    view = discord.ui.View(timeout=None)
    for action, job_id, tile, row in buttons:
        view.add_item(JobButton(action, job_id, tile, row=row))
    return view


def spec_of(params: JobParams) -> GenerateSpec:
    return GenerateSpec(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=params.width,
        height=params.height,
        num_inference_steps=params.steps,
        guidance_scale=params.cfg,
        sampler=params.sampler,
        seeds=params.seeds,
        strength=params.strength,
    )


def params_of(request: ImagineRequest, native_size: int, seeds: tuple[int, ...] | None = None) -> JobParams:
    width, height = request.size(native_size)
    return JobParams(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        steps=request.steps,
        cfg=request.cfg,
        sampler=request.sampler,
        width=width,
        height=height,
        seeds=seeds if seeds is not None else request.tile_seeds(),
    )


def defaults_for(base: RequestDefaults, mine: UserSettings) -> RequestDefaults:
    """The bot's defaults with the user's own /settings on top."""
    aspect = base.aspect
    if mine.aspect:
        width, height = mine.aspect.split(":")
        aspect = (int(width), int(height))
    return RequestDefaults(
        steps=mine.steps or base.steps,
        cfg=base.cfg if mine.cfg is None else mine.cfg,
        sampler=mine.sampler or base.sampler,
        images=mine.images or base.images,
        aspect=aspect,
    )


def new_seed() -> int:
    return random.SystemRandom().randint(*SEED_RANGE)


class Imagine(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self._tasks: set[asyncio.Task[None]] = set()

    async def cog_load(self) -> None:
        # Read them now, before the gateway connects: once commands arrive, new queued jobs would look
        # the same as the ones the last run left behind.
        leftover = await self.bot.store.unfinished_jobs()
        self._spawn(self.resume_unfinished(leftover))

    async def cog_unload(self) -> None:
        for task in self._tasks:
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- /imagine ----------------------------------------------------------------------------------------

    @app_commands.command(name="imagine")
    @app_commands.describe(prompt="what to draw, with flags like --ar 3:2 --no text --seed 42 --steps 30")
    async def imagine(
        self, interaction: discord.Interaction[ImagineBot], prompt: app_commands.Range[str, 1, 1500]
    ) -> None:
        """Make a grid of images from a prompt."""
        # Defer first, always: Discord wants an answer within 3 s however long the queue or the database.
        await interaction.response.defer(thinking=True)
        try:
            mine = await self.bot.store.get_settings(interaction.user.id)
            request = parse(prompt, defaults_for(self.bot.settings.request_defaults, mine))
            await self._check_words(interaction, request)
            new = self._new_job(
                interaction, JobKind.IMAGINE, request, params_of(request, self.bot.native_size)
            )
            await self._launch(interaction, new, spec_of(new.params))
        except ImagineError as error:
            await self._refuse(interaction, error)

    async def _check_words(self, interaction: discord.Interaction[Any], request: ImagineRequest) -> None:
        text = f"{request.prompt} {request.negative_prompt}"
        found = await self.bot.store.find_banned_words(guild_id_of(interaction), text)
        if found:
            words = ", ".join(f"'{w}'" for w in found)
            raise ParamError(f"Your prompt uses words this server does not allow: {words}. Leave them out.")

    def _new_job(
        self,
        interaction: discord.Interaction[Any],
        kind: JobKind,
        request: ImagineRequest,
        params: JobParams,
        parent: Job | None = None,
        tile_index: int | None = None,
    ) -> NewJob:
        return NewJob(
            user_id=interaction.user.id,
            guild_id=guild_id_of(interaction),
            channel_id=interaction.channel_id or 0,
            kind=kind,
            prompt_text=str(request),
            params=params,
            parent_id=parent.id if parent else None,
            tile_index=tile_index,
        )

    async def _refuse(self, interaction: discord.Interaction[Any], error: ImagineError) -> None:
        """Take back the public "thinking…" message and tell the user alone what was wrong."""
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            log.debug("could not delete the deferred reply", exc_info=True)
        await interaction.followup.send(str(error), ephemeral=True)

    async def _launch(
        self,
        interaction: discord.Interaction[Any],
        new: NewJob,
        spec: GenerateSpec,
        source: Image.Image | None = None,
        parent: Job | None = None,
    ) -> None:
        # The message first: a job must never run with no message to follow it.
        message = await interaction.original_response()
        job = await self.bot.store.reserve_job(new)  # Forbidden / QuotaExceeded: nothing was taken
        await self.bot.store.set_message(job.id, message.channel.id, message.id)
        job = replace(job, channel_id=message.channel.id, message_id=message.id)
        try:
            handle = self.bot.executor.submit(JobRequest(job.id, job.user_id, job.kind, spec, source))
        except QueueFull:
            await self.bot.store.finish_job(job.id, JobStatus.CANCELLED, error="queue full")
            raise
        writer = JobMessage(
            self.bot, message.channel.id, message.id, interaction, self.bot.settings.preview_min_interval
        )
        self._spawn(self.follow(job, handle, writer, parent))

    # -- following a job -----------------------------------------------------------------------------------

    async def follow(self, job: Job, handle: JobHandle, writer: JobMessage, parent: Job | None) -> None:
        """Render the job's events into its message until the job ends (or the message is deleted)."""
        writing = asyncio.create_task(writer.run())

        def message_gone(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and isinstance(task.exception(), MessageGone):
                log.info("job %s: its message was deleted; cancelling", job.id)
                self.bot.executor.cancel(job.id)

        writing.add_done_callback(message_gone)
        context = render.Context(job=job, parent=parent, who=f"<@{job.user_id}>")
        cancel = job_view([("c", job.id, 0, 0)])
        try:
            async for event in handle.events():
                match event:
                    case Queued(position=position):
                        writer.show(Render(render.queued(context, position), view=cancel))
                    case Started():
                        await self.bot.store.mark_running(job.id)
                        writer.show(Render(render.running(context, 0, job.params.steps), view=cancel))
                    case Progress(preview=preview):
                        image = await asyncio.to_thread(render.encode_preview, preview.image)
                        text = render.running(context, preview.step, preview.total)
                        writer.show(Render(text, image, "preview.jpg", view=cancel))
                    case Done(result=result):
                        writer.show(await self._finished(context, result))
                    case Failed(message=message):
                        await self.bot.store.finish_job(job.id, JobStatus.FAILED, error=message)
                        retry = job_view([("r", job.id, 0, 0)])
                        writer.show(Render(render.failed(context, message), view=retry, final=True))
                    case Cancelled():
                        await self.bot.store.finish_job(job.id, JobStatus.CANCELLED)
                        writer.show(Render(render.cancelled(context), view=None, final=True))
                    case Interrupted():
                        # The bot is stopping: the job stays queued in the store and resumes at start.
                        writing.cancel()
                        return
            await writing
        except MessageGone:
            pass  # the executor was told; its Cancelled event gave the quota back
        except Exception:
            log.exception("job %s: following it failed", job.id)
            writing.cancel()

    async def _finished(self, context: render.Context, result: Any) -> Render:
        job = context.job
        grid, encoded = await asyncio.to_thread(render.grid_of, result.images)
        done = await self.bot.store.complete_job(
            job.id, list(result.images), grid=grid, elapsed_s=result.elapsed_s, note=result.note
        )
        context = replace(context, job=done)
        text = render.done(context, result.elapsed_s, result.note)
        if job.kind is JobKind.UPSCALE:
            view = job_view([("s", job.id, 0, 0), ("t", job.id, 0, 0)])
        else:
            count = len(result.images)
            buttons = [("u", job.id, tile, 0) for tile in range(1, count + 1)]
            buttons += [("v", job.id, tile, 1) for tile in range(1, count + 1)]
            buttons.append(("r", job.id, 0, 1))
            view = job_view(buttons)
        return Render(
            text, encoded.data, f"{render.file_stem(job)}{encoded.filename_suffix}", view=view, final=True
        )

    # -- buttons -----------------------------------------------------------------------------------------

    async def on_button(
        self, interaction: discord.Interaction[Any], action: str, job_id: int, tile: int
    ) -> None:
        if action == "c":
            await self._cancel(interaction, job_id)
            return
        # A new job gets a new message: the "thinking…" reply to this click becomes it.
        await interaction.response.defer(thinking=True)
        try:
            parent = await self.bot.store.get_job(job_id)
            if parent is None:
                raise ImagineError("That job is no longer known to the bot; start a new /imagine.")
            new, spec, source = await self.derive(interaction, parent, action, tile)
            await self._check_words(interaction, parse(new.prompt_text))
            await self._launch(interaction, new, spec, source, parent)
        except ImagineError as error:
            await self._refuse(interaction, error)

    async def derive(
        self, interaction: discord.Interaction[Any], parent: Job, action: str, tile: int
    ) -> tuple[NewJob, GenerateSpec, Image.Image | None]:
        """The job a button asks for, made from its parent: U<tile>, V<tile>, 🔄, Vary (Subtle/Strong)."""
        request = parse(parent.prompt_text)
        native = self.bot.native_size
        if action == "r":
            if parent.status is JobStatus.DONE:  # 🔄 on a grid: the same prompt with a new seed
                request = request.with_seed(new_seed())
                new = self._new_job(interaction, JobKind.REROLL, request, params_of(request, native), parent)
                return new, spec_of(new.params), None
            # 🔄 on a failed or interrupted job: the very same job again
            source = (
                await self._source(parent) if parent.kind in (JobKind.VARIATION, JobKind.UPSCALE) else None
            )
            grandparent = await self.bot.store.get_job(parent.parent_id) if parent.parent_id else None
            new = replace(
                self._new_job(
                    interaction, parent.kind, request, parent.params, grandparent, parent.tile_index
                ),
                prompt_text=parent.prompt_text,
            )
            return new, spec_of(new.params), source
        if parent.status is not JobStatus.DONE:
            raise ImagineError("That job has no images yet; wait for it to finish.")
        if action in "uv":
            if not 1 <= tile <= len(parent.images):
                raise ImagineError(f"That grid has {len(parent.images)} images; there is no image {tile}.")
            source = await self.bot.store.load_image(parent.images[tile - 1])
            tile_seed = parent.params.seeds[tile - 1]
            if action == "u":
                params = replace(parent.params, seeds=(tile_seed,))
                new = self._new_job(
                    interaction, JobKind.UPSCALE, request.with_seed(tile_seed), params, parent, tile - 1
                )
                return new, spec_of(params), source
            request = replace(request.with_seed(new_seed()), images=4)
            params = replace(parent.params, seeds=request.tile_seeds())
            new = self._new_job(interaction, JobKind.VARIATION, request, params, parent, tile - 1)
            return new, spec_of(params), source
        # Vary (Subtle) / Vary (Strong) on an upscaled image
        source = await self.bot.store.load_image(parent.images[0])
        request = replace(request.with_seed(new_seed()), images=4)
        width, height = source.size
        strength = VARY_SUBTLE if action == "s" else VARY_STRONG
        params = replace(
            parent.params, seeds=request.tile_seeds(), width=width, height=height, strength=strength
        )
        new = self._new_job(interaction, JobKind.VARIATION, request, params, parent, 0)
        return new, spec_of(params), source

    async def _source(self, job: Job) -> Image.Image:
        """The picture a V or U job starts from: its parent's tile."""
        parent = await self.bot.store.get_job(job.parent_id) if job.parent_id else None
        if parent is None or job.tile_index is None or job.tile_index >= len(parent.images):
            raise ImagineError("The image this job started from is gone; start a new /imagine.")
        return await self.bot.store.load_image(parent.images[job.tile_index])

    async def _cancel(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        job = await self.bot.store.get_job(job_id)
        if job is None or (job.user_id != interaction.user.id and not is_moderator(interaction)):
            await tell(interaction, str(Forbidden("Only the author of a job or a moderator can cancel it.")))
            return
        await interaction.response.defer()  # the message itself shows the outcome
        if not self.bot.executor.cancel(job_id):
            await interaction.followup.send("That job has already finished.", ephemeral=True)

    # -- after a restart ---------------------------------------------------------------------------------

    async def resume_unfinished(self, leftover: list[Job]) -> None:
        """Jobs queued or running when the bot last stopped: queue them again, or say they were cut off."""
        await self.bot.wait_until_ready()
        for job in leftover:
            if job.message_id is None:  # it never got a message: nobody is waiting for it
                await self.bot.store.finish_job(job.id, JobStatus.INTERRUPTED)
                continue
            writer = JobMessage(
                self.bot, job.channel_id, job.message_id, None, self.bot.settings.preview_min_interval
            )
            parent = await self.bot.store.get_job(job.parent_id) if job.parent_id else None
            try:
                source = await self._source(job) if job.kind in (JobKind.VARIATION, JobKind.UPSCALE) else None
                await self.bot.store.requeue_job(job.id)
                handle = self.bot.executor.submit(
                    JobRequest(job.id, job.user_id, job.kind, spec_of(job.params), source)
                )
            except (ImagineError, OSError) as error:  # QueueFull, a source image gone
                log.info("job %s: not resumed: %s", job.id, error)
                await self.bot.store.finish_job(job.id, JobStatus.INTERRUPTED, error=str(error))
                context = render.Context(job=job, parent=parent, who=f"<@{job.user_id}>")
                writer.show(
                    Render(render.interrupted(context), view=job_view([("r", job.id, 0, 0)]), final=True)
                )
                self._spawn(self._write_quietly(writer))
                continue
            log.info("job %s: resumed after a restart", job.id)
            self._spawn(self.follow(job, handle, writer, parent))

    @staticmethod
    async def _write_quietly(writer: JobMessage) -> None:
        try:
            await writer.run()
        except (MessageGone, discord.HTTPException):
            log.info("message %s: could not be updated", writer.message_id)


async def setup(bot: ImagineBot) -> None:
    bot.add_dynamic_items(JobButton)
    await bot.add_cog(Imagine(bot))
