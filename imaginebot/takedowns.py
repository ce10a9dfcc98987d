"""Taking an image down: a job-service action, like a button, so that Discord and the gallery agree.

A moderator takes a job down (from the gallery; a flagged image's Remove will do the same): at once it is
hidden from the gallery and its buttons stop working, the action goes into the moderation log, and its
Discord message is replaced by a notice through the delivery port (``Reply.withdraw``), pushed through
Discord's faults like a final state. For a day the takedown can be undone: the job is shown again and its
message gets its picture and buttons back (``Reply.deliver``). Nothing is deleted from disk before that day
has passed; then ``purge`` deletes its files (its images and thumbnail) and the takedown is final. The purge
runs at start and every hour (``purge_every``).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from imaginebot.delivery import DeliveryPolicy, JobView, Reply, deliver_final
from imaginebot.errors import ImagineError
from imaginebot.store import Store
from imaginebot.store_gallery import GalleryQueries, thumbnail_of
from imaginebot.store_models import Job, JobStatus

log = logging.getLogger(__name__)

UNDO_WINDOW = timedelta(days=1)
PURGE_EVERY_S = 3600.0
TAKE_DOWN, RESTORE = "image.take-down", "image.restore"  # their names in the moderation log


class Takedowns:
    """``spawn(coro, job_id)`` runs Discord's side in the background (the service's tasks); ``redeliver(job,
    reply, since)`` pushes a job's final state to its message again; ``reply_for(job)`` is the delivery port
    of any job's message (set by the cogs once Discord is there; None: the messages are left as they are)."""

    def __init__(
        self,
        store: Store,
        gallery: GalleryQueries,
        *,
        delivery: DeliveryPolicy,
        clock: Callable[[], datetime],
        spawn: Callable[[Coroutine[Any, Any, None], int], None],
        redeliver: Callable[[Job, Reply, datetime], Coroutine[Any, Any, None]],
    ) -> None:
        self.store, self.gallery = store, gallery
        self.delivery = delivery
        self._clock = clock
        self._spawn = spawn
        self._redeliver = redeliver
        self.reply_for: Callable[[Job], Reply] | None = None

    async def _shown_job(self, job_id: int, guild_id: int) -> Job:
        job = await self.store.get_job(job_id)
        if job is None or job.guild_id != guild_id or job.status is not JobStatus.DONE:
            raise ImagineError(f"There is no image {job_id} on this server.")
        return job

    async def take_down(self, job_id: int, *, guild_id: int, by: int) -> Job:
        """Hide job ``job_id`` of server ``guild_id`` everywhere, on moderator ``by``'s word. Taking down a
        job already down changes nothing. Raises ImagineError when the server has no such image."""
        job = await self._shown_job(job_id, guild_id)
        hidden = await self.gallery.hide(job_id, by=by, at=self._clock())
        if hidden is None:  # already down
            return job
        await self.store.log_action(guild_id, by, TAKE_DOWN, job.user_id, f"job {job_id}")
        log.info("job %s: taken down by %s", job_id, by)
        self._spawn(self._withdraw(hidden), job_id)
        return hidden

    async def restore(self, job_id: int, *, guild_id: int, by: int) -> Job:
        """Undo a takedown (within a day of it): the job is shown again, and its message shows it again.
        Raises ImagineError when it was not taken down or it is too late."""
        job = await self._shown_job(job_id, guild_id)
        if job.hidden_at is None:
            raise ImagineError(f"Image {job_id} was not taken down.")
        if job.purged_at is not None or self._clock() - job.hidden_at >= UNDO_WINDOW:
            raise ImagineError(
                f"Image {job_id} was taken down more than a day ago: its files are deleted; it can't come "
                "back."
            )
        restored = await self.gallery.unhide(job_id)
        if restored is None:  # undone, or purged, in the meantime
            raise ImagineError(f"Image {job_id} is not taken down any more.")
        await self.store.log_action(guild_id, by, RESTORE, job.user_id, f"job {job_id}")
        log.info("job %s: takedown undone by %s", job_id, by)
        if self.reply_for is not None:
            self._spawn(self._redeliver(restored, self.reply_for(restored), self._clock()), job_id)
        return restored

    async def withdraw_again(self, job: Job) -> None:
        """A job taken down while its final state was being delivered: its message shows the notice again."""
        await self._withdraw(job)

    async def _withdraw(self, job: Job) -> None:
        if self.reply_for is None:
            log.warning("job %s: taken down, but the bot has no Discord here to edit its message", job.id)
            return
        reply = self.reply_for(job)
        now = self._clock()
        outcome, _ = await deliver_final(
            JobView(job), reply, self.delivery, now, send=reply.withdraw, since=now
        )
        log.info("job %s: its message after the takedown: %s", job.id, outcome)

    async def purge(self) -> int:
        """Delete the files of jobs taken down over a day ago; how many jobs."""
        now = self._clock()
        purged = 0
        for job in await self.gallery.due_for_purge(now - UNDO_WINDOW):
            await asyncio.to_thread(self._delete_files, job.id)
            await self.gallery.mark_purged(job.id, now)
            log.info("job %s: taken down over a day ago; its files are deleted", job.id)
            purged += 1
        return purged

    def _delete_files(self, job_id: int) -> None:
        shutil.rmtree(self.store.job_dir(job_id), ignore_errors=True)
        (self.store.data_dir / thumbnail_of(job_id)).unlink(missing_ok=True)

    async def purge_every(self, seconds: float = PURGE_EVERY_S) -> None:
        """Purge now, then every ``seconds``, until cancelled."""
        while True:
            try:
                await self.purge()
            except Exception:  # a full disk or a locked file: try again next time
                log.exception("purging taken-down images failed")
            await asyncio.sleep(seconds)
