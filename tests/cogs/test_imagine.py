"""/imagine end to end against the local Discord: previews, the grid and its nine buttons, U/V/🔄 lineage,
quotas, moderation, restarts, expired tokens, fairness and deleted messages."""

from __future__ import annotations

from typing import Any

from imaginebot.errors import OutOfMemory
from imaginebot.store_models import JobKind, JobStatus

BotFactory = Any  # tests/cogs/conftest.py: bot_factory(**settings) -> RunningBot

GRID_BUTTONS = (
    [f"ib:u:{{id}}:{t}" for t in range(1, 5)] + [f"ib:v:{{id}}:{t}" for t in range(1, 5)] + ["ib:r:{id}:0"]
)
TIMEOUT = 60
UPSCALE_TOOLS = (
    "Upscale (Subtle)",
    "Upscale (Creative)",
    "Vary (Subtle)",
    "Vary (Strong)",
    "Vary (Region)",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Custom Zoom",
)


def is_grid(message: Any) -> bool:
    return any(cid.startswith("ib:u:") for cid in message.custom_ids) and bool(message.attachments)


def job_id_of(message: Any) -> int:
    return int(next(cid for cid in message.custom_ids if cid.startswith("ib:")).split(":")[2])


async def imagine(mock: Any, user: Any, prompt: str) -> Any:
    interaction = await mock.send_command("imagine", {"prompt": prompt}, user=user)
    return await mock.wait_for_response(interaction, is_grid, timeout=TIMEOUT)


async def refusal(mock: Any, interaction: Any) -> str:
    message = await mock.wait_for_response(interaction, lambda m: m.ephemeral, timeout=TIMEOUT)
    return str(message.content)


