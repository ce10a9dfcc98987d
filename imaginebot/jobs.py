"""The job service: the one owner of a job's life, from a /imagine or a button to the message that shows it.

    cogs (Discord I/O) → JobService → Executor (fair queue, GPU workers) → engine
                          ↓ Store (jobs, quota)      events ↩
                          ↓ Reply: the delivery port (imaginebot.delivery), implemented by the cogs

The service derives what a button asks for (U/V/🔄/Vary/Retry), reserves the quota, submits the job,
follows its events, keeps the store in step, and hands each state to the job's ``Reply``. It knows no
discord.py: the tests drive it with a fake ``Reply``.

A job's life: ``queued → running → done → delivered``. Failed, cancelled and interrupted jobs are delivered
too, so delivery is its own column next to the status (``Delivery``): ``pending`` once the job has ended,
then ``delivered``, ``gone`` (the message was deleted: nobody is waiting) or ``expired``. How progress and
final states are sent is ``imaginebot.delivery``'s business. At start, ``resume()`` queues again the jobs
the last run left queued or running and delivers the ones it finished but could not deliver.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from PIL import Image, ImageOps

from imaginebot import edits
from imaginebot.delivery import (
    DeliveryPolicy,
    JobView,
    LatestOnly,
    Reply,
    Waiting,
    Working,
    deliver_final,
)
from imaginebot.engine.api import GenerateResult, GenerateSpec
from imaginebot.engine.canvas import Direction
from imaginebot.engine.grid import make_grid
from imaginebot.errors import Forbidden, ImagineError, ParamError, QueueFull
from imaginebot.executor import (
    UNEXPECTED_ERROR,
    Cancelled,
    Done,
    Executor,
    Failed,
    Interrupted,
    JobHandle,
    JobRequest,
    Progress,
    Queued,
    QueueSnapshot,
    Started,
)
from imaginebot.params import SEED_RANGE, ImagineRequest, RequestDefaults, parse, parse_aspect
from imaginebot.store import Store
from imaginebot.store_models import Delivery, Edit, EditKind, Job, JobKind, JobStatus, NewJob, UserSettings

log = logging.getLogger(__name__)

VARY_SUBTLE, VARY_STRONG = 0.35, 0.75  # img2img strength of Vary (Subtle) / Vary (Strong)
UPSCALE_SUBTLE, UPSCALE_CREATIVE = 0.2, 0.5  # of Upscale (Subtle) / (Creative): 2x again, refined


class Action(StrEnum):
    """What a job's buttons ask for. The value rides in the button's custom_id: never change one."""

    UPSCALE = "u"  # U1–U4: one tile, enlarged and refined
    VARY = "v"  # V1–V4: four variations of one tile
    REROLL = "r"  # 🔄: the same prompt with new seeds
    RETRY = "a"  # the very same job again, after it failed or was cut off
    CANCEL = "c"  # while queued or running
    # the tools on an upscale
    UPSCALE_SUBTLE = "b"
    UPSCALE_CREATIVE = "k"
    VARY_SUBTLE = "s"
    VARY_STRONG = "t"
    VARY_REGION = "g"  # asks which cells, and the region's prompt
    ZOOM_2X = "z"
    ZOOM_1_5X = "o"
    CUSTOM_ZOOM = "m"  # asks for the prompt and the factor
    MAKE_SQUARE = "q"
    PAN_LEFT = "w"
    PAN_RIGHT = "e"
    PAN_UP = "n"
    PAN_DOWN = "d"


PANS = {
    Action.PAN_LEFT: Direction.LEFT,
    Action.PAN_RIGHT: Direction.RIGHT,
    Action.PAN_UP: Direction.UP,
    Action.PAN_DOWN: Direction.DOWN,
}
ZOOMS = {Action.ZOOM_2X: 2.0, Action.ZOOM_1_5X: 1.5}
# With Remix mode on (/settings), these first open the prompt for editing.
REMIXABLE = frozenset({Action.VARY, Action.REROLL, Action.VARY_SUBTLE, Action.VARY_STRONG, *ZOOMS, *PANS})


class Ask(StrEnum):
    """What the user is asked before a button's job is made (the cogs choose how: a modal, a menu)."""

    NOTHING = "nothing"
    PROMPT = "prompt"  # Remix mode: the prompt, to change
    ZOOM = "zoom"  # Custom Zoom: the prompt and a factor
    REGION = "region"  # Vary (Region): which cells, then the region's prompt


