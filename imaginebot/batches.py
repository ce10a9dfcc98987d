"""Several jobs from one /imagine (permutations, ``--repeat``): asked first, then queued all at once.

    ask      the prompts are checked (words, the student's room in the queue, quota or relax) and stored
             as a batch, seeds drawn; the cogs show a Question with Yes/No buttons whose custom_ids carry
             the batch's id, so a Yes still works after a restart of the bot.
    confirm  Yes: the quota is checked and taken for every job in one transaction that also marks the
             batch answered (a second Yes finds it so); each job gets its own message, and they are queued
             together and followed like any other job.
    decline  No: nothing is queued and nothing is spent.

A question not answered within ``ANSWER_WITHIN`` has expired, and says so when clicked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from imaginebot.actions import Recipe
from imaginebot.delivery import DeliveryFailed, MessageGone, Reply
from imaginebot.errors import Forbidden, ImagineError
from imaginebot.jobs import JobService, Origin, utc_now, wants_relax
from imaginebot.params import parse
from imaginebot.prompting import Prepared, speed_of
from imaginebot.store_models import Batch, BatchState, Delivery, Job, JobKind, JobStatus, NewJob

ANSWER_WITHIN = timedelta(hours=1)
# Opens a job's message once it is queued: the message's id, and the Reply that shows the job there.
OpenMessage = Callable[[Job], Awaitable[tuple[int, Reply]]]


@dataclass(frozen=True)
class Question:
    """What the student is asked before a batch is queued."""

    batch_id: int
    prompts: tuple[str, ...]  # the canonical prompt of each job
    images: int
    permutations: int  # how many prompts the braces made (the rest is --repeat)
    relax_jobs: int  # of them in relax: asked for, or all of them when the quota can't cover them

    @property
    def jobs(self) -> int:
        return len(self.prompts)


class Batches:
    """The batches of one job service."""

    def __init__(
        self,
        jobs: JobService,
        *,
        answer_within: timedelta = ANSWER_WITHIN,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.jobs = jobs
        self.answer_within = answer_within
        self._clock = clock

    async def ask(self, origin: Origin, prepared: Prepared) -> Question:
        """Store a prepared /imagine of several jobs to be confirmed. Raises ImagineError (words, a full
        queue, no quota and no relax) with the sentence for the user: nothing is asked then."""
        jobs, store = self.jobs, self.jobs.store
        await jobs.remember_name(origin.guild_id, origin.user_id, origin.name)
        for request in prepared.requests:
            await jobs.check_words(origin.guild_id, request.to_spec(jobs.recipes.native(request)))
        jobs.executor.check_room(origin.user_id)
        mine = await store.get_settings(origin.user_id)
        relax = [wants_relax(request.speed, mine) for request in prepared.requests]
        fast = sum(r.images for r, slow in zip(prepared.requests, relax, strict=True) if not slow)
        out_of_quota = await store.check_reservation(origin.guild_id, origin.user_id, fast, relax=any(relax))
        source = None if prepared.picture is None else await store.save_source(prepared.picture)
        prompts = tuple(str(request) for request in prepared.requests)
        batch = await store.add_batch(origin.user_id, origin.guild_id, origin.channel_id, prompts, source)
        return Question(
            batch.id,
            prompts,
            prepared.images,
            prepared.prompts,
            len(relax) if out_of_quota else sum(relax),
        )

    async def decline(self, batch_id: int, user_id: int) -> None:
        """No: the batch is closed, its image prompt's picture forgotten. ImagineError when it can't be
        (someone else's, answered, expired)."""
        batch = await self._asked(batch_id, user_id)
        if await self.jobs.store.decline_batch(batch.id) and batch.source is not None:
            await self.jobs.store.remove_source(batch.source)

    async def confirm(self, batch_id: int, user_id: int, open_message: OpenMessage) -> list[Job]:
        """Yes: reserve, queue and follow every job of the batch, all or none (``launch_all``)."""
        batch = await self._asked(batch_id, user_id)
        jobs = self.jobs
        mine = await jobs.store.get_settings(user_id)
        recipes = []
        for text in batch.texts:  # canonical prompts: every flag is there, seeds included
            request = parse(text, jobs.defaults_of(mine), choices=jobs.choices(mine))
            spec = request.to_spec(jobs.recipes.native(request), image_prompt=batch.source is not None)
            recipes.append(Recipe(JobKind.IMAGINE, str(request), spec, source=batch.source))
        origin = Origin(batch.user_id, batch.guild_id, batch.channel_id, 0)
        return await self.launch_all(origin, recipes, open_message, batch=batch.id)

    async def launch_all(
        self,
        origin: Origin,
        recipes: Sequence[Recipe],
        open_message: OpenMessage,
        *,
        batch: int | None = None,
    ) -> list[Job]:
        """Several jobs of one user, all or none: the quota is checked and taken for all of them in one
        transaction (which also marks ``batch`` answered); each job gets its message (``open_message``), then
        they are queued together (``Executor.submit_batch``) and followed. ``origin.message_id`` is not used.

        Raises ImagineError with the sentence for the user when nothing was taken. Should Discord refuse a
        message midway, the jobs without one are cancelled (their images given back), the others go on, and
        ImagineError says so.
        """
        jobs, store, executor = self.jobs, self.jobs.store, self.jobs.executor
        for recipe in recipes:
            await jobs.check_words(origin.guild_id, recipe.spec)
        executor.check_room(origin.user_id)  # QueueFull before anything is taken
        mine = await store.get_settings(origin.user_id)
        news = [
            NewJob(
                origin.user_id,
                origin.guild_id,
                origin.channel_id,
                None,  # each job's message comes once its quota is taken
                recipe.kind,
                recipe.prompt_text,
                recipe.spec,
                recipe.parent_id,
                recipe.tile_index,
                recipe.edit,
                recipe.source,
                relax=wants_relax(speed_of(recipe.prompt_text), mine),
            )
            for recipe in recipes
        ]
        reserved = await jobs.reserve(news, batch=batch)  # all or none
        shown: list[tuple[Job, Reply]] = []
        refused: DeliveryFailed | MessageGone | None = None
        for job in reserved:
            try:
                message_id, reply = await open_message(job)
            except (DeliveryFailed, MessageGone) as error:
                refused = error
                break
            await store.attach_message(job.id, message_id)
            shown.append((replace(job, message_id=message_id), reply))
        for job in reserved[len(shown) :]:  # no message: nobody would see them
            await store.finish_job(job.id, JobStatus.CANCELLED, delivery=Delivery.GONE)
        try:
            requests = [await jobs.engine_request(job) for job, _ in shown]
            handles = executor.submit_batch(requests) if requests else []
        except ImagineError as error:  # the queue filled up meanwhile, a model no worker holds
            for job, reply in shown:  # their messages say so
                ended = await store.finish_job(job.id, JobStatus.CANCELLED, error=str(error))
                jobs.deliver_later(ended, reply)
            raise
        for (job, reply), handle in zip(shown, handles, strict=True):
            jobs.follow(job, handle, reply)
        if refused is not None:
            raise ImagineError(
                f"Discord did not take the jobs' messages ({refused}), so {len(shown)} of {len(reserved)} "
                "jobs were queued; the others were cancelled and their images given back."
            )
        return [job for job, _ in shown]

    async def _asked(self, batch_id: int, user_id: int) -> Batch:
        """The batch, still waiting for its answer from ``user_id``; ImagineError saying why not."""
        batch = await self.jobs.store.get_batch(batch_id)
        if batch is None:
            raise ImagineError("That question is no longer known to the bot; send the /imagine again.")
        if batch.user_id != user_id:
            raise Forbidden("That question is someone else's: only who sent the /imagine can answer it.")
        if batch.state is BatchState.QUEUED:
            raise ImagineError("You said Yes to that one already: its jobs are queued.")
        if batch.state is BatchState.DECLINED:
            raise ImagineError("You said No to that one: nothing was queued. Send the /imagine again.")
        if self._clock() - batch.created_at > self.answer_within:
            if batch.source is not None:  # nobody will use it now
                await self.jobs.store.remove_source(batch.source)
            raise ImagineError(
                f"That question expired: it was asked more than {_duration(self.answer_within)} ago, and "
                "nothing was queued. Send the /imagine again."
            )
        return batch


def _duration(span: timedelta) -> str:
    minutes = round(span.total_seconds() / 60)
    if minutes % 60:
        return f"{minutes} minutes"
    return "an hour" if minutes == 60 else f"{minutes // 60} hours"
