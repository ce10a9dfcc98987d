"""Every grid reaches its user: the real bot against the local Discord's faults.

A run of 429s longer than discord.py's own retries, an outage of 5xx answers through a job, a gateway drop, a
deleted message, and a message that can no longer be edited (a new one in the channel, or a direct message).
The bot process killed between done and delivered is in tests/test_bot_process.py.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest
from test_imagine import TIMEOUT, is_grid, job_id_of

from imaginebot.store_models import Delivery, Job, JobStatus

BotFactory = Any  # tests/cogs/conftest.py: bot_factory(**settings) -> RunningBot
FAST_RETRIES = {"delivery_retry_max": 0.5}


async def job_of(running: Any, interaction: Any, mock: Any) -> Job:
    message = await mock.wait_for_response(interaction, lambda m: bool(m.custom_ids), timeout=TIMEOUT)
    job = await running.store.get_job(job_id_of(message))
    assert job is not None
    return job


async def until(running: Any, job_id: int, check: Any, timeout: float = TIMEOUT) -> Job:  # noqa: ASYNC109
    for _ in range(int(timeout / 0.05)):
        job = await running.store.get_job(job_id)
        if job is not None and check(job):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never got there: {job}")


async def test_a_run_of_25_rate_limits_does_not_lose_the_grid(
    mock_discord: Any, bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    running = await bot_factory(preview_every=100, **FAST_RETRIES)  # no previews to soak up the 429s
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a red circle --steps 30"}, user=mock_discord.alice
    )
    job = await job_of(running, interaction, mock_discord)
    # 25 answers of 429 in a row on the interaction webhook: discord.py gives up after 5 of them, five times
    mock_discord.fail_next(25, 429, scope="webhook")
    grid = await mock_discord.wait_for_message(
        lambda m: m.interaction is interaction and is_grid(m), timeout=TIMEOUT
    )
    assert grid.attachments
    assert len(mock_discord.requests(status=429, injected=True)) == 25
    delivered = await until(running, job.id, lambda j: j.delivery is Delivery.DELIVERED)
    assert delivered.status is JobStatus.DONE
    retried = [r for r in caplog.records if r.name == "imaginebot.delivery" and "attempt" in r.message]
    assert len(retried) >= 3, "the grid itself went through several runs of discord.py's five tries"


async def test_an_outage_during_a_job_delays_the_grid_but_never_loses_it(
    mock_discord: Any, bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    running = await bot_factory(preview_every=1, **FAST_RETRIES)
    # discord.py itself tries a webhook edit five times over 25 s when Discord answers 5xx; cut each of the
    # bot's attempts at 2 s, so that its own retries (what this test is about) come within seconds
    running.jobs.delivery = replace(running.jobs.delivery, attempt_timeout_s=2.0)
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a blue square --steps 40"}, user=mock_discord.alice
    )
    job = await job_of(running, interaction, mock_discord)
    mock_discord.outage(600, 503)  # every REST call answers 503 until the test ends the outage
    done = await until(running, job.id, lambda j: j.status.finished)
    assert done.status is JobStatus.DONE and done.delivery is Delivery.PENDING  # made, not delivered yet

    caplog.set_level(logging.INFO, logger="imaginebot.delivery")

    def retried() -> list[str]:
        return [
            r.message for r in caplog.records if r.name == "imaginebot.delivery" and "attempt" in r.message
        ]

    for _ in range(int(TIMEOUT / 0.05)):  # the bot's own retries go on through the outage
        if len(retried()) >= 2:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the bot stopped trying; it logged: {retried()}")
    mock_discord.clear_faults()  # Discord is back
    grid = await mock_discord.wait_for_message(
        lambda m: m.interaction is interaction and is_grid(m), timeout=TIMEOUT
    )
    assert mock_discord.requests(status=503, injected=True)
    assert grid.attachments and (await until(running, job.id, lambda j: j.delivery is Delivery.DELIVERED))
    # and the bot carries on
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "after --steps 2"}, user=mock_discord.bob
    )
    await mock_discord.wait_for_response(interaction, is_grid, timeout=TIMEOUT)


async def test_a_gateway_drop_mid_job_loses_nothing(mock_discord: Any, bot_factory: BotFactory) -> None:
    await bot_factory(preview_every=1, **FAST_RETRIES)
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a green star --steps 30"}, user=mock_discord.alice
    )
    await mock_discord.wait_for_response(interaction, lambda m: "🎨" in m.content, timeout=TIMEOUT)
    resumed = asyncio.create_task(mock_discord.wait_for_resume(timeout=TIMEOUT))
    await mock_discord.drop_gateway(1.0)  # the bot is off the gateway, and refused, for a second
    grid = await mock_discord.wait_for_message(
        lambda m: m.interaction is interaction and is_grid(m), timeout=TIMEOUT
    )
    await resumed
    # the buttons of the grid still work once the bot is back
    click = await mock_discord.click(grid, f"ib:v:{job_id_of(grid)}:1", user=mock_discord.alice)
    await mock_discord.wait_for_response(click, is_grid, timeout=TIMEOUT)


async def test_a_message_deleted_mid_job_cancels_it_and_is_marked_gone(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory(preview_every=1)
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a purple star --steps 150"}, user=mock_discord.alice
    )
    reply = await mock_discord.wait_for_response(interaction, lambda m: "🎨" in m.content, timeout=TIMEOUT)
    job_id = job_id_of(reply)
    mock_discord.delete_message(reply)
    job = await until(
        running, job_id, lambda j: j.delivery is not None and j.delivery is not Delivery.PENDING
    )
    assert (job.status, job.delivery) == (JobStatus.CANCELLED, Delivery.GONE)
    assert (await running.store.quota_status(mock_discord.guild_id, mock_discord.alice.id)).used == 0
    # and the bot carries on
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "next --steps 2"}, user=mock_discord.bob
    )
    await mock_discord.wait_for_response(interaction, is_grid, timeout=TIMEOUT)


async def running_job_with_a_dead_token(mock: Any, bot_factory: BotFactory) -> tuple[Any, Any]:
    """A job under way whose interaction token has expired: (the running bot, the job's message)."""
    running = await bot_factory(preview_every=1, **FAST_RETRIES)
    interaction = await mock.send_command("imagine", {"prompt": "an orange moon --steps 20"}, user=mock.alice)
    reply = await mock.wait_for_response(interaction, lambda m: "🎨" in m.content, timeout=TIMEOUT)
    mock.expire_tokens()
    return running, reply


async def test_a_message_that_cannot_be_edited_any_more_gets_a_new_one(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running, reply = await running_job_with_a_dead_token(mock_discord, bot_factory)
    job_id = job_id_of(reply)
    mock_discord.deny_bot(mock_discord.channel, edit=True)  # and the bot may not edit in the channel
    posted = await mock_discord.wait_for_message(lambda m: m.id != reply.id and is_grid(m), timeout=TIMEOUT)
    assert posted.content.startswith(f"<@{mock_discord.alice.id}>")
    assert f"/channels/{mock_discord.guild_id}/{mock_discord.channel.id}/{reply.id}" in posted.content
    assert job_id_of(posted) == job_id
    job = await until(running, job_id, lambda j: j.delivery is Delivery.DELIVERED)
    assert job.message_id == posted.id  # later lineage links point at the message that shows the grid
    assert mock_discord.requests(status=403)


async def test_with_no_way_into_the_channel_the_grid_goes_to_a_direct_message(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running, reply = await running_job_with_a_dead_token(mock_discord, bot_factory)
    job_id = job_id_of(reply)
    mock_discord.deny_bot(mock_discord.channel, edit=True, send=True)  # the bot lost the channel
    dm = await until_dm(mock_discord, mock_discord.alice)
    posted = await mock_discord.wait_for_message(is_grid, channel=dm, timeout=TIMEOUT)
    assert f"/channels/{mock_discord.guild_id}/{mock_discord.channel.id}/{reply.id}" in posted.content
    assert len(mock_discord.messages(dm)) == 1
    job = await until(running, job_id, lambda j: j.delivery is Delivery.DELIVERED)
    assert (job.channel_id, job.message_id) == (dm.id, posted.id)
    # its buttons work from the DM, after the bot got the channel back too
    mock_discord.allow_bot(mock_discord.channel)
    click = await mock_discord.click(posted, f"ib:v:{job_id}:1", user=mock_discord.alice)
    await mock_discord.wait_for_response(click, is_grid, timeout=TIMEOUT)


async def until_dm(mock: Any, user: Any) -> Any:
    for _ in range(int(TIMEOUT / 0.05)):
        dm = mock.dm_channel(user)
        if dm is not None:
            return dm
        await asyncio.sleep(0.05)
    raise AssertionError("the bot never opened a DM")
