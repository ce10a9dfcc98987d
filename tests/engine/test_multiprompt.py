"""Multi-prompts as composable diffusion, --stop and --chaos in the engine (tiny random-weight models).

Batched against alone, with these jobs amid others: tests/engine/test_batching.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from pixels import BATCHED, Tolerance, assert_close_pixels, assert_different_pictures

from imaginebot.engine import DiffusionEngine, GenerateSpec
from imaginebot.engine.compose import combine
from imaginebot.engine.pipeline import _State
from imaginebot.engine.planning import Layout
from imaginebot.engine.tiny import TinyComponents, engine_from, tiny_sd
from imaginebot.errors import ParamError
from imaginebot.params import parse

BASE: dict[str, object] = {"width": 32, "height": 32, "num_inference_steps": 6, "seeds": (1, 2)}


def spec(prompt: str, **kwargs: object) -> GenerateSpec:
    return GenerateSpec(prompt, **(BASE | kwargs))  # type: ignore[arg-type]


# "a --no fog" against "a:: fog::-0.5": the same picture by other arithmetic (three blocks of rows against
# two, the negative side made as ε_uncond + (ε_fog − ε_uncond)), whose last-bit differences the sampler
# carries through every step, as a batch's against a job alone. Measured: 0/255 for SD, 1/255 for SDXL.
COMBINED = Tolerance(2, 1.0, "one picture from three predictions combined against two: other rounding")


def test_one_part_runs_the_plain_guidance_step_bit_for_bit(sd_engine: DiffusionEngine) -> None:
    """A prompt without '::' (or with one part) is the spec it always was, run by the same code: the same
    inputs through the same code twice give the same bits."""
    one = parse("a red lighthouse::2 --no fog --seed 1 --n 2 --steps 6 --cfg 7").to_spec(32)
    plain = parse("a red lighthouse --no fog --seed 1 --n 2 --steps 6 --cfg 7").to_spec(32)
    assert one == plain and one.parts == ()
    state = sd_engine.prepare(one)
    assert isinstance(state, _State) and not state.cond.layout.composed and state.cond.layout.blocks == 2
    first, second = sd_engine.generate(one).images, sd_engine.generate(plain).images
    assert [a.tobytes() for a in first] == [b.tobytes() for b in second]


@pytest.mark.parametrize("model", ["sd", "sdxl"])
def test_no_is_a_part_at_minus_half(model: str, request: pytest.FixtureRequest) -> None:
    """'a red lighthouse --no fog' and 'a red lighthouse:: fog::-0.5' are one picture: the second runs a third
    block of rows (the empty prompt) and combines three predictions, so they agree to rounding, not bits."""
    components: TinyComponents = request.getfixturevalue(model)
    engine = engine_from(components)
    negative_prompt = engine.generate(spec("a red lighthouse", negative_prompt="fog")).images
    parts = parse("a red lighthouse:: fog::-0.5").to_spec(32).parts
    assert parts == (("a red lighthouse", 1.0), ("fog", -0.5))
    negative_part = engine.generate(spec("a red lighthouse::1 fog::-0.5", parts=parts)).images
    assert_close_pixels(negative_prompt, negative_part, COMBINED, f"{model}: --no fog against fog::-0.5")
    plain = engine.generate(spec("a red lighthouse")).images
    assert_different_pictures(negative_prompt, plain, at_least=8)  # and --no does change the picture


def test_the_parts_combine_as_composable_diffusion() -> None:
    rows = torch.arange(1.0, 6.0).repeat_interleave(2).reshape(10, 1)  # five blocks of two images
    no, uncond, first, second, fog = (rows[i * 2] for i in range(5))
    layout = Layout(do_cfg=True, positive=(0.25, 0.75), negative=(0.4,), empty_block=True)
    combined = combine(rows, layout, guidance_scale=7.0)
    negative = no + 0.4 * (fog - uncond)
    expected = negative + 7.0 * (0.25 * (first - negative) + 0.75 * (second - negative))
    assert torch.allclose(combined, expected.expand(2, 1))
    without_guidance = combine(rows[:4], Layout(do_cfg=False, positive=(0.5, 0.5)), guidance_scale=1.0)
    assert torch.allclose(without_guidance, torch.full((2, 1), 1.5))


def test_the_parts_are_rows_of_the_batch(sd_engine: DiffusionEngine) -> None:
    """One block of rows per part (and per negative side) per image: what the batcher's capacity counts."""
    multi = spec("x", parts=(("a", 0.25), ("b", 0.75), ("fog", -0.25)))
    assert sd_engine.plan(multi).samples == 2 * 4  # negative side, two parts, one negative part
    assert sd_engine.plan(replace(multi, negative_prompt="rain")).samples == 2 * 5  # the empty prompt too
    assert sd_engine.plan(replace(multi, guidance_scale=1.0)).samples == 2 * 2  # no guidance: the parts
    for s in (multi, replace(multi, negative_prompt="rain"), replace(multi, guidance_scale=1.0)):
        state = sd_engine.prepare(s)
        assert isinstance(state, _State) and state.cond.prompt_embeds.shape[0] == state.plan.samples
    with pytest.raises(ParamError, match="positive weight"):
        sd_engine.prepare(spec("x", parts=(("fog", -1.0),)))