def asks_for(action: Action, remix: bool) -> Ask:
    if action is Action.CUSTOM_ZOOM:
        return Ask.ZOOM
    if action is Action.VARY_REGION:
        return Ask.REGION
    return Ask.PROMPT if remix and action in REMIXABLE else Ask.NOTHING


@dataclass(frozen=True)
class Tweak:
    """What the user gave when asked (``asks_for``): a new prompt (None: the parent's), a zoom factor, the
    cells of a region."""

    prompt: str | None = None
    factor: float | None = None
    cells: tuple[int, ...] = ()


def upscale_tools(job: Job) -> tuple[Action, ...]:
    """Midjourney's tools under an upscale; Make Square only where the picture is not square."""
    square = () if job.spec.width == job.spec.height else (Action.MAKE_SQUARE,)
    return (
        Action.UPSCALE_SUBTLE,
        Action.UPSCALE_CREATIVE,
        Action.VARY_SUBTLE,
        Action.VARY_STRONG,
        Action.VARY_REGION,
        Action.ZOOM_2X,
        Action.ZOOM_1_5X,
        Action.CUSTOM_ZOOM,
        *square,
        *PANS,
    )


def next_actions(job: Job) -> tuple[tuple[Action, int], ...]:
    """The buttons a job's message offers in its state: (action, tile) pairs, tile 0 where none applies."""
    if not job.status.finished:
        return ((Action.CANCEL, 0),)
    if job.status is JobStatus.DONE:
        if job.kind is JobKind.UPSCALE:
            return tuple((action, 0) for action in upscale_tools(job))
        tiles = range(1, len(job.images) + 1)
        return (
            *((Action.UPSCALE, t) for t in tiles),
            *((Action.VARY, t) for t in tiles),
            (Action.REROLL, 0),
        )
    if job.status in (JobStatus.FAILED, JobStatus.INTERRUPTED):
        return ((Action.RETRY, 0),)
    return ()


@dataclass(frozen=True)
class Origin:
    """Who asked, where, and the message that will show the job (it exists before the job does, so that no
    job ever runs with nobody to show it to)."""

    user_id: int
    guild_id: int  # 0 in direct messages
    channel_id: int
    message_id: int


@dataclass(frozen=True)
class Leftovers:
    """What the last run of the bot left behind, read before any new job can arrive."""

    unfinished: tuple[Job, ...]  # queued or running: to queue again
    undelivered: tuple[Job, ...]  # ended, final state not delivered


IMAGE_PROMPT_MAX_BYTES = 10 * 2**20  # Discord's own upload limit for most servers
IMAGE_PROMPT_MAX_PIXELS = 4096 * 4096


def check_image_prompt(size_bytes: int) -> None:
    """Refuse an image prompt too large to download (ParamError)."""
    if size_bytes > IMAGE_PROMPT_MAX_BYTES:
        raise ParamError(
            f"The image is {size_bytes / 2**20:.1f} MiB; an image prompt may be up to "
            f"{IMAGE_PROMPT_MAX_BYTES // 2**20} MiB."
        )


def read_image_prompt(data: bytes) -> Image.Image:
    """An image prompt's picture, or ParamError saying what is wrong with the file."""
    check_image_prompt(len(data))
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > IMAGE_PROMPT_MAX_PIXELS:
                raise ParamError(
                    f"The image is {image.width}×{image.height}; an image prompt may have up to "
                    f"{IMAGE_PROMPT_MAX_PIXELS:,} pixels (4096×4096)."
                )
            image.load()
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as error:
        raise ParamError("That file is not an image the bot can read: attach a PNG, JPEG or WebP.") from error


