"""The engine's public contract: what the executor hands in and gets back.

Nothing here knows Discord. The executor (the one bridge to the event loop) calls an ``Engine`` from its
worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

# The prompt language's sampler names (``--sampler``); the engine maps each to a diffusers scheduler.
SAMPLERS: tuple[str, ...] = ("ddim", "euler", "euler_a", "dpm++2m", "dpm++2m_karras", "unipc", "lms")
DEFAULT_SAMPLER = "euler_a"


@dataclass(frozen=True)
class GenerateSpec:
    """One job for the engine: txt2img, or img2img when ``init_image`` is set.

    Tile *i* is made from ``torch.Generator().manual_seed(seeds[i])`` alone, so any one tile can be re-made
    by itself with the same seed.
    """

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    num_inference_steps: int = 30
    guidance_scale: float = 7.0
    sampler: str = DEFAULT_SAMPLER
    seeds: tuple[int, ...] = (0,)
    init_image: Image.Image | None = field(default=None, compare=False)
    # img2img: how much noise is added to init_image (1.0: start from pure noise); None: the engine's choice
    # for what it is asked to do (variations 0.6, upscales a light refinement)
    strength: float | None = None

    @property
    def num_images(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class Preview:
    """A cheap preview of all tiles at one step (latent->RGB approximation of the predicted x0)."""

    step: int  # steps done so far, 1-based
    total: int
    image: Image.Image  # the tiles laid out as the final grid will be


@dataclass(frozen=True)
class GenerateResult:
    images: tuple[Image.Image, ...]
    seeds: tuple[int, ...]
    elapsed_s: float
    note: str = ""  # said to the user, e.g. "upscaled by a plain resize: not enough GPU memory"


PreviewCallback = Callable[[Preview], None]
CancelCheck = Callable[[], bool]


class Engine(Protocol):
    """What the executor needs from an engine. Every method runs on the worker thread and may block."""

    @property
    def native_size(self) -> int:
        """The model's native side in pixels (512 for SD 1.5, 1024 for SDXL, 64 for the embedded model)."""
        ...

    def generate(
        self,
        spec: GenerateSpec,
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
        should_cancel: CancelCheck | None = None,
    ) -> GenerateResult:
        """Run the diffusion loop. Raises GenerationCancelled, OutOfMemory or GenerationFailed."""
        ...

    def vary(
        self,
        image: Image.Image,
        spec: GenerateSpec,
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
        should_cancel: CancelCheck | None = None,
    ) -> GenerateResult:
        """Variations of ``image``: img2img at ``spec.strength`` (None: about 0.6), one tile per seed."""
        ...

    def upscale(
        self,
        image: Image.Image,
        spec: GenerateSpec,
        *,
        should_cancel: CancelCheck | None = None,
    ) -> GenerateResult:
        """One image enlarged 2x (longest side capped) and refined by low-strength img2img."""
        ...
