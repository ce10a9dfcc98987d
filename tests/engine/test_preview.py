from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from imaginebot.engine import DiffusionEngine, GenerateSpec, Preview
from imaginebot.engine.preview import (
    LatentRGB,
    fit_latent_rgb,
    latents_to_pixels,
    predict_x0,
    published_latent_rgb,
    synthetic_images,
)
from imaginebot.engine.schedulers import make_scheduler
from imaginebot.engine.tiny import TinyComponents, tiny_sd

MakeEngine = Callable[..., DiffusionEngine]


def test_previews_every_k_steps_of_all_tiles(sd_engine: DiffusionEngine) -> None:
    previews: list[Preview] = []
    threads: set[str] = set()

    def on_preview(preview: Preview) -> None:
        threads.add(threading.current_thread().name)
        previews.append(preview)

    spec = GenerateSpec("a cat", width=32, height=32, num_inference_steps=11, seeds=(1, 2, 3, 4))
    result = sd_engine.generate(spec, on_preview=on_preview, preview_every=5)
    # all delivered before generate returns, in order; the final step is the result itself
    assert [(p.step, p.total) for p in previews] == [(5, 11), (10, 11)]
    assert threads and threading.current_thread().name not in threads  # made off the loop's thread
    assert previews[0].image.size == (2 * 32 + 2, 2 * 32 + 2)  # 2x2 grid of 32 px tiles, 2 px gutter
    assert len(result.images) == 4


def test_preview_every_default_is_five(sd_engine: DiffusionEngine) -> None:
    previews: list[Preview] = []
    sd_engine.generate(
        GenerateSpec("a", width=32, height=32, num_inference_steps=6), on_preview=previews.append
    )
    assert [p.step for p in previews] == [5]


@pytest.mark.parametrize(
    ("sampler", "prediction_type"), [("euler", "epsilon"), ("ddim", "epsilon"), ("ddim", "v_prediction")]
)
def test_predicted_x0_matches_the_schedulers_own(
    sd: TinyComponents, sampler: str, prediction_type: str
) -> None:
    """Our x0 (from the model input and the prediction) is the scheduler's ``pred_original_sample``."""
    config = dict(sd.scheduler.config, prediction_type=prediction_type)
    scheduler = make_scheduler(sampler, config)
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((2, 4, 8, 8), generator=generator) * scheduler.init_noise_sigma
    noise_pred = torch.randn((2, 4, 8, 8), generator=generator)
    t = scheduler.timesteps[3]
    for i in range(3):  # walk to step 3 so the step index is right
        scheduler.step(noise_pred, scheduler.timesteps[i], latents)
    latents = torch.randn((2, 4, 8, 8), generator=generator)
    latent_model_input = scheduler.scale_model_input(latents, t)
    sigmas = getattr(scheduler, "sigmas", None)
    alpha_bar = (
        1 / (1 + float(sigmas[3]) ** 2) if sigmas is not None else float(scheduler.alphas_cumprod[int(t)])
    )
    expected = scheduler.step(noise_pred, t, latents).pred_original_sample
    ours = predict_x0(latent_model_input, noise_pred, alpha_bar, prediction_type)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_published_coefficients_only_for_the_sd_vae() -> None:
    sd_vae = SimpleNamespace(latent_channels=4, block_out_channels=[128, 256, 512, 512])
    assert published_latent_rgb(sd_vae, is_sdxl=False).source == "sd1"
    assert published_latent_rgb(sd_vae, is_sdxl=True).source == "sdxl"
    other = SimpleNamespace(latent_channels=4, block_out_channels=[8, 16])
    assert published_latent_rgb(other, is_sdxl=False) is None


def test_fit_recovers_a_known_linear_encoder() -> None:
    """Given an encoder that is exactly affine in the pooled colours, the fit inverts it."""
    mixing = torch.tensor(
        [[0.5, -0.2, 0.1, 0.3, 0.0], [0.1, 0.4, -0.3, 0.0, 0.2], [-0.2, 0.1, 0.6, 0.1, -0.1]]
    )

    def encode(images: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(images, 4)
        return torch.einsum("nrhw,rc->nchw", pooled, mixing) + 0.05

    latent_rgb = fit_latent_rgb(encode, scale_factor=4, size=32)
    test = synthetic_images(3, 32, seed=7)
    pixels = latents_to_pixels(encode(test), latent_rgb).float()
    expected = ((F.avg_pool2d(test, 4).permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255)
    assert (pixels - expected).abs().max() <= 1.0


def test_embedded_style_vae_gets_fitted_coefficients(make_engine: MakeEngine) -> None:
    """3 latent channels, scale factor 4 (like our embedded model): native size and previews still work."""
    c = tiny_sd(latent_channels=3, sample_size=8)
    from imaginebot.engine.tiny import tiny_vae

    c.vae = tiny_vae(3, blocks=(8, 8, 16))
    engine = make_engine(c)
    assert engine.vae_scale_factor == 4
    assert engine.native_size == 32
    assert engine.latent_rgb.source == "fitted"
    assert isinstance(engine.latent_rgb, LatentRGB) and engine.latent_rgb.weight.shape == (3, 3)
    previews: list[Preview] = []
    result = engine.generate(
        GenerateSpec("a", width=32, height=32, num_inference_steps=2, seeds=(1, 2)),
        on_preview=previews.append,
        preview_every=1,
    )
    assert [p.step for p in previews] == [1]
    assert previews[0].image.height == 32 and result.images[0].size == (32, 32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_previews_on_cuda_in_half_precision() -> None:
    """The pinned-memory, event-synchronised preview path and fp16 generation on a real GPU."""
    c = tiny_sd()
    engine = DiffusionEngine.from_components(
        tokenizer=c.tokenizer, text_encoder=c.text_encoder, unet=c.unet, vae=c.vae, scheduler=c.scheduler
    )
    assert engine.device.type == "cuda" and engine.dtype == torch.float16
    previews: list[Preview] = []
    result = engine.generate(
        GenerateSpec("a", width=32, height=32, num_inference_steps=4, seeds=(1, 2, 3, 4)),
        on_preview=previews.append,
        preview_every=2,
    )
    assert [p.step for p in previews] == [2] and len(result.images) == 4