def test_a_latent_consistency_model_averages_the_parts() -> None:
    """No CFG branch: the parts' predictions are weighted (the formula at cfg 1), each with the guidance
    embedding in its rows; negative parts, like --no, have nothing to push there. So a part twice, at half
    weight each, with a negative part beside, is the part alone."""
    engine = engine_from(tiny_sd(seed=2, time_cond_proj_dim=8))
    lcm: dict[str, object] = {"sampler": "lcm", "num_inference_steps": 3, "guidance_scale": 6.0}
    parts = (("a red lighthouse", 0.5), ("a blue boat", 0.5), ("fog", -0.25))
    state = engine.prepare(spec("x", parts=parts, **lcm))
    assert isinstance(state, _State) and state.plan.samples == 2 * 2
    assert state.cond.timestep_cond is not None and state.cond.timestep_cond.shape[0] == 4
    twice = (("a red lighthouse", 0.5), ("a red lighthouse", 0.5), ("fog", -0.25))
    single = engine.generate(spec("a red lighthouse", **lcm)).images
    assert_close_pixels(engine.generate(spec("x", parts=twice, **lcm)).images, single, COMBINED, "LCM")


def test_stop_finishes_early_with_the_models_prediction(sd_engine: DiffusionEngine) -> None:
    """--stop 50 of 6 DDIM steps: three UNet calls, and the latents are the clean picture the model
    predicted at the third, which DDIM's own step (eta 0) pins down from x_t and x_t-1."""
    full, stopped = spec("a tower", sampler="ddim"), spec("a tower", sampler="ddim", stop=50)
    assert sd_engine.plan(stopped).steps == 3 and sd_engine.plan(replace(stopped, stop=51)).steps == 4
    a, b = sd_engine.prepare(full), sd_engine.prepare(stopped)
    assert isinstance(a, _State) and isinstance(b, _State) and b.plan.steps == 3
    for _ in range(2):
        sd_engine.step([a, b])
    assert torch.allclose(a.latents, b.latents, atol=1e-6)
    x_t, t = a.latents, int(a.timesteps[2])
    sd_engine.step([a])
    sd_engine.step([b])
    assert b.done and not a.done
    alphas = a.scheduler.alphas_cumprod.double()
    a_t, a_prev = alphas[t], alphas[t - 1000 // 6]
    # x = sqrt(a) x0 + sqrt(1 - a) eps at both levels, with the same eps: solve for x0
    x0 = ((1 - a_prev).sqrt() * x_t.double() - (1 - a_t).sqrt() * a.latents.double()) / (
        (1 - a_prev).sqrt() * a_t.sqrt() - (1 - a_t).sqrt() * a_prev.sqrt()
    )
    assert torch.allclose(b.latents.double(), x0, atol=1e-4)
    assert len(sd_engine.finish(b).images) == 2  # decoded by the VAE, as a finished job's latents are
    # --stop 100 is every step: the run it always was
    assert sd_engine.generate(replace(stopped, stop=100)).images[0].tobytes() == (
        sd_engine.generate(full).images[0].tobytes()
    )


def test_a_chaos_tile_is_remade_by_its_seed_and_chaos_alone(sd_engine: DiffusionEngine) -> None:
    grid = sd_engine.generate(spec("a tower", seeds=(5, 6, 7, 8), chaos=60)).images
    alone = sd_engine.generate(spec("a tower", seeds=(7,), chaos=60)).images
    # the same tile in a UNet batch of two rows against eight
    assert_close_pixels(grid[2:3], alone, BATCHED, "tile 3 of a --chaos 60 grid against its seed alone")
    assert_different_pictures(alone, sd_engine.generate(spec("a tower", seeds=(7,))).images, at_least=8)
    plain = spec("a tower", seeds=(5, 6))
    assert [i.tobytes() for i in sd_engine.generate(replace(plain, chaos=0)).images] == [
        i.tobytes() for i in sd_engine.generate(plain).images
    ]


CHAOS_PROMPTS = (
    "a small red circle on a blue background, top left",
    "a large green square on a yellow background",
    "a purple triangle on a white background",
    "a medium orange star on a black background, bottom right",
)


@pytest.mark.slow
def test_chaos_spreads_a_grids_images_apart() -> None:
    """The embedded model (it draws what it is told, so its grids are alike): the mean pairwise difference of
    a grid's four images, over 16 grids (four prompts, four seeds), grows with --chaos, same seeds throughout.
    One grid alone is too noisy a measure (a tile whose background flips dominates it); 16 make it steady."""
    from imaginebot.config import EMBEDDED_MODEL
    from imaginebot.engine.loading import load_engine

    engine = load_engine(EMBEDDED_MODEL, device="cpu", dtype="float32")
    levels, seeds = (0, 50, 100), (1, 100, 5000, 7)
    specs = [
        GenerateSpec(prompt, width=64, height=64, num_inference_steps=4, guidance_scale=5.0,
                     seeds=tuple(seed + i for i in range(4)), chaos=chaos)
        for chaos in levels for prompt in CHAOS_PROMPTS for seed in seeds
    ]  # fmt: skip
    states = [engine.prepare(s) for s in specs]
    while not states[0].done:
        engine.step(states)  # all of them in one UNet call a step: the same pixels as alone, sooner
    grids = [engine.finish(state).images for state in states]

    def spread(images: tuple[Image.Image, ...]) -> float:
        pixels = [np.asarray(image, dtype=np.float32) for image in images]
        return float(np.mean([np.abs(a - b).mean() for i, a in enumerate(pixels) for b in pixels[i + 1 :]]))

    per_level = len(CHAOS_PROMPTS) * len(seeds)
    means = [np.mean([spread(g) for g in grids[i * per_level : (i + 1) * per_level]]) for i in range(3)]
    print("mean pairwise difference at chaos 0, 50, 100:", [round(float(m), 1) for m in means])
    # measured: about 41, 51 and 55 of 255, and over 24 grids of six steps 28, 39 and 48: each level above the
    # one before by far more than the float rounding of another CPU could move a mean of 16 grids
    assert means[0] < means[1] < means[2]
    assert means[2] > 1.2 * means[0]
