"""The job service: the one owner of a job's life, from a /imagine or a button to the message that shows it.

    cogs (Discord I/O) → JobService → Executor (fair queue, GPU workers) → engine
                          ↓ Store (jobs, quota)      events ↩
                          ↓ Reply: the delivery port (imaginebot.delivery), implemented by the cogs

The service derives what a button asks for (U/V/🔄/Vary/Retry), reserves the quota, submits the job,
follows its events, keeps the store in step, and hands each state to the job's ``Reply``. It knows no
discord.py: the tests drive it with a fake ``Reply``. It also counts what the operator watches (``metrics``:
how jobs end, refusals, deliveries) and holds the images the safety checker flagged for a moderator's review.

A job's life: ``queued → running → done → delivered``. Failed, cancelled and interrupted jobs are delivered
too, so delivery is its own column next to the status (``Delivery``): ``pending`` once the job has ended,
then ``delivered``, ``gone`` (the message was deleted: nobody is waiting) or ``expired``. How progress and
final states are sent is ``imaginebot.delivery``'s business. At start, ``resume()`` queues again the jobs
the last run left queued or running and delivers the ones it finished but could not deliver.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from PIL import Image, ImageOps

from imaginebot import edits
from imaginebot.actions import Action, Recipe, Recipes, Tweak
from imaginebot.catalog import Catalog
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
from imaginebot.engine.grid import make_grid
from imaginebot.errors import Forbidden, ImagineError, ParamError, QueueFull, QuotaExceeded
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
from imaginebot.metrics import Live, Metrics
from imaginebot.params import (
    SEED_RANGE,
    Choices,
    RequestDefaults,
    Speed,
    aspect_of,
    given_flags,
    parse,
    parse_aspect,
)
from imaginebot.prefer import expand_shortcuts
from imaginebot.prompting import Prepared, compose, read_image_prompt, speed_of, split_repeats
from imaginebot.review import Reviews, held_back_picture
from imaginebot.store import Store
from imaginebot.store_gallery import GalleryQueries
from imaginebot.store_models import Delivery, Job, JobKind, JobStatus, NewJob, UserSettings
from imaginebot.takedowns import PURGE_EVERY_S, Takedowns
from imaginebot.work import WorkerStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Who asked, where, and the message that will show the job (it exists before the job does, so that no
    job ever runs with nobody to show it to)."""

    user_id: int
    guild_id: int  # 0 in direct messages
    channel_id: int
    message_id: int
    name: str = ""  # the user's display name there, for the gallery ("": not known)


@dataclass(frozen=True)
class Leftovers:
    """What the last run of the bot left behind, read before any new job can arrive."""

    unfinished: tuple[Job, ...]  # queued or running: to queue again
    undelivered: tuple[Job, ...]  # ended, final state not delivered


def defaults_for(base: RequestDefaults, mine: UserSettings) -> RequestDefaults:
    """A model's defaults with the user's own /settings on top."""
    return RequestDefaults(
        steps=mine.steps or base.steps,
        cfg=base.cfg if mine.cfg is None else mine.cfg,
        sampler=mine.sampler or base.sampler,
        images=mine.images or base.images,
        aspect=parse_aspect(mine.aspect) if mine.aspect else base.aspect,
        model=base.model,
    )


