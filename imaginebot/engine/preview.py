"""Cheap previews: a linear latent -> RGB map applied to the predicted clean latents x0, off the GPU thread.

A full VAE decode of four 512 px tiles costs ~60 ms on an H100; a (channels x 3) matrix product costs ~0.1 ms.
SD 1.x/2.x and SDXL use the coefficients the community published for their VAE (keturn's fit for SD 1.x,
as ComfyUI's comfy/latent_formats.py and A1111's previews carry it, and a like fit for SDXL). Any other VAE
(another latent channel count or layout, e.g. our embedded model's) gets coefficients fitted once at load: a
least-squares affine map from the VAE's latents to the average colour of the pixels each latent covers, over
a few synthetic images (smooth colour fields and gradients) encoded by that VAE. The fit is deterministic and
kept on the engine for its lifetime.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from imaginebot.engine.api import Preview, PreviewCallback
from imaginebot.engine.grid import make_grid

log = logging.getLogger(__name__)

# rows: latent channels, columns: R, G, B; output in [-1, 1]
SD1_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
SDXL_LATENT_RGB = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)
# The VAE that SD 1.x, 2.x and SDXL share in shape; the published coefficients only hold for it.
_SD_VAE_BLOCKS = (128, 256, 512, 512)
PREVIEW_MAX_SIDE = 256  # preview tiles are shown small in Discord; no need to send more pixels


@dataclass(frozen=True)
class LatentRGB:
    """``rgb = latents . weight + bias`` per pixel of the latent, in [-1, 1]."""

    weight: torch.Tensor  # (latent channels, 3)
    bias: torch.Tensor  # (3,)
    source: str  # "sd1", "sdxl" or "fitted"

    def to(self, device: torch.device) -> LatentRGB:
        return LatentRGB(self.weight.to(device), self.bias.to(device), self.source)


def published_latent_rgb(vae_config: Any, is_sdxl: bool) -> LatentRGB | None:
    """The published coefficients if this VAE is SD's or SDXL's, else None."""
    if vae_config.latent_channels != 4 or tuple(vae_config.block_out_channels) != _SD_VAE_BLOCKS:
        return None
    table = SDXL_LATENT_RGB if is_sdxl else SD1_LATENT_RGB
    return LatentRGB(torch.tensor(table), torch.zeros(3), "sdxl" if is_sdxl else "sd1")


def synthetic_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` smooth colour fields and gradients, (n, 3, size, size) in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 3, 4, 4), generator=generator) * 2 - 1
    fields = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    ramp = torch.linspace(-1, 1, size)
    gradients = torch.rand((n, 3, 1, 1), generator=generator) * ramp.view(1, 1, 1, size)
    return (fields + 0.5 * gradients).clamp(-1, 1)


def fit_latent_rgb(
    encode: Callable[[torch.Tensor], torch.Tensor], scale_factor: int, size: int, n: int = 16
) -> LatentRGB:
    """Least-squares affine map from ``encode(images)`` (N, C, h, w) to the images pooled to (N, 3, h, w)."""
    images = synthetic_images(n, size)
    latents = encode(images).float().cpu()
    target = F.avg_pool2d(images, scale_factor)
    channels = latents.shape[1]
    x = latents.permute(0, 2, 3, 1).reshape(-1, channels)
    x = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
    y = target.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(x.double(), y.double()).solution.float()
    return LatentRGB(solution[:channels].contiguous(), solution[channels].contiguous(), "fitted")


def predict_x0(
    latent_model_input: torch.Tensor, noise_pred: torch.Tensor, alpha_bar: float, prediction_type: str
) -> torch.Tensor:
    """The clean latents the model predicts at this step (a sharper preview than the noisy latents).

    The model input is in variance-preserving form for every scheduler the engine uses (Euler-style ones scale
    x by 1/sqrt(sigma^2 + 1)): x = sqrt(a) x0 + sqrt(1 - a) eps with a = alpha_bar.
    """
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction_type == "v_prediction":
        return a * latent_model_input - s * noise_pred
    if prediction_type == "sample":
        return noise_pred
    return (latent_model_input - s * noise_pred) / a


def latents_to_pixels(latents: torch.Tensor, latent_rgb: LatentRGB) -> torch.Tensor:
    """(B, C, h, w) latents -> (B, h, w, 3) uint8, on the latents' device (no sync)."""
    rgb = torch.einsum("bchw,cr->bhwr", latents.float(), latent_rgb.weight) + latent_rgb.bias
    return ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8)


def preview_tile_size(width: int, height: int, latent_width: int, latent_height: int) -> tuple[int, int]:
    """The final tile's shape, shrunk to ``PREVIEW_MAX_SIDE`` but never below the latent's own size."""
    scale = min(1.0, PREVIEW_MAX_SIDE / max(width, height))
    return max(latent_width, round(width * scale)), max(latent_height, round(height * scale))


class PreviewWorker:
    """Takes preview pixels off the device without waiting for it and makes the pictures on its own thread.

    On CUDA the pixels go to pinned memory with a non-blocking copy and an event; only the worker thread waits
    on that event, so the denoising loop never syncs for a preview.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imaginebot-preview")

    def submit(
        self,
        pixels: torch.Tensor,
        *,
        step: int,
        total: int,
        tile_size: tuple[int, int],
        callback: PreviewCallback,
    ) -> Future[None]:
        """The future is done once ``callback`` has had the preview."""
        event: torch.cuda.Event | None = None
        if pixels.device.type == "cuda":
            host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=True)
            host.copy_(pixels, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record()
        else:
            host = pixels.to("cpu")
        return self._pool.submit(self._deliver, host, event, step, total, tile_size, callback)

    @staticmethod
    def _deliver(
        host: torch.Tensor,
        event: torch.cuda.Event | None,
        step: int,
        total: int,
        tile_size: tuple[int, int],
        callback: PreviewCallback,
    ) -> None:
        if event is not None:
            event.synchronize()
        tiles = [Image.fromarray(tile.numpy()).resize(tile_size, Image.Resampling.BILINEAR) for tile in host]
        try:
            callback(Preview(step=step, total=total, image=make_grid(tiles)))
        except Exception:
            log.exception("the preview callback failed at step %d of %d", step, total)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
