"""/settings, /info and /queue end to end against the local Discord."""

from __future__ import annotations

from typing import Any

BotFactory = Any  # tests/cogs/conftest.py: bot_factory(**settings) -> RunningBot
TIMEOUT = 60


def select_with(message: Any, value_label: str) -> str:
    """The custom_id of the select menu offering an option labelled ``value_label``."""
    for component in message.iter_components():
        if component.get("type") == 3 and any(o["label"] == value_label for o in component["options"]):
            return str(component["custom_id"])
    raise AssertionError(f"no select offers {value_label!r}: {message.components}")


def button(message: Any, label: str) -> str:
    return next(str(c["custom_id"]) for c in message.iter_components() if c.get("label") == label)


async def test_settings_panel_saves_defaults_that_imagine_uses(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    alice = mock_discord.alice
    interaction = await mock_discord.send_command("settings", {}, user=alice)
    panel = await mock_discord.wait_for_response(interaction, lambda m: m.ephemeral, timeout=TIMEOUT)
    assert "steps **6**" in panel.content  # the bot's default in this test

    await mock_discord.select(panel, select_with(panel, "Steps: 10"), ["10"], user=alice)
    panel = await mock_discord.wait_for_message(
        lambda m: m.id == panel.id and "steps **10** (yours)" in m.content
    )
    await mock_discord.select(panel, select_with(panel, "Images per grid: 2"), ["2"], user=alice)
    panel = await mock_discord.wait_for_message(
        lambda m: m.id == panel.id and "images **2** (yours)" in m.content
    )
    await mock_discord.click(panel, button(panel, "CFG +"), user=alice)
    panel = await mock_discord.wait_for_message(
        lambda m: m.id == panel.id and "cfg **5.5** (yours)" in m.content
    )
    mine = await running.store.get_settings(alice.id)
    assert (mine.steps, mine.images, mine.cfg) == (10, 2, 5.5)

    grid_interaction = await mock_discord.send_command("imagine", {"prompt": "a cat --steps 3"}, user=alice)
    grid = await mock_discord.wait_for_response(
        grid_interaction, lambda m: any(c.startswith("ib:u:") for c in m.custom_ids), timeout=TIMEOUT
    )
    job = (await running.store.recent_jobs(mock_discord.guild_id, alice.id))[0]
    assert job.spec.num_inference_steps == 3  # the flag wins over the user's default
    assert job.spec.num_images == 2 and job.spec.guidance_scale == 5.5  # the user's defaults
    assert [c for c in grid.custom_ids if c.startswith("ib:u:")] == [f"ib:u:{job.id}:1", f"ib:u:{job.id}:2"]

    await mock_discord.click(panel, button(panel, "Reset all"), user=alice)
    await mock_discord.wait_for_message(lambda m: m.id == panel.id and "(yours)" not in m.content)
    mine = await running.store.get_settings(alice.id)
    assert (mine.steps, mine.images, mine.cfg) == (None, None, None)


async def test_info_and_queue(mock_discord: Any, bot_factory: BotFactory) -> None:
    await bot_factory(quota_per_day=10)
    alice = mock_discord.alice
    imagine = await mock_discord.send_command("imagine", {"prompt": "a dog --steps 2"}, user=alice)
    await mock_discord.wait_for_response(
        imagine, lambda m: any(c.startswith("ib:u:") for c in m.custom_ids), timeout=TIMEOUT
    )
    info = await mock_discord.send_command("info", {}, user=alice)
    text = (await mock_discord.wait_for_response(info, lambda m: m.ephemeral, timeout=TIMEOUT)).content
    assert "4 images made, 6 of 10 left" in text and "a dog" in text
    queue = await mock_discord.send_command("queue", {}, user=mock_discord.bob)
    text = (await mock_discord.wait_for_response(queue, lambda m: m.ephemeral, timeout=TIMEOUT)).content
    assert "queue is empty" in text


async def test_queue_shows_running_and_waiting_jobs(mock_discord: Any, bot_factory: BotFactory) -> None:
    await bot_factory(preview_every=1, batch_capacity=1)  # one job at a time: bob's waits
    long = await mock_discord.send_command(
        "imagine", {"prompt": "a slow one --steps 150"}, user=mock_discord.alice
    )
    # a step done (and timed): the estimates can start
    await mock_discord.wait_for_response(long, lambda m: "steps)" in m.content, timeout=TIMEOUT)
    waiting = await mock_discord.send_command(
        "imagine", {"prompt": "bob waits --steps 2"}, user=mock_discord.bob
    )
    await mock_discord.wait_for_response(waiting, lambda m: "next in line" in m.content, timeout=TIMEOUT)
    queue = await mock_discord.send_command("queue", {}, user=mock_discord.bob)
    text = (await mock_discord.wait_for_response(queue, lambda m: m.ephemeral, timeout=TIMEOUT)).content
    assert f"▶️ <@{mock_discord.alice.id}> imagine: a slow one" in text
    assert f"1. <@{mock_discord.bob.id}> imagine: bob waits · starts " in text  # with its estimate
