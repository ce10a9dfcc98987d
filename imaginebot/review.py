"""Images the safety checker flagged, waiting for a moderator: what their job shows, and the review.

The job service posts the job's picture with its flagged tiles blurred, as a spoiler (hidden behind a
click in Discord), until a moderator releases the job (the clear grid replaces it) or removes it (a
notice replaces it). The files on disk stay the clear tiles: the blur is made from them when shown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from PIL import Image, ImageFilter

from imaginebot.engine.grid import make_grid
from imaginebot.errors import ImagineError
from imaginebot.store import Store
from imaginebot.store_models import Job, Review

log = logging.getLogger(__name__)

# The blur's radius as a share of the picture's longer side: a 512 px tile gets 41 px, past recognising.
BLUR_SHARE = 0.08


def blurred(image: Image.Image) -> Image.Image:
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(max(4.0, BLUR_SHARE * max(image.size))))


def held_back_picture(job: Job, tiles: Sequence[Image.Image]) -> Image.Image:
    """The job's picture (its grid, or its one image) with the tiles it holds back blurred."""
    shown = [blurred(tile) if job.held_back(i) else tile for i, tile in enumerate(tiles)]
    return make_grid(shown) if len(shown) > 1 else shown[0]


def review_note(job: Job) -> str:
    """The line its message adds while it waits (empty when it does not)."""
    if not any(job.held_back(i) for i in job.flagged):
        return ""
    tiles = ", ".join(str(i + 1) for i in job.flagged)
    which = f"Image {tiles} was" if len(job.flagged) == 1 else f"Images {tiles} were"
    if len(job.images) == 1:
        which = "This image was"
    return (
        f"🛡️ {which} flagged by the safety checker: blurred until a moderator reviews "
        f"{'it' if len(job.flagged) == 1 else 'them'}."
    )


class Reviews:
    """The job service's side of a moderator's review (``JobService.reviews``): what waits, and the two
    decisions. ``show_again``: the service's way to show a job's new state in its message; ``take_down``:
    what a removal does besides recording it (the gallery's takedown: hidden everywhere, the message a
    notice, undo for a day)."""

    def __init__(
        self,
        store: Store,
        *,
        show_again: Callable[[Job], None],
        take_down: Callable[[Job, int], Awaitable[Job]],
    ) -> None:
        self.store = store
        self._show_again = show_again
        self._take_down = take_down

    async def waiting(self, guild_id: int) -> list[Job]:
        """The server's jobs whose flagged images wait for a moderator, oldest first."""
        return await self.store.waiting_for_review(guild_id)

    async def release(self, guild_id: int, job_id: int, *, by: int) -> Job:
        """Moderator ``by`` finds the flagged images fine: the message shows the clear grid, and its tiles
        work as any other's. ImagineError when the job is not waiting for a review on this server."""
        job = await self._waiting(guild_id, job_id)
        released = await self.store.set_review(job.id, Review.RELEASED, by=by)
        assert released is not None
        log.info("job %s: released by moderator %s", job.id, by)
        self._show_again(released)
        return released

    async def remove(self, guild_id: int, job_id: int, *, by: int) -> Job:
        """Moderator ``by`` removes the flagged images: the decision is recorded and the job taken down (an
        undo puts it back in the review list)."""
        job = await self._waiting(guild_id, job_id)
        removed = await self.store.set_review(job.id, Review.REMOVED, by=by)
        assert removed is not None
        log.info("job %s: removed by moderator %s", job.id, by)
        return await self._take_down(removed, by)

    async def _waiting(self, guild_id: int, job_id: int) -> Job:
        job = await self.store.get_job(job_id)
        if job is None or job.guild_id != guild_id:
            raise ImagineError(f"There is no job {job_id} on this server.")
        if job.review is not Review.WAITING:
            was = f"it was {job.review.value}" if job.review else "the safety checker flagged nothing"
            raise ImagineError(f"Job {job_id} is not waiting for a review: {was}.")
        return job
