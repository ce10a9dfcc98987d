"""A multi-prompt's noise predictions combined (composable diffusion), and --chaos's spread of a grid's tiles.

Both act on one job's own rows only, so a job's pixels never depend on its neighbours in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from imaginebot.engine.planning import Layout

# --chaos 100 mixes this much low-frequency noise into each tile's starting noise (its standard deviation
# against the noise's own 1, before the mix is scaled back to unit variance): the coarse layout and the
# colours of a picture are settled by the low frequencies of its first latents, which independent white
# noise hardly varies (over a 16×16 latent its mean moves by 1/16).
CHAOS_NOISE = 1.0
# --chaos 100 moves each tile's prompt embeddings by this much Gaussian noise, per token, against the
# token's own root mean square: the prompt is read a little differently in every tile.
CHAOS_CONDITIONING = 1.0
CHAOS_COARSE = 4  # the low-frequency field is drawn at 1/4 of the latent's side, then enlarged
# Each tile's chaos draws come from its own generators, seeded from the tile's seed with these in the upper
# 32 bits (seeds are 32-bit), so that they never repeat the tile's noise and any tile is re-made by itself.
_CONDITIONING_STREAM, _NOISE_STREAM = 1 << 32, 2 << 32


def combine(noise_pred: torch.Tensor, layout: Layout, guidance_scale: float) -> torch.Tensor:
    """One job's predictions, ``layout.blocks`` blocks of its images' rows, as ``planning.Layout`` says."""
    chunks = noise_pred.chunk(layout.blocks)
    first = int(layout.do_cfg) + int(layout.empty_block)
    positive = chunks[first : first + len(layout.positive)]
    noise_pred_text = _weighted(positive, layout.positive)
    if not layout.do_cfg:
        return noise_pred_text
    noise_pred_negative = chunks[0]
    noise_pred_uncond = chunks[1] if layout.empty_block else chunks[0]
    for pull, noise_pred_part in zip(layout.negative, chunks[first + len(layout.positive) :], strict=True):
        # the negative side moves toward each negative part, away from the unconditional prediction
        noise_pred_negative = noise_pred_negative + pull * (noise_pred_part - noise_pred_uncond)
    # move away from the negative side, toward the parts, by guidance_scale
    return noise_pred_negative + guidance_scale * (noise_pred_text - noise_pred_negative)


def _weighted(predictions: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    total = predictions[0] * weights[0]
    for prediction, weight in zip(predictions[1:], weights[1:], strict=True):
        total = total + weight * prediction
    return total


def spread_conditioning(
    prompt_embeds: torch.Tensor, layout: Layout, seeds: Sequence[int], chaos: int
) -> torch.Tensor:
    """--chaos: every part's embeddings, moved by tile *i*'s own noise (drawn from its seed) in its rows. The
    negative side stays as it is, and so do SDXL's pooled embeddings: the tokens the UNet attends to are what
    it reads the prompt from."""
    if chaos == 0:
        return prompt_embeds
    batch_size = len(seeds)
    shape = prompt_embeds.shape[1:]
    noise = torch.stack([_draw(shape, seed + _CONDITIONING_STREAM) for seed in seeds])
    noise = noise.to(prompt_embeds.device, prompt_embeds.dtype)
    blocks = list(torch.split(prompt_embeds, batch_size))
    first = int(layout.do_cfg) + int(layout.empty_block)  # the negative side is left as it is
    amount = CHAOS_CONDITIONING * chaos / 100
    for i in range(first, len(blocks)):
        rms = blocks[i].pow(2).mean(dim=-1, keepdim=True).sqrt()
        blocks[i] = blocks[i] + amount * rms * noise
    return torch.cat(blocks)


def spread_noise(latents: torch.Tensor, seeds: Sequence[int], chaos: int) -> torch.Tensor:
    """--chaos: each tile's starting noise with low-frequency noise of its own seed mixed in, at unit
    variance still."""
    if chaos == 0:
        return latents
    channels, height, width = latents.shape[1:]
    coarse_size = (max(1, height // CHAOS_COARSE), max(1, width // CHAOS_COARSE))
    coarse = torch.stack([_draw((channels, *coarse_size), seed + _NOISE_STREAM) for seed in seeds])
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    field = field / field.std(dim=(1, 2, 3), keepdim=True).clamp_min(0.1)
    amount = CHAOS_NOISE * chaos / 100
    mixed = (latents.float() + amount * field.to(latents.device)) / math.sqrt(1 + amount**2)
    return mixed.to(latents.dtype)


def _draw(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Standard normal noise from a CPU generator: the same on any device."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
