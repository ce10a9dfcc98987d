"""Getting a job's states to its user: the delivery port, best-effort progress, and the final state's retries.

The job service (``imaginebot.jobs``) decides *what* to show; a ``Reply`` (implemented by the cogs with
discord.py) shows it. Two kinds of sending, with opposite rules:

- Progress (queue position, previews) is best effort: ``LatestOnly`` keeps only the latest update, sends one
  at a time, at most one per ``min_interval``, and drops whatever is left when the job ends, so it never
  holds up the final state.
- The final state (grid, error, cancellation) goes through ``deliver_final``: retried with exponential
  backoff and full jitter through any number of failures (429s, 5xx answers, timeouts, lost connections)
  until the ``Reply`` has delivered it, the message is gone, or ``give_up_after`` has passed since the job
  ended. The bound is measured from the job's stored end time, so a restart does not reset it.

Nothing here knows Discord: ``Reply`` translates Discord's failures into ``MessageGone`` (the message was
deleted: never retried) and ``DeliveryFailed`` (try again later).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from PIL import Image
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_random_exponential,
)

from imaginebot.store_models import Delivery, Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobView:
    """A job as its message shows it: the job, the job it came from, and its picture once it has one."""

    job: Job
    parent: Job | None = None
    picture: Image.Image | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Waiting:
    position: int  # 1: next to start
    eta_s: float | None = None  # seconds until it starts, roughly; None: not known yet


@dataclass(frozen=True)
class Working:
    step: int  # steps done
    total: int
    preview: Image.Image | None = field(default=None, compare=False, repr=False)


Update = Waiting | Working


@dataclass(frozen=True)
class Posted:
    """Where a final state went when its message could not be edited any more: a new message."""

    channel_id: int
    message_id: int


class MessageGone(Exception):
    """The job's message was deleted (or its channel is gone): nobody is waiting for this job any more."""


class DeliveryFailed(Exception):
    """A send that may work later: rate limited, Discord answering 5xx, a timeout, a lost connection.
    ``str(e)`` says what happened, in one line, for the log; it never holds a secret."""


class Reply(Protocol):
    """The delivery port: one job's message, as the cogs implement it with discord.py."""

    async def show(self, view: JobView, update: Update) -> None:
        """Best effort: show a queue position or a preview. Raises MessageGone if the message was deleted."""
        ...

    async def deliver(self, view: JobView) -> Posted | None:
        """Show the job's final state in its message. Returns where a new message was posted instead when the
        old one could not be edited any more. Raises MessageGone when there is no message to show it in,
        DeliveryFailed (or anything else) when it should be tried again later."""
        ...

    async def withdraw(self, view: JobView) -> None:
        """A moderator took the job's images down: show a notice in its message in their place, without the
        picture and the buttons (or, where the message can't be edited any more, delete it). Raises
        MessageGone when there is no message, DeliveryFailed (or anything else) to be tried again later."""
        ...


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard a final state is pushed through: backoff capped at ``retry_max_s``, each attempt cut off
    after ``attempt_timeout_s``, given up ``give_up_after`` after the job ended."""

    give_up_after: timedelta = timedelta(hours=24)
    retry_max_s: float = 300.0
    retry_base_s: float = 1.0
    attempt_timeout_s: float = 90.0


def _worth_another_try(error: BaseException) -> bool:
    # Exception, not BaseException: a cancelled task (the bot stopping) must stop, not be retried.
    return isinstance(error, Exception) and not isinstance(error, MessageGone)


async def deliver_final(
    view: JobView,
    reply: Reply,
    policy: DeliveryPolicy,
    now: datetime,
    *,
    send: Callable[[JobView], Awaitable[Posted | None]] | None = None,
    since: datetime | None = None,
    on_retry: Callable[[], None] | None = None,
) -> tuple[Delivery, Posted | None]:
    """Push ``view.job``'s final state through ``reply``: (DELIVERED, where a new message was posted if one
    was), (GONE, None) or (EXPIRED, None). Cancelling the caller stops it at once.

    ``send``: another of the reply's methods to push through the same way (``reply.withdraw`` after a
    takedown); ``since``: when the give-up bound starts (default: when the job ended; a moderator's later
    change of what the message shows starts its own); ``on_retry``: called before each retry (the
    operator's count)."""
    job = view.job
    send = send or reply.deliver
    ended = since or job.finished_at or now
    left = (ended + policy.give_up_after - now).total_seconds()

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        what = str(error) if isinstance(error, DeliveryFailed) else f"{type(error).__name__}: {error}"
        log.warning(
            "job %s: delivery attempt %d failed (%s); next try in %.1f s",
            job.id,
            state.attempt_number,
            what,
            wait,
        )
        if state.attempt_number == 1 and not isinstance(error, DeliveryFailed | TimeoutError):
            log.warning("job %s: the delivery port raised", job.id, exc_info=error)
        if on_retry is not None:
            on_retry()

    retrying = AsyncRetrying(
        retry=retry_if_exception(_worth_another_try),
        wait=wait_random_exponential(multiplier=policy.retry_base_s, max=policy.retry_max_s),
        stop=stop_before_delay(max(left, 0.0)),
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                async with asyncio.timeout(policy.attempt_timeout_s):
                    posted = await send(view)
    except MessageGone:
        log.info("job %s: its message is gone; nothing to deliver", job.id)
        return Delivery.GONE, None
    except Exception as error:
        log.warning(
            "job %s: not delivered %s after it ended; giving up (%s)", job.id, policy.give_up_after, error
        )
        return Delivery.EXPIRED, None
    log.info("job %s: delivered%s", job.id, f" as a new message {posted.message_id}" if posted else "")
    return Delivery.DELIVERED, posted


class LatestOnly:
    """Best-effort sending where only the latest update matters: at most one send in flight, at most one per
    ``min_interval``; a newer update replaces one not yet sent. ``close()`` drops whatever is left, the send
    in flight included. ``gone`` is set (and ``on_gone`` called) when a send found the message deleted."""

    def __init__(
        self,
        send: Callable[[Update], Awaitable[None]],
        min_interval: float,
        *,
        on_gone: Callable[[], None],
    ) -> None:
        self._send = send
        self._min_interval = min_interval
        self._on_gone = on_gone
        self._latest: Update | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_sent = float("-inf")
        self.gone = False

    def offer(self, update: Update) -> None:
        if self.gone:
            return
        self._latest = update
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._latest is not None:
            wait = self._last_sent + self._min_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            update, self._latest = self._latest, None
            try:
                await self._send(update)
            except MessageGone:
                self.gone = True
                self._on_gone()
                return
            except Exception as error:  # a preview is not worth a retry: the next one replaces it
                log.debug("a progress update was dropped: %s", error)
            self._last_sent = loop.time()

    async def close(self) -> None:
        self._latest = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
