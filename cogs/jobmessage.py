"""One job's message in Discord: edited in place as the job moves, never faster than Discord allows.

The writer keeps only the latest state (a newer preview replaces an unsent one), waits at least
``min_interval`` between two edits of the message, and lets discord.py sleep through a 429 on its own
time: the GPU thread never waits for any of this. Edits go through the interaction token while it is
young and through the bot token (a plain channel message edit) once it is near its 15-minute end, so a
job that finishes late still reaches the user. A message the user deleted (404) ends the job.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import discord

log = logging.getLogger(__name__)

# Discord's interaction tokens live 15 minutes; switch to the bot token with a margin for slow edits.
TOKEN_LIFETIME = timedelta(minutes=14)
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
INVALID_WEBHOOK_TOKEN = 50027


class MessageGone(Exception):
    """The message was deleted (or its channel is gone): nobody is watching this job any more."""


@dataclass
class Render:
    """What the message should show: text, at most one picture, and the buttons."""

    content: str
    image: bytes | None = None
    filename: str = "image.png"
    view: discord.ui.View | None = None
    final: bool = False  # the last state: the writer stops after sending it


@dataclass
class JobMessage:
    """Edits one message. ``show()`` never blocks; ``run()`` is the writer task."""

    bot: discord.Client
    channel_id: int
    message_id: int
    interaction: discord.Interaction[Any] | None = None
    min_interval: float = 1.0
    clock: Any = time.monotonic
    _latest: Render | None = None
    _dirty: asyncio.Event = field(default_factory=asyncio.Event)
    _last_edit: float = float("-inf")

    def show(self, render: Render) -> None:
        """Replace whatever is waiting to be sent by ``render`` (only the latest state matters)."""
        if self._latest is not None and self._latest.final:
            return  # the final state is never overwritten
        self._latest = render
        self._dirty.set()

    async def run(self) -> None:
        """Send states until the final one is sent. Raises MessageGone if the message was deleted."""
        while True:
            await self._dirty.wait()
            wait = self._last_edit + self.min_interval - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            render = self._latest
            assert render is not None
            await self._edit(render)
            self._last_edit = self.clock()
            if render.final:
                return

    def _token_fresh(self) -> bool:
        if self.interaction is None:
            return False
        return discord.utils.utcnow() - self.interaction.created_at < TOKEN_LIFETIME

    async def _edit(self, render: Render) -> None:
        attachments = (
            [discord.File(io.BytesIO(render.image), filename=render.filename)]
            if render.image is not None
            else []
        )
        kwargs: dict[str, Any] = {"content": render.content, "attachments": attachments, "view": render.view}
        try:
            if self._token_fresh():
                assert self.interaction is not None
                try:
                    await self.interaction.edit_original_response(**kwargs)
                    return
                except discord.HTTPException as error:
                    if error.code not in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK) and error.status != 401:
                        raise
                    log.info(
                        "message %s: interaction token expired early, using the bot token", self.message_id
                    )
                    self.interaction = None
                    if attachments:  # a File is read once: make a fresh one for the second try
                        kwargs["attachments"] = [
                            discord.File(io.BytesIO(render.image or b""), render.filename)
                        ]
            channel = self.bot.get_partial_messageable(self.channel_id)
            await channel.get_partial_message(self.message_id).edit(**kwargs)
        except discord.NotFound as error:
            raise MessageGone(f"message {self.message_id}: {error.text or 'not found'}") from error
