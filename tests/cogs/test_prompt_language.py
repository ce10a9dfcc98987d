"""The rest of Midjourney's prompt language end to end on the local Discord, through the real bot:
multi-prompts (and what each button makes of them), --chaos, --stop and --q, and their mistakes."""

from __future__ import annotations

from typing import Any

BotFactory = Any
TIMEOUT = 60
MULTI = (("a red boat", 0.25), ("on a calm sea", 0.75), ("fog", -0.25))  # as the store keeps them


def job_id_of(message: Any) -> int:
    return int(next(cid for cid in message.custom_ids if cid.startswith("ib:")).split(":")[2])


def has_picture(message: Any) -> bool:
    """A finished job's message: its picture and its buttons (a preview has only Cancel)."""
    ids = message.custom_ids
    return bool(message.attachments) and bool(ids) and not any(cid.startswith("ib:c:") for cid in ids)


async def imagine(mock: Any, user: Any, prompt: str) -> Any:
    interaction = await mock.send_command("imagine", {"prompt": prompt}, user=user)
    return await mock.wait_for_response(interaction, has_picture, timeout=TIMEOUT)


async def press(mock: Any, message: Any, custom_id: str, user: Any) -> Any:
    interaction = await mock.click(message, custom_id, user=user)
    return await mock.wait_for_response(interaction, has_picture, timeout=TIMEOUT)


async def test_a_multi_prompt_and_every_job_made_from_it_keep_its_parts(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    alice, store = mock_discord.alice, running.store
    grid = await imagine(mock_discord, alice, "a red boat:: on a calm sea::3 fog::-1 --no rain --steps 2")
    job = await store.get_job(job_id_of(grid))
    assert job is not None and job.spec.parts == MULTI and job.spec.negative_prompt == "rain"
    canonical = "a red boat::1 on a calm sea::3 fog::-1 --no rain --ar 1:1 --steps 2"
    assert job.prompt_text.startswith(canonical) and f"`/imagine prompt: {job.prompt_text}`" in grid.content
    assert len(job.images) == 4

    children = [
        await press(mock_discord, grid, f"ib:{action}:{job.id}:{tile}", alice)
        for action, tile in (("u", 2), ("v", 1), ("r", 0))
    ]
    upscale = await store.get_job(job_id_of(children[0]))
    assert upscale is not None
    zoomed = await press(mock_discord, children[0], f"ib:z:{upscale.id}:0", alice)  # Zoom Out 2x: an edit
    made = [await store.get_job(job_id_of(message)) for message in (*children, zoomed)]
    for child in made:
        assert child is not None and child.spec.parts == MULTI and child.spec.negative_prompt == "rain"
        assert child.prompt_text.startswith("a red boat::1 on a calm sea::3 fog::-1 --no rain")
    # the footer of each re-makes it: the upscale's is its tile alone, by its own seed
    assert f"--seed {job.spec.seeds[1]}" in made[0].prompt_text and "--images 1" in made[0].prompt_text


async def test_chaos_stop_and_quality_reach_the_engine_and_the_footer(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()  # previews every 2 steps
    grid = await imagine(
        mock_discord, mock_discord.alice, "a lighthouse --steps 24 --q .5 --stop 50 --chaos 60"
    )
    job = await running.store.get_job(job_id_of(grid))
    assert job is not None
    # --q .5 of 24 steps is a schedule of 12; --stop 50 runs 6 of them, and the message counts those
    assert (job.spec.num_inference_steps, job.spec.stop, job.spec.chaos) == (12, 50, 60)
    shown = [content for content, _files in grid.history]
    assert any("/6 steps)" in content for content in shown), shown
    assert not any("/12 steps" in content or "/24 steps" in content for content in shown), shown
    assert "--steps 24" in grid.content and "--chaos 60 --stop 50 --q 0.5" in grid.content

    # the same footer re-makes the same grid: the store keeps what re-makes it
    again = await imagine(mock_discord, mock_discord.alice, job.prompt_text)
    twin = await running.store.get_job(job_id_of(again))
    assert twin is not None and twin.spec == job.spec
    stored_pictures = [await running.store.load_image(path) for path in (*job.images, *twin.images)]
    first, second = stored_pictures[:4], stored_pictures[4:]
    assert [a.tobytes() for a in first] == [b.tobytes() for b in second]  # same code, same inputs


async def test_mistakes_in_parts_and_flags_are_told_and_cost_nothing(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    for prompt, expected in (
        ("a castle:: fog::-2", "add up to -1"),
        ("a castle::2x in the clouds", "the weight of part 1"),
        ("a castle --chaos 150", "--chaos must be a whole number from 0 to 100"),
        ("a castle --stop 5", "--stop must be a whole number from 10 to 100"),
        ("a castle --q 3", "--q must be one of .25, .5 or 1"),
        ("a castle --chaso 3", "Did you mean --chaos?"),
    ):
        interaction = await mock_discord.send_command("imagine", {"prompt": prompt}, user=mock_discord.bob)
        message = await mock_discord.wait_for_response(interaction, lambda m: m.ephemeral, timeout=TIMEOUT)
        assert expected in message.content, prompt
    assert await running.store.recent_jobs(mock_discord.guild_id, mock_discord.bob.id) == []
    assert (await running.store.quota_status(mock_discord.guild_id, mock_discord.bob.id)).used == 0
