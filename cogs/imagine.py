"""/imagine and the buttons on its messages: Discord input and output only.

Each handler reads the interaction, answers within Discord's 3 s (``defer`` first), and hands the work to the
job service (``imaginebot.jobs``), which owns the job from there: quota, queue, store, and delivery through a
``DiscordReply`` (cogs/jobmessage.py). Our own errors come back as ImagineError and are told to the user
alone; the public "thinking…" message is taken back.

A prompt that makes several jobs (permutations, --repeat) is first asked about (cogs/confirm.py): its Yes
queues them all (``imaginebot.batches``), each in a message of its own, followups of the Yes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs.asks import RegionModal, RegionSelect, RemixModal, ZoomModal, region_menu
from cogs.common import guild_id_of, is_moderator, tell
from cogs.confirm import Answer, BatchButton, question_text, question_view
from cogs.jobmessage import DiscordReply, JobButton, open_followup
from imaginebot.actions import Action, Ask, Tweak, asks_for
from imaginebot.batches import Batches, Question
from imaginebot.errors import Forbidden, ImagineError
from imaginebot.jobs import Leftovers, Origin
from imaginebot.prompting import check_image_prompt

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)


class Imagine(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.jobs = bot.jobs
        self.batches = Batches(bot.jobs)
        self._resuming: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        # Read them now, before the gateway connects: once commands arrive, new jobs would look the same as
        # the ones the last run left behind.
        leftovers = await self.jobs.leftovers()
        # a takedown, its undo and a moderator's review change delivered messages: through the bot token,
        # as after a restart
        self.jobs.reach_messages_with(lambda job: DiscordReply(self.bot))
        self._resuming = asyncio.create_task(self._resume(leftovers))

    async def cog_unload(self) -> None:
        self.jobs.reach_messages_with(None)
        if self._resuming is not None:
            self._resuming.cancel()

    async def _resume(self, leftovers: Leftovers) -> None:
        await self.bot.wait_until_ready()
        await self.jobs.resume(leftovers, lambda job: DiscordReply(self.bot))

    @app_commands.command(name="imagine")
    @app_commands.describe(
        prompt="what to draw, with flags like --ar 3:2 --no text --seed 42; {red, blue}: a job for each",
        image="an image prompt: the pictures start from it (--iw 0-3: how much it counts)",
    )
    async def imagine(
        self,
        interaction: discord.Interaction[ImagineBot],
        prompt: app_commands.Range[str, 1, 1500],
        image: discord.Attachment | None = None,
    ) -> None:
        """Make a grid of images from a prompt (and an image to start from)."""
        # Defer first, always: Discord wants an answer within 3 s however long the queue or the database.
        answered = await interaction.response.defer(thinking=True)
        try:
            picture = None
            if image is not None:
                check_image_prompt(image.size)  # before downloading it
                picture = await image.read()
            prepared = await self.jobs.prepare(interaction.user.id, prompt, image=picture)
            if len(prepared.requests) > 1:
                await self._ask_batch(interaction, await self.batches.ask(_where(interaction), prepared))
                return
            origin = await self._origin(interaction, answered)
            await self.jobs.launch(origin, prepared, DiscordReply(self.bot, interaction))
        except ImagineError as error:
            await self._refuse(interaction, error)
        except discord.HTTPException as error:
            await self._refuse(
                interaction, ImagineError(f"The image could not be read from Discord ({error}).")
            )

    async def _ask_batch(self, interaction: discord.Interaction[Any], question: Question) -> None:
        """Several jobs: the student is asked first, alone (the public "thinking…" message goes)."""
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            log.debug("could not delete the deferred reply", exc_info=True)
        await interaction.followup.send(
            question_text(question), view=question_view(question.batch_id), ephemeral=True
        )

    async def on_batch_answer(
        self, interaction: discord.Interaction[Any], batch_id: int, answer: Answer
    ) -> None:
        """Yes or No to a batch's question; the question itself then says what happened."""
        user = interaction.user.id
        if answer is Answer.NO:
            try:
                await self.batches.decline(batch_id, user)
            except Forbidden as error:
                await tell(interaction, str(error))
                return
            except ImagineError as error:
                await interaction.response.edit_message(content=str(error), view=None)
                return
            await interaction.response.edit_message(
                content="✖️ No jobs were queued, and nothing was spent.", view=None
            )
            return
        asked = interaction.message.content if interaction.message is not None else ""
        # The buttons go at once: a second click can't queue the batch again (the store refuses it too).
        await interaction.response.edit_message(content=f"{asked}\n⏳ Queuing…", view=None)
        try:
            jobs = await self.batches.confirm(
                batch_id, user, lambda job: open_followup(self.bot, interaction, job)
            )
        except ImagineError as error:
            await interaction.edit_original_response(content=f"⚠️ {error}")
            return
        await interaction.edit_original_response(
            content=f"✅ Queued {len(jobs)} jobs; each has its own message below."
        )

    async def on_button(
        self, interaction: discord.Interaction[Any], action: Action, job_id: int, tile: int
    ) -> None:
        if action is Action.CANCEL:
            await self._cancel(interaction, job_id)
            return
        try:
            ask = asks_for(action, remix=await self.jobs.remix_on(interaction.user.id))
            if ask is not Ask.NOTHING:
                await self._ask(interaction, ask, action, job_id, tile)
                return
        except ImagineError as error:
            await tell(interaction, str(error))
            return
        await self.make(interaction, action, job_id, tile)

    async def _ask(
        self, interaction: discord.Interaction[Any], ask: Ask, action: Action, job_id: int, tile: int
    ) -> None:
        """Open the modal or the menu that asks what the job needs (a modal is the answer to the click)."""
        prompt = (await self.jobs.parent_of(job_id)).prompt_text
        match ask:
            case Ask.PROMPT:
                await interaction.response.send_modal(RemixModal(action, job_id, tile, prompt))
            case Ask.ZOOM:
                await interaction.response.send_modal(ZoomModal(job_id, prompt))
            case Ask.REGION:
                text, view = region_menu(job_id)
                await interaction.response.send_message(text, view=view, ephemeral=True)

    async def ask_region_prompt(
        self, interaction: discord.Interaction[Any], job_id: int, cells: tuple[int, ...]
    ) -> None:
        try:
            prompt = (await self.jobs.parent_of(job_id)).prompt_text
        except ImagineError as error:
            await tell(interaction, str(error))
            return
        await interaction.response.send_modal(RegionModal(job_id, cells, prompt))

    async def make(
        self,
        interaction: discord.Interaction[Any],
        action: Action,
        job_id: int,
        tile: int,
        tweak: Tweak | None = None,
    ) -> None:
        """The job a button asks for, with what the user gave when asked."""
        # A new job gets a new message: the "thinking…" reply to this click becomes it.
        answered = await interaction.response.defer(thinking=True)
        try:
            origin = await self._origin(interaction, answered)
            await self.jobs.act(origin, action, job_id, tile, DiscordReply(self.bot, interaction), tweak)
        except ImagineError as error:
            await self._refuse(interaction, error)

    async def _cancel(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        try:
            cancelled = await self.jobs.cancel(
                job_id, interaction.user.id, moderator=is_moderator(interaction)
            )
        except ImagineError as error:
            await tell(interaction, str(error))
            return
        await interaction.response.defer()  # the message itself shows the outcome
        if not cancelled:
            await interaction.followup.send("That job has already finished.", ephemeral=True)

    @staticmethod
    async def _origin(interaction: discord.Interaction[Any], answered: Any) -> Origin:
        """Who asked and where; the deferred reply is the message that will show the job."""
        message_id = getattr(answered, "message_id", None)
        if message_id is None:
            message_id = (await interaction.original_response()).id
        return Origin(
            interaction.user.id,
            guild_id_of(interaction),
            interaction.channel_id or 0,
            message_id,
            name=interaction.user.display_name,
        )

    @staticmethod
    async def _refuse(interaction: discord.Interaction[Any], error: ImagineError) -> None:
        """Take back the public "thinking…" message and tell the user alone what was wrong."""
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            log.debug("could not delete the deferred reply", exc_info=True)
        await interaction.followup.send(str(error), ephemeral=True)


def _where(interaction: discord.Interaction[Any]) -> Origin:
    """Who asked and where, before any message shows a job."""
    user, channel = interaction.user, interaction.channel_id or 0
    return Origin(user.id, guild_id_of(interaction), channel, 0, name=user.display_name)


async def setup(bot: ImagineBot) -> None:
    bot.add_dynamic_items(JobButton, RegionSelect, BatchButton)
    await bot.add_cog(Imagine(bot))
