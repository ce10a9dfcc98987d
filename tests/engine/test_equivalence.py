"""Our loop against diffusers' own pipelines on the same tiny components: the same pixels (within STOCK)."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image
from pixels import BATCHED, assert_close_pixels, difference

from imaginebot.engine import SAMPLERS, DiffusionEngine, GenerateSpec, Preview
from imaginebot.engine.schedulers import make_scheduler
from imaginebot.engine.tiny import TinyComponents, tiny_sd

MakeEngine = Callable[..., DiffusionEngine]
SEEDS = (11, 22, 33, 44)
STEPS = 5


# diffusers' pipeline makes the tiles in one batch from one generator list, ours per tile and per step as
# the batcher does: the same math in other batch shapes, so compared as a batch against a job alone.
STOCK = BATCHED


def stock_sd(c: TinyComponents, sampler: str, spec: GenerateSpec) -> list[Image.Image]:
    pipe = StableDiffusionPipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        scheduler=make_scheduler(sampler, c.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return list(
        pipe(
            spec.prompt,
            negative_prompt=spec.negative_prompt or None,
            height=spec.height,
            width=spec.width,
            num_inference_steps=spec.num_inference_steps,
            guidance_scale=spec.guidance_scale,
            num_images_per_prompt=spec.num_images,
            generator=[torch.Generator().manual_seed(s) for s in spec.seeds],
        ).images
    )


HAS_SCIPY = importlib.util.find_spec("scipy") is not None


@pytest.mark.parametrize(
    "sampler",
    [
        pytest.param(name, marks=pytest.mark.skipif(not HAS_SCIPY, reason="diffusers' LMS needs SciPy"))
        if name == "lms"
        else name
        for name in SAMPLERS
    ],
)
def test_sd1_matches_stable_diffusion_pipeline(
    sd: TinyComponents, sampler: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(sd)
    spec = GenerateSpec(
        "a watercolor otter",
        negative_prompt="blur",
        width=32,
        height=32,
        num_inference_steps=STEPS,
        guidance_scale=7.0,
        sampler=sampler,
        seeds=SEEDS,
    )
    previews: list[Preview] = []
    ours = engine.generate(spec, on_preview=previews.append, preview_every=2)  # previews must not perturb
    assert len(previews) == 2
    assert_close_pixels(ours.images, stock_sd(sd, sampler, spec), STOCK)


@pytest.mark.parametrize("sampler", ["ddim", "euler_a", "dpm++2m"])
def test_sd2_v_prediction_matches(sampler: str, make_engine: MakeEngine) -> None:
    c = tiny_sd(seed=1, prediction_type="v_prediction")
    spec = GenerateSpec(
        "a red fox",
        width=32,
        height=32,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        sampler=sampler,
        seeds=SEEDS[:2],
    )
    ours = make_engine(c).generate(spec)
    assert_close_pixels(ours.images, stock_sd(c, sampler, spec), STOCK)


def test_no_guidance_matches(sd: TinyComponents, make_engine: MakeEngine) -> None:
    """guidance_scale <= 1 (SD-Turbo style): no unconditional branch at all, as in diffusers."""
    spec = GenerateSpec(
        "a cat", width=32, height=32, num_inference_steps=3, guidance_scale=1.0, sampler="euler", seeds=(5,)
    )
    ours = make_engine(sd).generate(spec)
    assert_close_pixels(ours.images, stock_sd(sd, "euler", spec), STOCK)


@pytest.mark.parametrize(
    ("sampler", "negative_prompt"),
    [("euler_a", ""), ("dpm++2m_karras", "low quality"), ("unipc", "")],
)
def test_sdxl_matches_stable_diffusion_xl_pipeline(
    sdxl: TinyComponents, sampler: str, negative_prompt: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(sdxl)
    spec = GenerateSpec(
        "an astronaut riding a horse",
        negative_prompt=negative_prompt,
        width=32,
        height=32,
        num_inference_steps=STEPS,
        guidance_scale=6.0,
        sampler=sampler,
        seeds=SEEDS,
    )
    ours = engine.generate(spec)
    pipe = StableDiffusionXLPipeline(
        vae=sdxl.vae,
        text_encoder=sdxl.text_encoder,
        text_encoder_2=sdxl.text_encoder_2,
        tokenizer=sdxl.tokenizer,
        tokenizer_2=sdxl.tokenizer_2,
        unet=sdxl.unet,
        scheduler=make_scheduler(sampler, sdxl.scheduler.config),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    stock = pipe(
        spec.prompt,
        negative_prompt=spec.negative_prompt or None,  # diffusers zeroes the negative branch only for None
        height=spec.height,
        width=spec.width,
        num_inference_steps=spec.num_inference_steps,
        guidance_scale=spec.guidance_scale,
        num_images_per_prompt=spec.num_images,
        generator=[torch.Generator().manual_seed(s) for s in spec.seeds],
    ).images
    assert_close_pixels(ours.images, list(stock), STOCK)


def test_a_latent_consistency_model_matches_diffusers_lcm_pipeline(make_engine: MakeEngine) -> None:
    """A UNet with the guidance as an input: no CFG branch (one row per image), the embedded guidance
    changes the picture, and the pixels are the LCM pipeline's."""
    from diffusers import LatentConsistencyModelPipeline

    c = tiny_sd(seed=2, time_cond_proj_dim=8)
    engine = make_engine(c)
    spec = GenerateSpec("a red fox", width=32, height=32, num_inference_steps=4, guidance_scale=8.5,
                        sampler="lcm", seeds=SEEDS[:2])  # fmt: skip
    assert engine.plan(spec).samples == 2
    ours = engine.generate(spec)
    pipe = LatentConsistencyModelPipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        scheduler=make_scheduler("lcm", c.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    stock = pipe(
        spec.prompt,
        height=32,
        width=32,
        num_inference_steps=4,
        guidance_scale=8.5,
        num_images_per_prompt=2,
        generator=[torch.Generator().manual_seed(s) for s in spec.seeds],
    ).images
    assert_close_pixels(ours.images, stock, STOCK)
    weaker = engine.generate(dataclasses.replace(spec, guidance_scale=2.0))
    # the same code on the same inputs but the guidance: any difference at all is the guidance's
    assert difference(ours.images, weaker.images).max_abs > 0