def defaults_for(base: RequestDefaults, mine: UserSettings) -> RequestDefaults:
    """The bot's defaults with the user's own /settings on top."""
    return RequestDefaults(
        steps=mine.steps or base.steps,
        cfg=base.cfg if mine.cfg is None else mine.cfg,
        sampler=mine.sampler or base.sampler,
        images=mine.images or base.images,
        aspect=parse_aspect(mine.aspect) if mine.aspect else base.aspect,
    )


def new_seed() -> int:
    return random.SystemRandom().randint(*SEED_RANGE)


def utc_now() -> datetime:
    return datetime.now(UTC)


class JobService:
    """``async with JobService(store, executor, ...) as jobs:``; closing it stops following and delivering
    (the store keeps every job's state, and the next start picks them up)."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        *,
        defaults: RequestDefaults,
        native_size: int,
        upscale_max_side: int = 2048,
        preview_min_interval: float = 1.0,
        delivery: DeliveryPolicy | None = None,
        seeds: Callable[[], int] = new_seed,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.executor = executor
        self.defaults = defaults
        self.native_size = native_size
        self.upscale_max_side = upscale_max_side
        self.preview_min_interval = preview_min_interval
        self.delivery = delivery or DeliveryPolicy()
        self._seeds = seeds
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._recipes: dict[Action, Callable[[Job, int, Tweak], Awaitable[_Recipe]]] = {
            Action.UPSCALE: self._upscale,
            Action.VARY: self._vary,
            Action.REROLL: self._reroll,
            Action.RETRY: self._retry,
            Action.UPSCALE_SUBTLE: self._upscale_subtle,
            Action.UPSCALE_CREATIVE: self._upscale_creative,
            Action.VARY_SUBTLE: self._vary_subtle,
            Action.VARY_STRONG: self._vary_strong,
            Action.VARY_REGION: self._vary_region,
            Action.ZOOM_2X: functools.partial(self._zoom, ZOOMS[Action.ZOOM_2X]),
            Action.ZOOM_1_5X: functools.partial(self._zoom, ZOOMS[Action.ZOOM_1_5X]),
            Action.CUSTOM_ZOOM: functools.partial(self._zoom, None),  # the factor the user gave
            Action.MAKE_SQUARE: self._make_square,
            **{action: functools.partial(self._pan, direction) for action, direction in PANS.items()},
        }

    async def __aenter__(self) -> JobService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until every job this service follows is delivered (or given up). For tests and benchmarks."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- new jobs --------------------------------------------------------------------------------------------

    async def user_defaults(self, user_id: int) -> RequestDefaults:
        return defaults_for(self.defaults, await self.store.get_settings(user_id))

    async def remix_on(self, user_id: int) -> bool:
        return (await self.store.get_settings(user_id)).remix

    async def imagine(self, origin: Origin, text: str, reply: Reply, *, image: bytes | None = None) -> Job:
        """A /imagine: parse it with the user's defaults, check it, take the quota, queue it, follow it.
        ``image``: an image prompt's file, which the pictures start from (``--iw`` weighs it).

        Raises ImagineError (ParamError, QuotaExceeded, Forbidden, QueueFull) with the sentence for the user;
        nothing is taken or queued then.
        """
        request = parse(text, await self.user_defaults(origin.user_id))
        if image is None:
            if request.image_weight is not None:
                raise ParamError(
                    "--iw weighs an image prompt: attach an image to /imagine, or leave --iw out."
                )
            recipe = _Recipe(JobKind.IMAGINE, str(request), request.to_spec(self.native_size))
            return await self._launch(origin, recipe, reply)
        picture = await asyncio.to_thread(read_image_prompt, image)
        source = await self.store.save_source(picture)
        spec = request.to_spec(self.native_size, image_prompt=True)
        try:
            return await self._launch(
                origin, _Recipe(JobKind.IMAGINE, str(request), spec, source=source), reply
            )
        except QueueFull:
            raise  # the job was made and cancelled: its picture stays with it (🔁 Retry)
        except ImagineError:
            await self.store.remove_source(source)  # refused before any job was made
            raise

    async def act(
        self, origin: Origin, action: Action, job_id: int, tile: int, reply: Reply, tweak: Tweak | None = None
    ) -> Job:
        """The new job a button on job ``job_id`` asks for (anything but Cancel), with what the user gave
        when asked (``asks_for``)."""
        parent = await self.parent_of(job_id)
        recipe = self._recipes.get(action)
        if recipe is None:
            raise ValueError(f"{action!r} does not make a new job")
        return await self._launch(origin, await recipe(parent, tile, tweak or Tweak()), reply)

    async def parent_of(self, job_id: int) -> Job:
        """The job a button is on; ImagineError when it is gone."""
        parent = await self.store.get_job(job_id)
        if parent is None:
            raise ImagineError("That job is no longer known to the bot; start a new /imagine.")
        return parent

    async def cancel(self, job_id: int, user_id: int, *, moderator: bool) -> bool:
        """Cancel a queued or running job; its message shows it. False when it had already ended.
        Raises Forbidden unless ``user_id`` is the job's author or a moderator."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise ImagineError("That job is no longer known to the bot.")
        if job.user_id != user_id and not moderator:
            raise Forbidden("Only the author of a job or a moderator can cancel it.")
        return self.executor.cancel(job_id)

    async def cancel_user(self, guild_id: int, user_id: int) -> int:
        """Cancel a user's queued and running jobs on one server (a moderator blocked them there).
        Returns how many there were."""
        snapshot = self.executor.queue_snapshot()
        cancelled = 0
        for entry in (*snapshot.running, *snapshot.queued):
            job = await self.store.get_job(entry.job_id) if entry.user_id == user_id else None
            if job is not None and job.guild_id == guild_id:
                cancelled += self.executor.cancel(job.id)
        return cancelled

    def queue(self) -> QueueSnapshot:
        return self.executor.queue_snapshot()

    # -- deriving a job from its parent: one method per action ---------------------------------------------

    async def _upscale(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        index = self._tile(parent, tile)
        seed = parent.spec.seeds[index]
        # The footer's /imagine text makes exactly this tile again: tile 0 of its own seed.
        request = replace(parse(parent.prompt_text), seed=seed, images=1)
        spec = replace(parent.spec, seeds=(seed,), strength=None)
        return _Recipe(JobKind.UPSCALE, str(request), spec, parent.id, index)

    async def _vary(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        index = self._tile(parent, tile)
        request = replace(self._request(parent, tweak), seed=self._seeds(), images=4)
        spec = replace(request.to_spec(self.native_size), width=parent.spec.width, height=parent.spec.height)
        return _Recipe(JobKind.VARIATION, str(request), spec, parent.id, index)

    async def _vary_subtle(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        return await self._vary_upscaled(parent, VARY_SUBTLE, tweak)

    async def _vary_strong(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        return await self._vary_upscaled(parent, VARY_STRONG, tweak)

    async def _vary_upscaled(self, parent: Job, strength: float, tweak: Tweak) -> _Recipe:
        source = await self._upscaled_picture(parent)
        request = replace(self._request(parent, tweak), seed=self._seeds(), images=4)
        spec = replace(
            request.to_spec(self.native_size), width=source.width, height=source.height, strength=strength
        )
        return _Recipe(JobKind.VARIATION, str(request), spec, parent.id, 0)

    async def _upscale_subtle(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        return await self._upscale_again(parent, UPSCALE_SUBTLE)

    async def _upscale_creative(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        return await self._upscale_again(parent, UPSCALE_CREATIVE)

    async def _upscale_again(self, parent: Job, strength: float) -> _Recipe:
        """Upscale (Subtle) / (Creative): the upscale 2x again (tiled past twice the native size), refined
        lightly or boldly."""
        source = await self._upscaled_picture(parent)
        if max(source.size) * 2 > self.upscale_max_side:
            raise ImagineError(
                f"This image is {source.width}×{source.height}; twice that would pass "
                f"{self.upscale_max_side} pixels, the largest upscale this bot makes "
                "(IMAGINEBOT_UPSCALE_MAX_SIDE). Vary, zoom or pan it instead."
            )
        spec = replace(parent.spec, width=source.width, height=source.height, strength=strength)
        return _Recipe(JobKind.UPSCALE, parent.prompt_text, spec, parent.id, 0)

    async def _vary_region(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        return await self._edit(parent, Edit(EditKind.REGION, cells=tuple(sorted(set(tweak.cells)))), tweak)

    async def _zoom(self, factor: float | None, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        factor = factor if factor is not None else tweak.factor
        if factor is None:
            raise ValueError("Custom Zoom needs a factor")
        return await self._edit(parent, Edit(EditKind.ZOOM, factor=factor), tweak)

    async def _pan(self, direction: Direction, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        return await self._edit(parent, Edit(EditKind.PAN, direction=direction), tweak)

    async def _make_square(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        return await self._edit(parent, Edit(EditKind.SQUARE), tweak)

    async def _edit(self, parent: Job, edit: Edit, tweak: Tweak) -> _Recipe:
        """Zoom, pan, square or region of an upscale: a grid of four drawn on the edit's canvas."""
        edits.check(edit)
        picture = (await self._upscaled_picture(parent)).size
        request = replace(self._request(parent, tweak), seed=self._seeds(), images=4)
        request = replace(request, aspect=edits.aspect(edit, picture, request.aspect))
        width, height = edits.size(edit, picture, request.aspect, self.native_size)
        spec = replace(request.to_spec(self.native_size), width=width, height=height)
        return _Recipe(JobKind.EDIT, str(request), spec, parent.id, 0, edit)

    async def _reroll(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        if parent.kind is JobKind.EDIT and parent.edit is not None:  # the same edit of the same upscale
            prompt = parent.prompt_text if tweak.prompt is None else tweak.prompt
            upscale = await self.parent_of(parent.parent_id or 0)
            return await self._edit(upscale, parent.edit, replace(tweak, prompt=prompt))
        request = self._request(parent, tweak).with_seed(self._seeds())
        spec = request.to_spec(self.native_size, image_prompt=parent.source is not None)
        return _Recipe(JobKind.REROLL, str(request), spec, parent.id, source=parent.source)  # same image

    def _request(self, parent: Job, tweak: Tweak) -> ImagineRequest:
        """The parent's /imagine, or the one the user remixed it into."""
        return parse(parent.prompt_text if tweak.prompt is None else tweak.prompt, self.defaults)

    async def _upscaled_picture(self, parent: Job) -> Image.Image:
        """The picture of a finished upscale, which the tools under it start from."""
        if parent.kind is not JobKind.UPSCALE:
            raise ImagineError("That tool works on an upscale: press U1–U4 first.")
        self._tile(parent, 1)
        return await self._starting_picture(parent.images[0])

    async def _starting_picture(self, path: str) -> Image.Image:
        """A picture a job starts from (a parent's tile, an image prompt); ImagineError when it is gone."""
        try:
            return await self.store.load_image(path)
        except OSError as error:
            raise ImagineError("The image this job starts from is gone; start a new /imagine.") from error

    async def _retry(self, parent: Job, tile: int, tweak: Tweak) -> _Recipe:
        if parent.status not in (JobStatus.FAILED, JobStatus.INTERRUPTED, JobStatus.CANCELLED):
            raise ImagineError("That job did not fail; 🔄 makes new images from its prompt.")
        return _Recipe(
            parent.kind,
            parent.prompt_text,
            parent.spec,
            parent.parent_id,
            parent.tile_index,
            parent.edit,
            parent.source,
        )

    @staticmethod
    def _tile(parent: Job, tile: int) -> int:
        """The 0-based index of tile ``tile`` (1-based, as on the buttons) of a finished grid."""
        if parent.status is not JobStatus.DONE:
            raise ImagineError("That job has no images yet; wait for it to finish.")
        if not 1 <= tile <= len(parent.images):
            raise ImagineError(f"That grid has {len(parent.images)} images; there is no image {tile}.")
        return tile - 1

    # -- submitting and following ----------------------------------------------------------------------------

    async def _launch(self, origin: Origin, recipe: _Recipe, reply: Reply) -> Job:
        await self._check_words(origin.guild_id, recipe.spec)
        new = NewJob(
            user_id=origin.user_id,
            guild_id=origin.guild_id,
            channel_id=origin.channel_id,
            message_id=origin.message_id,
            kind=recipe.kind,
            prompt_text=recipe.prompt_text,
            spec=recipe.spec,
            parent_id=recipe.parent_id,
            tile_index=recipe.tile_index,
            edit=recipe.edit,
            source=recipe.source,
        )
        job = await self.store.reserve_job(new)  # Forbidden / QuotaExceeded: nothing was taken
        try:
            handle = await self._submit(job)
        except ImagineError as error:  # QueueFull, or the source picture is gone
            # The user is told by the caller, in place of the message: nothing is left to deliver.
            await self.store.finish_job(
                job.id, JobStatus.CANCELLED, error=str(error), delivery=Delivery.DELIVERED
            )
            raise
        self._spawn(self._follow(job, handle, reply), job.id)
        return job

    async def _check_words(self, guild_id: int, spec: GenerateSpec) -> None:
        found = await self.store.find_banned_words(guild_id, f"{spec.prompt} {spec.negative_prompt}")
        if found:
            words = ", ".join(f"'{w}'" for w in found)
            raise ParamError(f"Your prompt uses words this server does not allow: {words}. Leave them out.")

    async def _submit(self, job: Job) -> JobHandle:
        """Queue a stored job. Raises QueueFull, or ImagineError when the picture it starts from is gone."""
        return self.executor.submit(JobRequest(job.id, job.user_id, job.kind, await self._engine_spec(job)))

    async def _engine_spec(self, job: Job) -> GenerateSpec:
        """The one place a stored job becomes what the engine runs: its spec, plus the picture a variation
        or an upscale starts from (its parent's tile)."""
        if job.source is not None:  # an image prompt, cut to the shape asked for
            picture = await self._starting_picture(job.source)
            return replace(job.spec, init_image=ImageOps.fit(picture, (job.spec.width, job.spec.height)))
        if job.kind not in (JobKind.VARIATION, JobKind.UPSCALE, JobKind.EDIT):
            return job.spec
        parent = await self.store.get_job(job.parent_id) if job.parent_id is not None else None
        if parent is None or job.tile_index is None or job.tile_index >= len(parent.images):
            raise ImagineError("The image this job starts from is gone; start a new /imagine.")
        source = await self._starting_picture(parent.images[job.tile_index])
        if job.edit is None:
            return replace(job.spec, init_image=source)
        canvas = edits.make_canvas(job.edit, source, (job.spec.width, job.spec.height))
        return replace(job.spec, init_image=canvas.image, mask_image=canvas.mask)

    def _spawn(self, coro: Coroutine[Any, Any, None], job_id: int) -> None:
        task = asyncio.create_task(coro, name=f"job-{job_id}")
        self._tasks.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("job %s: following or delivering it failed", job_id, exc_info=task.exception())

        task.add_done_callback(finished)

    async def _follow(self, job: Job, handle: JobHandle, reply: Reply) -> None:
        """Keep the store and the message in step with the job's events, then deliver its final state."""
        view = JobView(job, await self._parent(job))
        progress = LatestOnly(
            lambda update: reply.show(view, update),
            self.preview_min_interval,
            on_gone=lambda: self._message_gone(job.id),
        )
        try:
            async for event in handle.events():
                match event:
                    case Queued(position=position, eta_s=eta_s):
                        progress.offer(Waiting(position, eta_s))
                    case Started():
                        await self.store.mark_running(job.id)
                        progress.offer(Working(0, job.spec.num_inference_steps))
                    case Progress(preview=preview):
                        progress.offer(Working(preview.step, preview.total, preview.image))
                    case Done(result=result):
                        job = await self._complete(job, result)
                    case Failed(message=message):
                        job = await self.store.finish_job(job.id, JobStatus.FAILED, error=message)
                    case Cancelled():
                        job = await self.store.finish_job(job.id, JobStatus.CANCELLED)
                    case Interrupted():  # the bot stops; the store says queued/running: resumed at start
                        return
        except Exception:
            # Never leave a job running in the store with nobody following it: fail it (which gives the
            # quota back) and tell the user.
            log.exception("job %s: following it failed; marking it failed", job.id)
            self.executor.cancel(job.id)
            job = await self.store.finish_job(job.id, JobStatus.FAILED, error=UNEXPECTED_ERROR)
        finally:
            await progress.close()  # whatever preview is in flight must not hold up the final state
        if progress.gone:
            await self.store.set_delivery(job.id, Delivery.GONE)
            return
        await self._deliver(job, reply, view.parent)

    def _message_gone(self, job_id: int) -> None:
        log.info("job %s: its message was deleted; cancelling", job_id)
        self.executor.cancel(job_id)

    async def _complete(self, job: Job, result: GenerateResult) -> Job:
        images = list(result.images)
        grid = await asyncio.to_thread(make_grid, images) if len(images) > 1 else None
        return await self.store.complete_job(
            job.id, images, grid=grid, elapsed_s=result.elapsed_s, note=result.note
        )

    async def _parent(self, job: Job) -> Job | None:
        return await self.store.get_job(job.parent_id) if job.parent_id is not None else None

    async def _picture(self, job: Job) -> Image.Image | None:
        path = job.grid or (job.images[0] if job.images else None)
        if job.status is not JobStatus.DONE or path is None:
            return None
        try:
            return await self.store.load_image(path)
        except OSError as error:
            log.warning("job %s: its picture can't be read (%s); delivering the text alone", job.id, error)
            return None

    # -- delivery ------------------------------------------------------------------------------------------

    async def _deliver(self, job: Job, reply: Reply, parent: Job | None = None) -> None:
        """Push the job's final state through to its message, and record how that went."""
        view = JobView(job, parent or await self._parent(job), await self._picture(job))
        delivery, posted = await deliver_final(view, reply, self.delivery, self._clock())
        where = (posted.channel_id, posted.message_id) if posted else None
        await self.store.set_delivery(job.id, delivery, message=where)

    # -- after a restart -----------------------------------------------------------------------------------

    async def leftovers(self) -> Leftovers:
        """Read what the last run left: call before the bot can take new jobs, or they would look the same."""
        return Leftovers(
            tuple(await self.store.unfinished_jobs()), tuple(await self.store.undelivered_jobs())
        )

    async def resume(self, leftovers: Leftovers, reply_for: Callable[[Job], Reply]) -> None:
        """Queue the unfinished jobs again (their quota stays taken) and deliver the undelivered ones."""
        for job in leftovers.unfinished:
            try:
                await self._resume_one(job, reply_for)
            except Exception:  # one bad leftover must not keep the others from their users
                log.exception("job %s: could not be resumed", job.id)
        for job in leftovers.undelivered:
            log.info("job %s: delivering what the last run could not", job.id)
            self._spawn(self._deliver(job, reply_for(job)), job.id)

    async def _resume_one(self, job: Job, reply_for: Callable[[Job], Reply]) -> None:
        if job.message_id is None:  # it never got a message: nobody is waiting for it
            await self.store.finish_job(job.id, JobStatus.INTERRUPTED, delivery=Delivery.GONE)
            return
        await self.store.requeue_job(job.id)
        try:
            handle = await self._submit(job)
        except ImagineError as error:  # QueueFull, a source picture gone
            log.info("job %s: not resumed: %s", job.id, error)
            ended = await self.store.finish_job(job.id, JobStatus.INTERRUPTED, error=str(error))
            self._spawn(self._deliver(ended, reply_for(ended)), job.id)
            return
        log.info("job %s: resumed after a restart", job.id)
        self._spawn(self._follow(job, handle, reply_for(job)), job.id)


@dataclass(frozen=True)
class _Recipe:
    """What a new job will be, before who and where are known."""

    kind: JobKind
    prompt_text: str  # the canonical /imagine text
    spec: GenerateSpec
    parent_id: int | None = None
    tile_index: int | None = None  # 0-based tile of the parent, for V and U
    edit: Edit | None = None
    source: str | None = None  # an image prompt's picture