def wants_relax(speed: Speed | None, mine: UserSettings) -> bool:
    """Whether a job asks for relax: its --relax or --fast, else the user's mode in /settings."""
    return mine.relax if speed is None else speed is Speed.RELAX


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
        catalog: Catalog,
        upscale_max_side: int = 2048,
        preview_min_interval: float = 1.0,
        max_jobs: int = 10,
        delivery: DeliveryPolicy | None = None,
        seeds: Callable[[], int] = new_seed,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.executor = executor
        self.catalog = catalog
        self.recipes = Recipes(store, catalog, seeds=seeds, upscale_max_side=upscale_max_side)
        self.preview_min_interval = preview_min_interval
        self.max_jobs = max_jobs  # from one /imagine (permutations × --repeat): IMAGINEBOT_MAX_PERMUTATIONS
        self._seeds = seeds
        self.delivery = delivery or DeliveryPolicy()
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics: Metrics = executor.metrics  # one registry per bot: the executor's
        self.metrics.watch(self._live)
        # Any job's message, once nobody follows the job any more (a takedown, a review changes it): set by
        # the cogs, which know how to reach a message (``reach_messages_with``).
        self.reply_for: Callable[[Job], Reply] | None = None
        self.gallery = GalleryQueries(store)
        self.takedowns = Takedowns(
            store,
            self.gallery,
            delivery=self.delivery,
            clock=clock,
            spawn=self._spawn,
            redeliver=lambda job, reply, since: self._deliver(job, reply, since=since),
        )
        self.reviews = Reviews(
            store,
            show_again=self._show_again,
            take_down=lambda job, by: self.takedowns.take_down(job.id, guild_id=job.guild_id, by=by),
        )
        self._purging: asyncio.Task[None] | None = None

    async def __aenter__(self) -> JobService:
        """Also purges the files of images taken down over a day ago: now, and every hour."""
        self._purging = asyncio.create_task(self.takedowns.purge_every(PURGE_EVERY_S), name="purge")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = list(self._tasks) + ([self._purging] if self._purging else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until every job this service follows is delivered (or given up). For tests and benchmarks."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- new jobs --------------------------------------------------------------------------------------------

    def defaults_of(self, mine: UserSettings) -> RequestDefaults:
        """The defaults of a user with these /settings: their model's, under their own values."""
        return defaults_for(self.catalog.model_or_default(mine.model or "").defaults, mine)

    def choices(self, mine: UserSettings) -> Choices:
        """The models and LoRAs a prompt may name, each model with its defaults under the user's settings."""
        return self.catalog.choices({m.name: defaults_for(m.defaults, mine) for m in self.catalog.models})

    async def remix_on(self, user_id: int) -> bool:
        return (await self.store.get_settings(user_id)).remix

    async def imagine(self, origin: Origin, text: str, reply: Reply, *, image: bytes | None = None) -> Job:
        """A /imagine of one job: ``prepare`` it, then ``launch`` it. A text that makes several jobs is
        refused here (ParamError): the cogs ask the student first (``imaginebot.batches``)."""
        prepared = await self.prepare(origin.user_id, text, image=image)
        if len(prepared.requests) > 1:
            raise ParamError(
                f"This prompt makes {len(prepared.requests)} jobs; they are queued once you say Yes to them."
            )
        return await self.launch(origin, prepared, reply)

    async def prepare(self, user_id: int, text: str, *, image: bytes | None = None) -> Prepared:
        """The jobs a /imagine text makes (``imaginebot.prompting``), parsed with the user's defaults, their
        /prefer shortcuts and suffix; ``image``: an image prompt's file, which the pictures start from
        (``--iw`` weighs it). Raises ParamError naming what is wrong; nothing is taken or queued."""
        mine = await self.store.get_settings(user_id)
        shortcuts = await self.store.prefer_options(user_id)
        texts = compose(text, shortcuts, await self.store.prefer_suffix(user_id), self.max_jobs)
        picture = None if image is None else await asyncio.to_thread(read_image_prompt, image)
        defaults, choices = self.defaults_of(mine), self.choices(mine)
        requests = []
        for prompt in texts:
            request = parse(prompt, defaults, choices=choices)
            given = given_flags(prompt)
            if picture is None and request.image_weight is not None:
                raise ParamError(
                    "--iw weighs an image prompt: attach an image to /imagine, or leave --iw out."
                )
            if picture is not None and "aspect" not in given:  # the picture keeps its own shape
                request = replace(request, aspect=aspect_of(*picture.size))
            requests.append((request, "seed" in given))
        return Prepared(tuple(split_repeats(requests, self._seeds, self.max_jobs)), len(texts), picture)

    async def check_preference(self, user_id: int, text: str, *, shortcuts: bool) -> None:
        """ParamError when a /prefer shortcut's text (``shortcuts`` False: it holds none itself) or suffix
        would not make a valid prompt."""
        mine = await self.store.get_settings(user_id)
        options = await self.store.prefer_options(user_id) if shortcuts else {}
        for prompt in compose(f"x {text}", options, "", self.max_jobs):
            parse(prompt, self.defaults_of(mine), choices=self.choices(mine))

    async def launch(self, origin: Origin, prepared: Prepared, reply: Reply) -> Job:
        """Queue the one job of a prepared /imagine: take the quota, queue it, follow it.

        Raises ImagineError (ParamError, QuotaExceeded, Forbidden, QueueFull) with the sentence for the user;
        nothing is taken or queued then.
        """
        (request,) = prepared.requests
        spec = request.to_spec(self.recipes.native(request), image_prompt=prepared.picture is not None)
        if prepared.picture is None:
            return await self._launch(origin, Recipe(JobKind.IMAGINE, str(request), spec), reply)
        source = await self.store.save_source(prepared.picture)
        try:
            return await self._launch(
                origin, Recipe(JobKind.IMAGINE, str(request), spec, source=source), reply
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
        when asked (``asks_for``): a prompt they edited may use their /prefer shortcuts."""
        tweak = tweak or Tweak()
        if tweak.prompt is not None:
            edited = expand_shortcuts(tweak.prompt, await self.store.prefer_options(origin.user_id))
            tweak = replace(tweak, prompt=edited)
            if "repeat" in given_flags(edited):
                raise ParamError(
                    "--repeat makes several jobs from /imagine; a button makes one: leave it out."
                )
        parent = await self.recipes.parent_of(job_id)
        recipe = await self.recipes.make(action, parent, tile, tweak)
        return await self._launch(origin, recipe, reply)

    async def parent_of(self, job_id: int) -> Job:
        """The job a button is on; ImagineError when it is gone."""
        return await self.recipes.parent_of(job_id)

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

    def workers(self) -> list[WorkerStatus]:
        """The workers and the models each holds (a worker of one plain engine: whichever model is asked)."""
        every = tuple(model.name for model in self.catalog.models)
        return [w if w.models is not None else replace(w, models=every) for w in self.executor.workers()]

    def _live(self) -> Live:
        snapshot = self.queue()
        jobs = Counter(("running", entry.kind.value) for entry in snapshot.running)
        jobs.update(("queued", entry.kind.value) for entry in snapshot.queued)
        return Live(jobs, self.workers())

    # -- moderation: taking an image down (imaginebot.takedowns) -------------------------------------------

    def reach_messages_with(self, reply_for: Callable[[Job], Reply] | None) -> None:
        """How the service reaches any job's message (the cogs' delivery port): for takedowns, their undo
        and reviews."""
        self.reply_for = self.takedowns.reply_for = reply_for

    async def take_down(self, job_id: int, *, guild_id: int, by: int) -> Job:
        """Hide an image from the gallery and its Discord message, on moderator ``by``'s word (the gallery's
        Take down; a flagged image's Remove). Undo with ``restore`` within a day."""
        return await self.takedowns.take_down(job_id, guild_id=guild_id, by=by)

    async def restore(self, job_id: int, *, guild_id: int, by: int) -> Job:
        """Undo a takedown, within a day of it."""
        return await self.takedowns.restore(job_id, guild_id=guild_id, by=by)

    async def remember_name(self, guild_id: int, user_id: int, name: str) -> None:
        """What the gallery calls a user on a server: their display name, as last seen."""
        if name and guild_id:
            await self.gallery.remember(guild_id, user_id, name, self._clock())

    # -- submitting and following ----------------------------------------------------------------------------

    async def _launch(self, origin: Origin, recipe: Recipe, reply: Reply) -> Job:
        await self.check_words(origin.guild_id, recipe.spec)
        await self.remember_name(origin.guild_id, origin.user_id, origin.name)
        mine = await self.store.get_settings(origin.user_id)
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
            relax=wants_relax(speed_of(recipe.prompt_text), mine),
        )
        (job,) = await self.reserve([new])
        try:
            handle = await self._submit(job)
        except ImagineError as error:  # QueueFull, or the source picture is gone
            if isinstance(error, QueueFull):
                self.metrics.refusals.labels("queue_full").inc()
            # The user is told by the caller, in place of the message: nothing is left to deliver.
            await self.store.finish_job(
                job.id, JobStatus.CANCELLED, error=str(error), delivery=Delivery.DELIVERED
            )
            raise
        self.follow(job, handle, reply)
        return job

    async def reserve(self, news: Sequence[NewJob], *, batch: int | None = None) -> list[Job]:
        """Take the quota for the jobs of ``news`` and store them queued, all or none
        (``Store.reserve_jobs``). Raises Forbidden or QuotaExceeded, counted for the operator, when nothing
        was taken."""
        try:
            return await self.store.reserve_jobs(news, batch=batch)
        except (Forbidden, QuotaExceeded) as error:
            self.metrics.refusals.labels("quota" if isinstance(error, QuotaExceeded) else "blocked").inc()
            raise

    async def check_words(self, guild_id: int, spec: GenerateSpec) -> None:
        """ParamError when the prompt or its --no uses a word the server does not allow."""
        found = await self.store.find_banned_words(guild_id, f"{spec.prompt} {spec.negative_prompt}")
        if found:
            self.metrics.refusals.labels("banned_words").inc()
            words = ", ".join(f"'{w}'" for w in found)
            raise ParamError(f"Your prompt uses words this server does not allow: {words}. Leave them out.")

    async def _submit(self, job: Job) -> JobHandle:
        """Queue a stored job. Raises QueueFull, or ImagineError when the picture it starts from is gone."""
        return self.executor.submit(await self.engine_request(job))

    async def engine_request(self, job: Job) -> JobRequest:
        """What the executor runs for a stored job."""
        return JobRequest(job.id, job.user_id, job.kind, await self._engine_spec(job), relax=job.relax)

    async def _engine_spec(self, job: Job) -> GenerateSpec:
        """The one place a stored job becomes what the engine runs: its spec, plus the picture a variation
        or an upscale starts from (its parent's tile)."""
        if job.source is not None:  # an image prompt, cut to the shape asked for
            picture = await self.recipes.starting_picture(job.source)
            return replace(job.spec, init_image=ImageOps.fit(picture, (job.spec.width, job.spec.height)))
        if job.kind not in (JobKind.VARIATION, JobKind.UPSCALE, JobKind.EDIT):
            return job.spec
        parent = await self.store.get_job(job.parent_id) if job.parent_id is not None else None
        if parent is None or job.tile_index is None or job.tile_index >= len(parent.images):
            raise ImagineError("The image this job starts from is gone; start a new /imagine.")
        source = await self.recipes.starting_picture(parent.images[job.tile_index])
        if job.edit is None:
            return replace(job.spec, init_image=source)
        canvas = edits.make_canvas(job.edit, source, (job.spec.width, job.spec.height))
        return replace(job.spec, init_image=canvas.image, mask_image=canvas.mask)

    def follow(self, job: Job, handle: JobHandle, reply: Reply) -> None:
        """Follow a queued job to its delivered end (in a task of this service)."""
        self._spawn(self._follow(job, handle, reply), job.id)

    def deliver_later(self, job: Job, reply: Reply) -> None:
        """Deliver an ended job's final state (in a task of this service)."""
        self._spawn(self._deliver(job, reply), job.id)

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
                        # the steps that will run (an img2img runs fewer than asked), as the previews count
                        progress.offer(Working(0, handle.plan.steps))
                    case Progress(preview=preview):
                        progress.offer(Working(preview.step, preview.total, preview.image))
                    case Done(result=result):
                        job = await self._complete(job, result)
                    case Failed(message=message):
                        job = await self.store.finish_job(job.id, JobStatus.FAILED, error=message)
                    case Cancelled():
                        job = await self.store.finish_job(job.id, JobStatus.CANCELLED)
                    case Interrupted():  # the bot stops; the store says queued/running: resumed at start
                        self.metrics.jobs_finished.labels(job.kind.value, JobStatus.INTERRUPTED.value).inc()
                        return
        except Exception:
            # Never leave a job running in the store with nobody following it: fail it (which gives the
            # quota back) and tell the user.
            log.exception("job %s: following it failed; marking it failed", job.id)
            self.executor.cancel(job.id)
            job = await self.store.finish_job(job.id, JobStatus.FAILED, error=UNEXPECTED_ERROR)
        finally:
            await progress.close()  # whatever preview is in flight must not hold up the final state
        self.metrics.jobs_finished.labels(job.kind.value, job.status.value).inc()
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
        self.metrics.flagged_images.inc(len(result.flagged))
        return await self.store.complete_job(
            job.id, images, grid=grid, elapsed_s=result.elapsed_s, note=result.note, flagged=result.flagged
        )

    async def _parent(self, job: Job) -> Job | None:
        return await self.store.get_job(job.parent_id) if job.parent_id is not None else None

    async def _picture(self, job: Job) -> Image.Image | None:
        """What the job's message shows: its grid or image, its held-back tiles blurred; nothing removed."""
        path = job.grid or (job.images[0] if job.images else None)
        if job.status is not JobStatus.DONE or path is None or job.hidden:
            return None
        try:
            if any(job.held_back(tile) for tile in job.flagged):
                tiles = [await self.store.load_image(tile) for tile in job.images]
                return await asyncio.to_thread(held_back_picture, job, tiles)
            return await self.store.load_image(path)
        except OSError as error:
            log.warning("job %s: its picture can't be read (%s); delivering the text alone", job.id, error)
            return None

    # -- delivery ------------------------------------------------------------------------------------------

    async def _deliver(
        self, job: Job, reply: Reply, parent: Job | None = None, *, since: datetime | None = None
    ) -> None:
        """Push the job's final state through to its message, and record how that went. ``since``: when the
        give-up bound starts (default: when the job ended; what a moderator changes later starts its own)."""
        view = JobView(job, parent or await self._parent(job), await self._picture(job))
        delivery, posted = await deliver_final(
            view,
            reply,
            self.delivery,
            self._clock(),
            since=since,
            on_retry=self.metrics.delivery_retries.inc,
        )
        self.metrics.deliveries.labels(delivery.value).inc()
        where = (posted.channel_id, posted.message_id) if posted else None
        await self.store.set_delivery(job.id, delivery, message=where)
        now = await self.store.get_job(job.id)
        if delivery is Delivery.DELIVERED and now is not None and now.hidden:
            await self.takedowns.withdraw_again(now)  # taken down while this was on its way

    # -- a moderator's review of flagged images (``reviews``) ----------------------------------------------

    def _show_again(self, job: Job) -> None:
        """Deliver the job's message anew (what it shows changed), in place of a delivery still going on."""
        if self.reply_for is None:
            log.warning("job %s: no way to reach its message; it shows the old state", job.id)
            return
        for task in list(self._tasks):
            if task.get_name() == f"job-{job.id}":
                task.cancel()  # its first delivery, still retrying: it would show the old state
        self._spawn(self._deliver(job, self.reply_for(job), since=self._clock()), job.id)

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
            self.deliver_later(job, reply_for(job))

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
            self.deliver_later(ended, reply_for(ended))
            return
        log.info("job %s: resumed after a restart", job.id)
        self._spawn(self._follow(job, handle, reply_for(job)), job.id)
