"""Several models end to end on the local Discord: --model routes a prompt to its model's engine with that
model's defaults, /settings picks a user's model, /models lists them, and a U of a grid stays with the
model that drew it; --lora changes its job alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lorafiles import kohya_layout, random_lora
from pixels import THROUGH_THE_BOT, assert_close_pixels, assert_different_pictures
from safetensors.torch import save_file
from test_imagine import TIMEOUT, imagine, job_id_of, refusal

from imaginebot.engine import DiffusionEngine
from imaginebot.engine.models import ModelSet
from imaginebot.engine.tiny import engine_from, tiny_sd

BotFactory = Any

MODELS = "plain=/models/plain.safetensors, other=/models/other.safetensors steps=3 cfg=4"


@pytest.fixture(scope="module")
def other_engine() -> DiffusionEngine:
    return engine_from(tiny_sd(seed=1))  # other weights: other pictures


@pytest.fixture
async def running(
    bot_factory: BotFactory, tiny_engine: DiffusionEngine, other_engine: DiffusionEngine
) -> Any:
    return await bot_factory(ModelSet({"plain": tiny_engine, "other": other_engine}), models=MODELS)


async def pixels(running: Any, job_id: int) -> list[np.ndarray]:
    job = await running.store.get_job(job_id)
    return [np.asarray(await running.store.load_image(path)) for path in job.images]


async def test_model_flag_routes_to_that_models_engine_with_its_defaults(
    mock_discord: Any, running: Any, other_engine: DiffusionEngine
) -> None:
    plain = await imagine(mock_discord, mock_discord.alice, "a red circle --seed 5")
    other = await imagine(mock_discord, mock_discord.alice, "a red circle --seed 5 --model other")
    plain_job = await running.store.get_job(job_id_of(plain))
    other_job = await running.store.get_job(job_id_of(other))
    assert (plain_job.spec.model, plain_job.spec.num_inference_steps) == ("plain", 6)  # the server's steps
    assert (other_job.spec.model, other_job.spec.num_inference_steps) == ("other", 3)  # its own
    assert other_job.spec.guidance_scale == 4.0 and "--model other" in other.content
    # the other model's own pixels: the same spec on its engine alone
    alone = other_engine.generate(other_job.spec)
    got = await pixels(running, other_job.id)
    assert_close_pixels(got, alone.images, THROUGH_THE_BOT)
    assert_different_pictures(got[0], (await pixels(running, plain_job.id))[0])

    click = await mock_discord.click(other, f"ib:u:{other_job.id}:1", user=mock_discord.alice)
    upscaled = await mock_discord.wait_for_response(
        click, lambda m: bool(m.attachments) and "ib:s:" in str(m.custom_ids), timeout=TIMEOUT
    )
    up = await running.store.get_job(job_id_of(upscaled))
    assert up.spec.model == "other"


async def test_settings_pick_a_users_model_and_models_lists_them(mock_discord: Any, running: Any) -> None:
    alice = mock_discord.alice
    listing = await refusal(mock_discord, await mock_discord.send_command("models", {}, user=alice))
    assert "**plain** (default)" in listing and "**other**" in listing and "steps 3 · cfg 4" in listing
    assert "No LoRAs" in listing
    answer = await refusal(
        mock_discord, await mock_discord.send_command("settings", {"model": "othr"}, user=alice)
    )
    assert "'othr' is not a model this bot has" in answer and "Did you mean other?" in answer
    answer = await refusal(
        mock_discord, await mock_discord.send_command("settings", {"model": "Other"}, user=alice)
    )
    assert "model **other** (yours)" in answer and "steps **3**" in answer
    grid = await imagine(mock_discord, alice, "a blue square --seed 9")
    job = await running.store.get_job(job_id_of(grid))
    assert (job.spec.model, job.spec.num_inference_steps) == ("other", 3)
    bobs = await imagine(mock_discord, mock_discord.bob, "a blue square --seed 9")
    assert (await running.store.get_job(job_id_of(bobs))).spec.model == "plain"
    wrong = await mock_discord.send_command("imagine", {"prompt": "a cat --model turbo"}, user=alice)
    assert "'turbo' is not a model this bot has. Choose one of: plain, other." in await refusal(
        mock_discord, wrong
    )


async def test_a_lora_changes_that_job_alone_and_models_lists_it(
    mock_discord: Any, bot_factory: BotFactory, tiny_engine: DiffusionEngine, tmp_path: Path
) -> None:
    folder = tmp_path / "loras"
    folder.mkdir()
    save_file(kohya_layout(random_lora(tiny_sd(seed=0), seed=1)), folder / "Ink_Style.safetensors")
    # its own copy of the weights: PEFT changes the modules a LoRA is loaded into
    engine = engine_from(tiny_sd(seed=0), lora_dir=folder)
    running = await bot_factory(engine, lora_dir=folder)
    alice = mock_discord.alice
    listing = await refusal(mock_discord, await mock_discord.send_command("models", {}, user=alice))
    assert "`Ink_Style`" in listing

    styled = await imagine(mock_discord, alice, "a red circle --seed 5 --lora ink_style:1.5")
    plain = await imagine(mock_discord, alice, "a red circle --seed 5")
    styled_job = await running.store.get_job(job_id_of(styled))
    plain_job = await running.store.get_job(job_id_of(plain))
    assert styled_job.spec.loras == (("Ink_Style", 1.5),) and "--lora Ink_Style:1.5" in styled.content
    got_plain = await pixels(running, plain_job.id)
    assert_different_pictures((await pixels(running, styled_job.id))[0], got_plain[0])
    # the next job without it: what an engine that never had a LoRA draws (its layers now wrapped by
    # PEFT, with the adapters off: another code path, through the bot)
    fresh = tiny_engine.generate(plain_job.spec).images
    assert_close_pixels(got_plain, fresh, THROUGH_THE_BOT)

    wrong = await mock_discord.send_command("imagine", {"prompt": "a cat --lora inkstyle"}, user=alice)
    assert "Did you mean Ink_Style?" in await refusal(mock_discord, wrong)
