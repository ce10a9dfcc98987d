"""One job's message in Discord: its buttons, and ``DiscordReply``, the job service's delivery port.

Edits go through the interaction token while it is young (14 of its 15 minutes) and through the bot token
(a plain channel message edit) after, so a job that finishes late still reaches its user. Where the message
cannot be edited at all any more (no access to the channel, or Discord's cap on edits of old messages), the
final state is posted as a new message that mentions the user and links to the original: in the channel,
or, where the bot may not post there either, in a direct message to the user. A nonce makes Discord drop a
second copy of that post when a try is repeated after Discord took the first.

Discord's failures are translated for the service here, and only here: a deleted message or channel (404
10008/10003) is ``MessageGone``; 429s, 5xx answers, timeouts and lost connections are ``DeliveryFailed``,
which the service retries for the final state and drops for previews. discord.py itself already sleeps
through a few 429s (and 5xx answers on the interaction webhook) before it gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import discord

from cogs import render
from cogs.common import describe_error
from imaginebot.actions import Action, next_actions
from imaginebot.delivery import DeliveryFailed, JobView, MessageGone, Posted, Update, Working
from imaginebot.store_models import Job

log = logging.getLogger(__name__)

# Discord's interaction tokens live 15 minutes; switch to the bot token with a margin for slow edits.
TOKEN_LIFETIME = timedelta(minutes=14)
UNKNOWN_CHANNEL, UNKNOWN_MESSAGE, UNKNOWN_WEBHOOK = 10003, 10008, 10015
INVALID_WEBHOOK_TOKEN = 50027
OLD_MESSAGE_EDIT_CAP = 30046  # "Maximum number of edits to messages older than 1 hour reached"

# ib:<action>:<job id>:<tile>; tile 1-4 for U/V, 0 where no tile applies. Well under Discord's 100 chars.
CUSTOM_ID = rf"ib:(?P<action>[{''.join(Action)}]):(?P<job>[0-9]{{1,20}}):(?P<tile>[0-4])"


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
    """Every button on a job's message. Its state is its custom_id and the store, so it works after the
    view's timeout, after the 15-minute token and after a restart."""

    def __init__(self, action: Action, job_id: int, tile: int = 0) -> None:
        label, emoji, style = render.button_look(action, tile)
        custom_id = f"ib:{action}:{job_id}:{tile}"
        row = render.button_row(action)
        super().__init__(
            discord.ui.Button(label=label, emoji=emoji, style=style, row=row, custom_id=custom_id)
        )
        self.action, self.job_id, self.tile = action, job_id, tile

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls, interaction: discord.Interaction[Any], item: discord.ui.Button[Any], match: Any, /
    ) -> JobButton:
        return cls(Action(match["action"]), int(match["job"]), int(match["tile"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog: Any = interaction.client.get_cog("Imagine")
        await cog.on_button(interaction, self.action, self.job_id, self.tile)


def job_buttons(job: Job) -> discord.ui.View:
    """The buttons a job's message shows in its state (none: an empty view clears them)."""
    view = discord.ui.View(timeout=None)
    for action, tile in next_actions(job):
        view.add_item(JobButton(action, job.id, tile))
    return view


class _CannotEdit(Exception):
    """Neither token may edit the message any more; a new message has to carry the result."""


class DiscordReply:
    """The delivery port (``imaginebot.jobs.Reply``) for one job's message: the interaction's original
    response, or with ``followup`` one of its followup messages (a confirmed batch's jobs)."""

    def __init__(
        self,
        bot: discord.Client,
        interaction: discord.Interaction[Any] | None = None,
        *,
        followup: bool = False,
    ) -> None:
        self.bot = bot
        self.interaction = interaction
        self.followup = followup

    async def show(self, view: JobView, update: Update) -> None:
        image = None
        if isinstance(update, Working) and update.preview is not None:
            image = await asyncio.to_thread(render.encode_preview, update.preview)
        await self._edit(view.job, render.progress(view, update), image, "preview.jpg")

    async def deliver(self, view: JobView) -> Posted | None:
        job, data, filename = view.job, None, ""
        if view.picture is not None:
            encoded = await asyncio.to_thread(render.encode_picture, view.picture)
            # Discord hides a file named SPOILER_… behind a click (discord.File(spoiler=True) names it so)
            spoiler = "SPOILER_" if render.is_spoiler(job) else ""
            data, filename = encoded.data, f"{spoiler}{render.file_stem(job)}{encoded.filename_suffix}"
        try:
            await self._edit(job, render.final(view), data, filename)
            return None
        except _CannotEdit as error:
            log.info("job %s: %s; posting the result as a new message", job.id, error)
        return await self._post(view, data, filename)

    async def withdraw(self, view: JobView) -> None:
        job = view.job
        try:
            await self._edit(job, render.taken_down(view), None, "")  # no picture, and no buttons: it's down
        except _CannotEdit as error:
            log.info("job %s: %s; deleting the message instead", job.id, error)
            assert job.message_id is not None
            message = self.bot.get_partial_messageable(job.channel_id).get_partial_message(job.message_id)
            with _translated():
                await message.delete()

    async def _post(self, view: JobView, data: bytes | None, filename: str) -> Posted:
        job = view.job

        async def send(channel: discord.abc.Messageable) -> discord.Message:
            return await channel.send(
                render.reposted(view),
                files=_files(data, filename),
                view=job_buttons(job),
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
                nonce=f"ib{job.id}",  # Discord drops a repeat of the same post (at most 25 characters)
            )

        with _translated():
            try:
                message = await send(self.bot.get_partial_messageable(job.channel_id))
            except discord.Forbidden as error:
                log.info(
                    "job %s: may not post in the channel either (%s); sending a DM",
                    job.id,
                    describe_error(error),
                )
                message = await send(await self.bot.create_dm(discord.Object(job.user_id)))
        return Posted(message.channel.id, message.id)

    def _token_fresh(self) -> bool:
        if self.interaction is None:
            return False
        return discord.utils.utcnow() - self.interaction.created_at < TOKEN_LIFETIME

    async def _edit(self, job: Job, content: str, data: bytes | None, filename: str) -> None:
        if job.message_id is None:
            raise MessageGone(f"job {job.id} has no message")
        with _translated():
            if self.interaction is not None and self._token_fresh():
                try:
                    if self.followup:
                        await self.interaction.followup.edit_message(
                            job.message_id,
                            content=content,
                            attachments=_files(data, filename),
                            view=job_buttons(job),
                        )
                    else:
                        await self.interaction.edit_original_response(
                            content=content, attachments=_files(data, filename), view=job_buttons(job)
                        )
                    return
                except discord.HTTPException as error:
                    if error.status != 401 and error.code not in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK):
                        raise
                    log.info("job %s: interaction token expired early, using the bot token", job.id)
                    self.interaction = None
            message = self.bot.get_partial_messageable(job.channel_id).get_partial_message(job.message_id)
            try:
                await message.edit(content=content, attachments=_files(data, filename), view=job_buttons(job))
            except discord.Forbidden as error:
                raise _CannotEdit(
                    f"no access to message {job.message_id}: {describe_error(error)}"
                ) from error
            except discord.HTTPException as error:
                if error.code != OLD_MESSAGE_EDIT_CAP:
                    raise
                raise _CannotEdit(f"message {job.message_id} can't be edited again: {error.text}") from error


async def open_followup(
    bot: discord.Client, interaction: discord.Interaction[Any], job: Job
) -> tuple[int, DiscordReply]:
    """A new public message for a job of a confirmed batch (a followup of the Yes click), with its Cancel
    button; its id and the Reply that shows the job there. DeliveryFailed / MessageGone as for edits."""
    with _translated():
        message = await interaction.followup.send(
            render.queued(job),
            view=job_buttons(job),
            wait=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )
    return message.id, DiscordReply(bot, interaction, followup=True)


def _files(data: bytes | None, filename: str) -> list[discord.File]:
    # A File is read once: every try gets a fresh one.
    return [] if data is None else [discord.File(io.BytesIO(data), filename=filename)]


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Turn discord.py's and aiohttp's failures into the job service's MessageGone and DeliveryFailed."""
    try:
        yield
    except discord.NotFound as error:
        if error.code in (UNKNOWN_MESSAGE, UNKNOWN_CHANNEL):
            raise MessageGone(describe_error(error)) from error
        raise DeliveryFailed(describe_error(error)) from error
    except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as error:
        raise DeliveryFailed(describe_error(error)) from error