async def test_imagine_previews_then_grid_with_nine_buttons(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    grid = await imagine(mock_discord, mock_discord.alice, "a red circle --seed 5 --steps 6")
    job_id = job_id_of(grid)
    assert grid.custom_ids == [cid.format(id=job_id) for cid in GRID_BUTTONS]
    assert len(grid.attachments) == 1 and grid.attachments[0].data[:4] == b"\x89PNG"
    assert "--seed 5" in grid.content and "--steps 6" in grid.content and "<@" in grid.content
    # the reply was edited in place: queued, started, previews (a picture each), then the grid
    assert grid.revisions >= 3
    previews = [files for _content, files in grid.history if any(f.startswith("preview") for f in files)]
    assert previews, grid.history
    job = await running.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.DONE
    assert job.spec.seeds == (5, 6, 7, 8) and len(job.images) == 4
    assert (await running.store.quota_status(mock_discord.guild_id, mock_discord.alice.id)).used == 4


async def test_u_v_and_reroll_derive_from_the_right_tile(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory()
    store = running.store
    grid = await imagine(mock_discord, mock_discord.alice, "a blue square --seed 100 --steps 4")
    parent = job_id_of(grid)

    click = await mock_discord.click(grid, f"ib:u:{parent}:2", user=mock_discord.bob)
    upscaled = await mock_discord.wait_for_response(
        click, lambda m: bool(m.attachments) and "ib:s:" in str(m.custom_ids), timeout=TIMEOUT
    )
    up = await store.get_job(job_id_of(upscaled))
    assert up is not None and up.kind is JobKind.UPSCALE
    assert (up.parent_id, up.tile_index, up.spec.seeds, up.user_id) == (
        parent,
        1,
        (101,),
        mock_discord.bob.id,
    )
    assert "Upscale of image 2" in upscaled.content
    # Midjourney's tools under an upscale, in its rows (a square picture: no Make Square)
    assert upscaled.custom_ids == [f"ib:{action}:{up.id}:0" for action in "bkstgzomwend"]
    assert upscaled.button_labels == [*UPSCALE_TOOLS, "⬅️", "➡️", "⬆️", "⬇️"]

    click = await mock_discord.click(grid, f"ib:v:{parent}:3", user=mock_discord.alice)
    varied = await mock_discord.wait_for_response(click, is_grid, timeout=TIMEOUT)
    var = await store.get_job(job_id_of(varied))
    assert var is not None and var.kind is JobKind.VARIATION
    assert (var.parent_id, var.tile_index, len(var.images)) == (parent, 2, 4)
    assert "Variations of image 3" in varied.content

    click = await mock_discord.click(grid, f"ib:r:{parent}:0", user=mock_discord.alice)
    rerolled = await mock_discord.wait_for_response(click, is_grid, timeout=TIMEOUT)
    again = await store.get_job(job_id_of(rerolled))
    original = await store.get_job(parent)
    assert again is not None and original is not None and again.kind is JobKind.REROLL
    assert again.spec.prompt == original.spec.prompt and again.spec.seeds != original.spec.seeds

    click = await mock_discord.click(upscaled, f"ib:s:{up.id}:0", user=mock_discord.alice)
    subtle = await mock_discord.wait_for_response(click, is_grid, timeout=TIMEOUT)
    sub = await store.get_job(job_id_of(subtle))
    assert sub is not None and sub.kind is JobKind.VARIATION and sub.parent_id == up.id
    assert sub.spec.strength == 0.35  # Vary (Subtle), kept in the store for a restart
    assert "Variations of the upscale" in subtle.content


async def test_bad_prompt_is_refused_privately_and_costs_nothing(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "an otter --stpes 5"}, user=mock_discord.alice
    )
    text = await refusal(mock_discord, interaction)
    assert "--stpes" in text and "Did you mean --steps?" in text
    assert not [m for m in mock_discord.messages() if not m.ephemeral and m.content]
    assert await running.store.unfinished_jobs() == []
    assert (await running.store.quota_status(mock_discord.guild_id, mock_discord.alice.id)).used == 0


async def test_quota_exhausted_is_refused_with_no_job(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory(quota_per_day=5)
    await imagine(mock_discord, mock_discord.alice, "a green star --steps 2")
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a green star --steps 2"}, user=mock_discord.alice
    )
    text = await refusal(mock_discord, interaction)
    assert "1 of your 5 left" in text and "resets" in text
    jobs = await running.store.recent_jobs(mock_discord.guild_id, mock_discord.alice.id)
    assert len(jobs) == 1


async def test_moderator_sets_a_quota_and_a_student_cannot(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    student = await mock_discord.send_command(
        "quota set", {"images": 1000, "user": "bob"}, user=mock_discord.bob
    )
    assert "Only moderators" in await refusal(mock_discord, student)
    teacher = await mock_discord.send_command(
        "quota set", {"images": 2, "user": "alice"}, user=mock_discord.moderator
    )
    assert "2 images a day" in await refusal(mock_discord, teacher)  # moderators' answers are ephemeral too
    status = await running.store.quota_status(mock_discord.guild_id, mock_discord.alice.id)
    assert status.limit == 2
    log = await running.store.moderation_log(mock_discord.guild_id)
    assert [(a.action, a.actor_id, a.target_id) for a in log] == [
        ("quota.set", mock_discord.moderator.id, mock_discord.alice.id)
    ]
    interaction = await mock_discord.send_command("imagine", {"prompt": "a cat"}, user=mock_discord.alice)
    assert "needs 4 images" in await refusal(mock_discord, interaction)


async def test_moderator_commands_are_hidden_from_students(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    await bot_factory()
    state = mock_discord.state
    synced = {c.name: state.command_payload(c)["default_member_permissions"] for c in state.all_commands()}
    synced = {name: None if value is None else int(value) for name, value in synced.items()}
    manage_guild = 0x20
    assert {
        name: synced[name] for name in ("quota", "banned", "block", "unblock", "modlog")
    } == dict.fromkeys(("quota", "banned", "block", "unblock", "modlog"), manage_guild)
    assert [synced[name] for name in ("imagine", "settings", "info", "queue")] == [None] * 4


async def test_blocked_user_and_banned_words(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory()
    await mock_discord.send_command("banned add", {"word": "Dragon"}, user=mock_discord.moderator)
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a cat --no dragon"}, user=mock_discord.alice
    )
    assert "'dragon'" in await refusal(mock_discord, interaction)
    await mock_discord.send_command("block", {"user": "bob", "reason": "spam"}, user=mock_discord.moderator)
    interaction = await mock_discord.send_command("imagine", {"prompt": "a cat"}, user=mock_discord.bob)
    assert "blocked" in await refusal(mock_discord, interaction)
    assert await running.store.recent_jobs(mock_discord.guild_id, mock_discord.bob.id) == []


async def test_buttons_work_after_token_expiry_and_restart(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    first = await bot_factory()
    grid = await imagine(mock_discord, mock_discord.alice, "a white triangle --steps 2 --seed 9")
    parent = job_id_of(grid)
    mock_discord.expire_tokens()
    await first.stop()
    second = await bot_factory()
    click = await mock_discord.click(grid, f"ib:v:{parent}:1", user=mock_discord.alice)
    varied = await mock_discord.wait_for_response(click, is_grid, timeout=TIMEOUT)
    job = await second.store.get_job(job_id_of(varied))
    assert job is not None and job.parent_id == parent and job.tile_index == 0


async def test_job_finishing_after_its_token_expired_still_arrives(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    await bot_factory(preview_every=1)
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a red square --steps 30"}, user=mock_discord.alice
    )
    await mock_discord.wait_for_response(
        interaction, lambda m: "⏳" in m.content or "🎨" in m.content, timeout=TIMEOUT
    )
    mock_discord.expire_tokens()
    grid = await mock_discord.wait_for_message(
        lambda m: m.interaction is interaction and is_grid(m), timeout=TIMEOUT
    )
    assert grid.attachments
    assert mock_discord.requests(status=401), "the expired token was tried and refused"
    assert [r for r in mock_discord.requests(path_contains="/channels/") if r.method == "PATCH"]


async def test_two_users_jobs_interleave_fairly(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory(max_queued_per_user=5)
    alice = [
        await mock_discord.send_command(
            "imagine", {"prompt": f"alice {i} --steps 3"}, user=mock_discord.alice
        )
        for i in range(4)
    ]
    bob = await mock_discord.send_command("imagine", {"prompt": "bob --steps 3"}, user=mock_discord.bob)
    for interaction in [*alice, bob]:
        await mock_discord.wait_for_response(interaction, is_grid, timeout=TIMEOUT)
    jobs = [
        *(await running.store.recent_jobs(mock_discord.guild_id, mock_discord.alice.id)),
        *(await running.store.recent_jobs(mock_discord.guild_id, mock_discord.bob.id)),
    ]
    order = [job.spec.prompt for job in sorted(jobs, key=lambda j: j.started_at or j.created_at)]
    # alice's first job may start alone; bob's single job must not wait behind all of alice's
    assert order.index("bob") <= 2, order


async def test_cancel_button_author_or_moderator_only(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory(preview_every=1)
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a long job --steps 150"}, user=mock_discord.alice
    )
    reply = await mock_discord.wait_for_response(
        interaction, lambda m: any(c.startswith("ib:c:") for c in m.custom_ids), timeout=TIMEOUT
    )
    cancel = next(c for c in reply.custom_ids if c.startswith("ib:c:"))
    other = await mock_discord.click(reply, cancel, user=mock_discord.bob)
    assert "Only the author" in await refusal(mock_discord, other)
    await mock_discord.click(reply, cancel, user=mock_discord.moderator)
    done = await mock_discord.wait_for_message(
        lambda m: m.id == reply.id and "Cancelled" in m.content, timeout=TIMEOUT
    )
    assert done.custom_ids == []
    job = await running.store.get_job(int(cancel.split(":")[2]))
    assert job is not None and job.status is JobStatus.CANCELLED


async def test_previews_survive_rate_limits(mock_discord: Any, bot_factory: BotFactory) -> None:
    await bot_factory(preview_every=1, preview_min_interval=0.0)
    mock_discord.set_rate_limit("webhook", 2, 1.0, headers=False)
    grid = await imagine(mock_discord, mock_discord.alice, "a black circle --steps 12")
    assert grid.attachments
    assert mock_discord.requests(status=429), "the rate limit was hit and retried"


async def test_job_running_at_a_stop_resumes_after_restart(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    first = await bot_factory(preview_every=1)
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "an orange square --steps 150"}, user=mock_discord.alice
    )
    await mock_discord.wait_for_response(interaction, lambda m: "🎨" in m.content, timeout=TIMEOUT)
    await first.stop()
    second = await bot_factory()
    # meanwhile a new job must not be mistaken for a leftover one
    other = await imagine(mock_discord, mock_discord.bob, "a new job --steps 2")
    grid = await mock_discord.wait_for_message(
        lambda m: m.interaction is interaction and is_grid(m), timeout=TIMEOUT
    )
    job = await second.store.get_job(job_id_of(grid))
    assert job is not None and job.status is JobStatus.DONE and len(job.images) == 4
    assert (await second.store.quota_status(mock_discord.guild_id, mock_discord.alice.id)).used == 4
    assert job_id_of(other) != job.id


class FailsOnce:
    """The tiny engine, but its first step runs out of GPU memory (as on a busy card)."""

    def __init__(self, engine: Any) -> None:
        self._engine, self.failed = engine, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def step(self, states: Any) -> None:
        if not self.failed:
            self.failed = True
            raise OutOfMemory("The GPU ran out of memory for this job; try fewer images or a smaller --ar.")
        self._engine.step(states)


async def test_failed_job_is_refunded_and_retried_by_its_retry_button(
    mock_discord: Any, bot_factory: BotFactory, tiny_engine: Any
) -> None:
    running = await bot_factory(engine=FailsOnce(tiny_engine))
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a cat --seed 77 --steps 2"}, user=mock_discord.alice
    )
    failed = await mock_discord.wait_for_response(
        interaction, lambda m: "ran out of memory" in m.content, timeout=TIMEOUT
    )
    job_id = job_id_of(failed)
    assert failed.custom_ids == [f"ib:a:{job_id}:0"]  # Retry, not 🔄 (which means a new seed)
    job = await running.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.FAILED
    assert (await running.store.quota_status(mock_discord.guild_id, mock_discord.alice.id)).used == 0

    click = await mock_discord.click(failed, f"ib:a:{job_id}:0", user=mock_discord.alice)
    grid = await mock_discord.wait_for_response(click, is_grid, timeout=TIMEOUT)
    retry = await running.store.get_job(job_id_of(grid))
    assert retry is not None and retry.kind is JobKind.IMAGINE
    assert retry.spec.seeds == (77, 78, 79, 80)  # the very same job, not a new seed


async def test_queue_cap_refuses_privately_and_charges_nothing(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory(max_queued_per_user=1, preview_every=1, batch_capacity=1)  # one at a time
    alice = mock_discord.alice
    first = await mock_discord.send_command("imagine", {"prompt": "one --steps 150"}, user=alice)
    await mock_discord.wait_for_response(first, lambda m: "🎨" in m.content, timeout=TIMEOUT)  # running
    second = await mock_discord.send_command("imagine", {"prompt": "two --steps 2"}, user=alice)
    await mock_discord.wait_for_response(second, lambda m: "next in line" in m.content, timeout=TIMEOUT)
    third = await mock_discord.send_command("imagine", {"prompt": "three --steps 2"}, user=alice)
    assert "the most allowed is 1" in await refusal(mock_discord, third)
    assert (await running.store.quota_status(mock_discord.guild_id, alice.id)).used == 8  # not 12
    refused = (await running.store.recent_jobs(mock_discord.guild_id, alice.id))[0]
    assert refused.spec.prompt == "three" and refused.status is JobStatus.CANCELLED
