"""The loop's spatial tools, apart from the loop itself: a UNet call in overlapping windows (large upscales),
circular padding (``--tile``) and a pixel mask at the latents' size (inpainting and outpainting).

Plain functions over torch tensors and modules; ``DiffusionEngine`` (pipeline.py) calls them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def tiled(predict: Callable[[torch.Tensor], torch.Tensor], sample: torch.Tensor, tile: int) -> torch.Tensor:
    """``predict`` over overlapping windows of ``tile`` latents, as MultiDiffusion (Bar-Tal et al., 2023),
    each prediction weighted down towards its window's edges. Noise predictions are averaged rather than
    whole steps, so each job keeps its one scheduler."""
    height, width = sample.shape[-2:]
    overlap = tile // 4
    noise_pred: torch.Tensor | None = None
    total = torch.zeros((1, 1, height, width), device=sample.device, dtype=torch.float32)
    for y in window_starts(height, tile, overlap):
        for x in window_starts(width, tile, overlap):
            rows, columns = slice(y, y + min(tile, height)), slice(x, x + min(tile, width))
            pred = predict(sample[..., rows, columns])
            weights = window_weights(pred.shape[-2], pred.shape[-1], overlap).to(sample.device)
            if noise_pred is None:
                noise_pred = torch.zeros(
                    (*pred.shape[:2], height, width), device=sample.device, dtype=torch.float32
                )
            noise_pred[..., rows, columns] += pred.float() * weights
            total[..., rows, columns] += weights
    assert noise_pred is not None
    return (noise_pred / total).to(sample.dtype)


def window_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where windows of ``tile`` start along ``length``, ``overlap`` apart at least, the last at the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return [*starts, length - tile]


def window_weights(height: int, width: int, overlap: int) -> torch.Tensor:
    """A window's weights: 1 in the middle, falling linearly over ``overlap`` towards each edge (never 0)."""

    def ramp(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32)
        return torch.minimum(torch.minimum(i + 1, n - i), torch.tensor(float(max(overlap, 1))))

    return (ramp(height)[:, None] * ramp(width)[None, :])[None, None]


def padded_convs(module: torch.nn.Module) -> tuple[torch.nn.Conv2d, ...]:
    """The convolutions of ``module`` that pad their input: what ``circular`` switches."""
    return tuple(
        conv
        for conv in module.modules()
        if isinstance(conv, torch.nn.Conv2d) and any(conv._reversed_padding_repeated_twice)
    )


@contextlib.contextmanager
def circular(convs: Sequence[torch.nn.Conv2d]) -> Iterator[None]:
    """--tile: ``convs`` wrap around the picture's edges while the block runs, so the picture tiles
    seamlessly (A1111's "Tiling" does the same)."""
    for conv in convs:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv in convs:
            conv.padding_mode = "zeros"


def latent_mask(mask_image: Image.Image, factor: int) -> torch.Tensor:
    """A pixel mask (white: draw) at the latents' size, 1 or 0: a latent pixel is drawn anew if any of its
    ``factor``×``factor`` pixels is, so the kept latents cover only what is wholly kept."""
    mask = torch.from_numpy(np.asarray(mask_image.convert("L"), dtype=np.float32) / 255.0)[None, None]
    return (F.max_pool2d(mask, factor) > 0).float()
