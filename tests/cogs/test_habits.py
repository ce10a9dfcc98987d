"""Midjourney's habits end to end through the real bot on the local Discord: permutations and --repeat (asked
with Yes/No, queued all or none), relax mode, /prefer shortcuts and suffix."""

from __future__ import annotations

from typing import Any

BotFactory = Any  # tests/cogs/conftest.py: bot_factory(**settings) -> RunningBot
TIMEOUT = 60


def is_grid(message: Any) -> bool:
    return any(cid.startswith("ib:u:") for cid in message.custom_ids) and bool(message.attachments)


def job_id_of(message: Any) -> int:
    return int(next(cid for cid in message.custom_ids if cid.startswith("ib:")).split(":")[2])


async def ephemeral_answer(mock: Any, interaction: Any) -> Any:
    return await mock.wait_for_response(interaction, lambda m: m.ephemeral, timeout=TIMEOUT)


async def question_for(mock: Any, user: Any, prompt: str) -> Any:
    """The Yes/No question a /imagine of several jobs answers with."""
    interaction = await mock.send_command("imagine", {"prompt": prompt}, user=user)
    return await mock.wait_for_response(
        interaction,
        lambda m: m.ephemeral and any(c.startswith("ib:batch:") for c in m.custom_ids),
        timeout=TIMEOUT,
    )


async def grids_of(mock: Any, click: Any, count: int) -> list[Any]:
    """The ``count`` grids a Yes click's jobs end in (each a message of its own)."""
    found: dict[int, Any] = {}
    while len(found) < count:
        message = await mock.wait_for_message(
            lambda m: m.interaction is click and is_grid(m) and m.id not in found,
            timeout=TIMEOUT,
            what=f"grid {len(found) + 1} of the {count} the Yes queued",
        )
        found[message.id] = message
    return sorted(found.values(), key=lambda m: m.id)


async def test_permutations_ask_first_and_yes_queues_every_job(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    alice, guild = mock_discord.alice, mock_discord.guild_id
    question = await question_for(
        mock_discord, alice, "a {red, blue} circle --steps 2 --seed 7 --ar {1:1, 2:1}"
    )
    assert "makes 4 jobs, 16 images in all" in question.content, question.content
    assert "a red circle --ar 1:1" in question.content and "a blue circle --ar 2:1" in question.content
    assert question.visible_to(alice.id) and not question.visible_to(mock_discord.bob.id)
    assert not [m for m in mock_discord.messages() if not m.ephemeral and m.content]  # nothing public yet
    assert await running.store.recent_jobs(guild, alice.id) == []
    assert (await running.store.quota_status(guild, alice.id)).used == 0  # asking costs nothing
    (yes,) = [c for c in question.custom_ids if c.endswith(":y")]

    click = await mock_discord.click(question, yes, user=alice)
    grids = await grids_of(mock_discord, click, 4)
    jobs = [await running.store.get_job(job_id_of(grid)) for grid in grids]
    assert sorted((j.spec.prompt, j.spec.width > j.spec.height) for j in jobs if j) == [
        ("a blue circle", False),
        ("a blue circle", True),
        ("a red circle", False),
        ("a red circle", True),
    ]
    assert all(j is not None and j.spec.seeds[0] == 7 for j in jobs)  # the seed given, in every job
    assert all(not grid.ephemeral for grid in grids)
    answered = await mock_discord.wait_for_message(
        lambda m: m.id == question.id and "Queued 4 jobs" in m.content,
        timeout=TIMEOUT,
        what="the question saying its jobs are queued",
    )
    assert not any(c.startswith("ib:batch:") for c in answered.custom_ids)  # its buttons are gone
    assert (await running.store.quota_status(guild, alice.id)).used == 16


async def test_no_queues_nothing_and_a_yes_after_a_restart_still_works(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    first = await bot_factory()
    alice, guild = mock_discord.alice, mock_discord.guild_id
    declined = await question_for(mock_discord, alice, "a green {square, star} --steps 2")
    (no,) = [c for c in declined.custom_ids if c.endswith(":n")]
    await mock_discord.click(declined, no, user=alice)
    await mock_discord.wait_for_message(
        lambda m: m.id == declined.id and "No jobs were queued" in m.content,
        timeout=TIMEOUT,
        what="the question saying No queued nothing",
    )
    assert await first.store.recent_jobs(guild, alice.id) == []
    assert (await first.store.quota_status(guild, alice.id)).used == 0

    pending = await question_for(mock_discord, alice, "a white moon --steps 2 --repeat 2")
    assert "makes 2 jobs, 8 images in all** (one prompt with --repeat)" in pending.content
    await first.stop()
    second = await bot_factory()
    (yes,) = [c for c in pending.custom_ids if c.endswith(":y")]
    click = await mock_discord.click(pending, yes, user=alice)
    grids = await grids_of(mock_discord, click, 2)
    jobs = [await second.store.get_job(job_id_of(grid)) for grid in grids]
    assert [j.spec.prompt for j in jobs if j] == ["a white moon", "a white moon"]
    seeds = {j.spec.seeds[0] for j in jobs if j}
    assert len(seeds) == 2  # --repeat: new seeds
    assert (await second.store.quota_status(guild, alice.id)).used == 8


async def test_too_many_permutations_and_not_enough_quota_are_refused_up_front(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory(max_permutations=3, quota_per_day=10)
    alice = mock_discord.alice
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a {red, blue} {circle, star}"}, user=alice
    )
    text = (await ephemeral_answer(mock_discord, interaction)).content
    assert "makes 4 jobs" in text and "at most 3" in text
    interaction = await mock_discord.send_command("imagine", {"prompt": "an owl --r 3"}, user=alice)
    text = (await ephemeral_answer(mock_discord, interaction)).content
    assert "needs 12 images" in text and "10 of your 10 left" in text  # all or none: none
    assert await running.store.recent_jobs(mock_discord.guild_id, alice.id) == []


async def test_relax_mode_when_the_quota_is_used_up(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory(quota_per_day=4)
    alice, guild, store = mock_discord.alice, mock_discord.guild_id, running.store
    interaction = await mock_discord.send_command("imagine", {"prompt": "a cat --steps 2"}, user=alice)
    await mock_discord.wait_for_response(interaction, is_grid, timeout=TIMEOUT)
    # relax off (the default): out of quota is refused
    interaction = await mock_discord.send_command("imagine", {"prompt": "a dog --steps 2"}, user=alice)
    assert "0 of your 4 left" in (await ephemeral_answer(mock_discord, interaction)).content
    interaction = await mock_discord.send_command("imagine", {"prompt": "a dog --relax"}, user=alice)
    assert "Relax mode is off" in (await ephemeral_answer(mock_discord, interaction)).content

    # a student can't turn it on; a moderator can
    denied = await mock_discord.send_command("quota relax", {"state": "on"}, user=alice)
    assert "Only moderators" in (await ephemeral_answer(mock_discord, denied)).content
    turned = await mock_discord.send_command("quota relax", {"state": "on"}, user=mock_discord.moderator)
    assert "Relax mode is on" in (await ephemeral_answer(mock_discord, turned)).content
    assert await store.relax_on(guild)

    interaction = await mock_discord.send_command("imagine", {"prompt": "a dog --steps 2"}, user=alice)
    grid = await mock_discord.wait_for_response(interaction, is_grid, timeout=TIMEOUT)
    assert "(relaxed)" in grid.content
    job = await store.get_job(job_id_of(grid))
    assert job is not None and job.relax and job.charged == 0
    assert (await store.quota_status(guild, alice.id)).used == 4  # relax costs nothing
    info = await mock_discord.send_command("info", {}, user=alice)
    text = (await ephemeral_answer(mock_discord, info)).content
    assert "4 images made, 0 of 4 left" in text and "4 images made in relax today" in text
    assert "Relax mode is on here" in text

    # Fast/Relax in /settings: relax by choice costs nothing either, for anyone
    interaction = await mock_discord.send_command("settings", {}, user=mock_discord.bob)
    panel = await ephemeral_answer(mock_discord, interaction)
    assert "Mode **Fast**" in panel.content
    toggle = next(c["custom_id"] for c in panel.iter_components() if c.get("label") == "Fast mode")
    await mock_discord.click(panel, toggle, user=mock_discord.bob)
    await mock_discord.wait_for_message(
        lambda m: m.id == panel.id and "Mode **Relax**" in m.content,
        timeout=TIMEOUT,
        what="the /settings panel in Relax mode",
    )
    assert (await store.get_settings(mock_discord.bob.id)).relax
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a fox --steps 2"}, user=mock_discord.bob
    )
    grid = await mock_discord.wait_for_response(interaction, is_grid, timeout=TIMEOUT)
    assert "(relaxed)" in grid.content
    assert (await store.quota_status(guild, mock_discord.bob.id)).used == 0

    # off again: nobody runs in relax; a relax setting is refused with what to do
    await mock_discord.send_command("quota relax", {"state": "off"}, user=mock_discord.moderator)
    interaction = await mock_discord.send_command(
        "imagine", {"prompt": "a fox --steps 2"}, user=mock_discord.bob
    )
    assert (
        "switch your mode to Fast in /settings" in (await ephemeral_answer(mock_discord, interaction)).content
    )


async def test_prefer_shortcuts_and_suffix(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory()
    alice, store = mock_discord.alice, running.store

    async def prefer(command: str, options: dict[str, Any]) -> str:
        interaction = await mock_discord.send_command(f"prefer {command}", options, user=alice)
        return str((await ephemeral_answer(mock_discord, interaction)).content)

    assert "already one of the bot's flags" in await prefer("option set", {"name": "ar", "value": "3:2"})
    assert "already one of the bot's flags" in await prefer("option set", {"name": "--R", "value": "2"})
    assert "can't be a shortcut" in await prefer("option set", {"name": "my style", "value": "x"})
    refused = await prefer("option set", {"name": "bad", "value": "--stpes 3"})
    assert "--bad was not saved" in refused and "Did you mean --steps?" in refused
    assert "Saved: `--mine`" in await prefer("option set", {"name": "mine", "value": "watercolor --ar 2:1"})
    assert "Saved" in await prefer("suffix", {"value": "--steps 2 --seed 11"})
    listing = await prefer("option list", {})
    assert "`--mine` → `watercolor --ar 2:1`" in listing and "--steps 2 --seed 11" in listing
    assert await store.prefer_options(alice.id) == {"mine": "watercolor --ar 2:1"}

    interaction = await mock_discord.send_command("imagine", {"prompt": "a fox --Mine --seed 5"}, user=alice)
    grid = await mock_discord.wait_for_response(interaction, is_grid, timeout=TIMEOUT)
    job = await store.get_job(job_id_of(grid))
    assert job is not None and job.spec.prompt == "a fox watercolor"
    assert job.spec.width > job.spec.height and job.spec.num_inference_steps == 2  # shortcut and suffix
    assert job.spec.seeds[0] == 5  # the prompt's own --seed wins over the suffix's

    assert "--mine is deleted" in await prefer("option set", {"name": "mine"})
    assert "removed" in await prefer("suffix", {})
    assert await store.prefer_options(alice.id) == {} and await store.prefer_suffix(alice.id) == ""
