"""What a job will take of a batched UNet call, from the model's configs alone (no torch, no weights).

The bot plans every job when it is queued, to admit it where it fits; with Ray workers the bot holds no
engine, so planning needs only the model folder's ``unet/config.json`` and ``vae/config.json`` (for a single
file, those that ship for its kind).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from imaginebot.engine.api import GenerateSpec, Plan, Task
from imaginebot.engine.lora_files import lora_set

VARY_STRENGTH = 0.6  # V1-V4: keeps the composition and colours, changes the details
UPSCALE_STRENGTH = 0.3  # U1-U4: "hires fix", sharpens the enlarged tile without redrawing it
IMG2IMG_STRENGTH = 0.8  # an init image with no strength given: the default of diffusers' img2img pipeline
MASKED_STRENGTH = 1.0  # inpainting and outpainting: the masked area is drawn anew
# A UNet call on latents more than this many times the native side is made in overlapping tiles of the
# native side (an Upscale (Subtle/Creative) to 2048 px): the model draws best at its native size, and
# attention's memory grows with the square of the pixel count.
TILED_ABOVE = 2
# A negative part of this weight (of the positive parts' sum) does what --no does: "fog::-0.5" = "--no fog",
# as in Midjourney.
NO_WEIGHT = 0.5


@dataclass(frozen=True)
class Layout:
    """A job's rows in the UNet batch: blocks of one row per image, in this order. With classifier-free
    guidance: the negative prompt (--no, or the empty prompt), the empty prompt again where --no and negative
    parts are both given, then the positive parts, then the negative parts; without it, the positive parts.

    The predictions combine as composable diffusion (Liu et al., 2022), with the negative prompt in the place
    of the unconditional one, as classifier-free guidance has it in every SD pipeline:

        ε_neg = ε_no + Σⱼ (|vⱼ| / 0.5) (εⱼ − ε_uncond)          negative parts vⱼ push the negative side
        ε     = ε_neg + cfg · Σᵢ wᵢ (εᵢ − ε_neg)                 positive parts wᵢ, Σ wᵢ = 1

    so "a:: fog::-0.5" is "a --no fog" (ε_neg = ε_fog), and the two together push away from both. Without
    guidance (cfg 1 or less, a latent consistency model) ε = Σᵢ wᵢ εᵢ: the formula at cfg 1, where the
    negative side drops out, as --no always has there.
    """

    do_cfg: bool
    positive: tuple[float, ...]  # the positive parts' weights, adding up to 1
    negative: tuple[float, ...] = ()  # each negative part's pull, |v| / NO_WEIGHT (with guidance only)
    empty_block: bool = False  # the empty prompt has its own block (--no and negative parts together)

    @classmethod
    def of(cls, spec: GenerateSpec, do_cfg: bool) -> Layout:
        if not spec.parts:
            return cls(do_cfg, (1.0,))
        positive = tuple(weight for _, weight in spec.parts if weight > 0)
        if not do_cfg:
            return cls(do_cfg, positive)
        negative = tuple(-weight / NO_WEIGHT for _, weight in spec.parts if weight < 0)
        return cls(do_cfg, positive, negative, empty_block=bool(negative and spec.negative_prompt))

    @property
    def composed(self) -> bool:
        """Several parts: combined by ``engine.compose``; one part runs the plain guidance step."""
        return len(self.positive) + len(self.negative) > 1

    @property
    def blocks(self) -> int:
        """Rows per image."""
        return int(self.do_cfg) + int(self.empty_block) + len(self.positive) + len(self.negative)

    def texts(self, spec: GenerateSpec) -> list[str]:
        """The text of each block, in order ("" for the empty prompt)."""
        positive = [text for text, weight in spec.parts if weight > 0] or [spec.prompt]
        negative = [text for text, weight in spec.parts if weight < 0] if self.do_cfg else []
        first = [spec.negative_prompt] if self.do_cfg else []
        return first + ([""] if self.empty_block else []) + positive + negative


@dataclass(frozen=True)
class Planner:
    native_size: int  # pixels
    vae_scale_factor: int
    guidance_embedded: bool  # a distilled UNet (LCM) takes guidance as an input: no CFG branch
    upscale_max_side: int = 2048

    @classmethod
    def from_configs(
        cls, unet: Mapping[str, Any], vae: Mapping[str, Any], upscale_max_side: int = 2048
    ) -> Planner:
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        sample_size = unet["sample_size"]
        side = sample_size if isinstance(sample_size, int) else sample_size[0]
        return cls(
            native_size=int(side) * factor,
            vae_scale_factor=factor,
            guidance_embedded=unet.get("time_cond_proj_dim") is not None,
            upscale_max_side=upscale_max_side,
        )

    @classmethod
    def from_folder(cls, folder: str | Path, upscale_max_side: int = 2048) -> Planner:
        """A diffusers-format model folder."""
        unet, vae = (
            json.loads((Path(folder) / part / "config.json").read_text()) for part in ("unet", "vae")
        )
        return cls.from_configs(unet, vae, upscale_max_side=upscale_max_side)

    @classmethod
    def from_checkpoint(cls, path: str | Path, upscale_max_side: int = 2048) -> Planner:
        """A single-file checkpoint (.safetensors, .ckpt): the shipped configs of its kind, by its header."""
        from imaginebot.engine.single_file import model_configs

        unet, vae = model_configs(path)
        return cls.from_configs(unet, vae, upscale_max_side=upscale_max_side)

    def uses_cfg(self, spec: GenerateSpec) -> bool:
        return spec.guidance_scale > 1.0 and not self.guidance_embedded

    @property
    def native_latent(self) -> int:
        return self.native_size // self.vae_scale_factor

    def tiled(self, latent_height: int, latent_width: int) -> bool:
        """Whether a UNet call on latents of this size is made in tiles."""
        return max(latent_height, latent_width) > TILED_ABOVE * self.native_latent

    def upscaled_size(self, width: int, height: int) -> tuple[int, int]:
        """2x, the longest side capped at ``upscale_max_side``, rounded down to the size multiple."""
        scale = min(2.0, self.upscale_max_side / max(width, height))
        m = self.vae_scale_factor
        return max(m, int(width * scale) // m * m), max(m, int(height * scale) // m * m)

    def plan(self, spec: GenerateSpec, task: Task = "generate") -> Plan:
        if task == "upscale" and spec.init_image is not None:
            width, height = self.upscaled_size(spec.init_image.width, spec.init_image.height)
            spec = replace(spec, width=width, height=height, seeds=spec.seeds[:1])
        f = self.vae_scale_factor
        latent_height, latent_width = spec.height // f, spec.width // f
        samples = spec.num_images * Layout.of(spec, self.uses_cfg(spec)).blocks
        native = (self.native_size // f) ** 2
        steps = spec.num_inference_steps
        if spec.init_image is not None or task != "generate":
            steps = img2img_steps(steps, strength(spec, task))
        steps = stopped_steps(steps, spec.stop)
        return Plan(
            # circular padding (--tile) and the LoRAs switched on are set for a whole UNet call
            group=(latent_height, latent_width, spec.tile, lora_set(spec.loras)),
            samples=samples,
            cost=samples * latent_height * latent_width / native,
            steps=steps,
        )


def strength(spec: GenerateSpec, task: Task) -> float:
    """The img2img strength in effect: the spec's, or the task's default."""
    if spec.strength is not None:
        return spec.strength
    if spec.mask_image is not None:
        return MASKED_STRENGTH
    return {"generate": IMG2IMG_STRENGTH, "vary": VARY_STRENGTH, "upscale": UPSCALE_STRENGTH}[task]


def img2img_steps(num_inference_steps: int, strength: float) -> int:
    """img2img runs the last ``strength`` of the schedule, and always at least one step (as diffusers)."""
    return max(1, min(int(num_inference_steps * strength), num_inference_steps))


def stopped_steps(steps: int, stop: int) -> int:
    """--stop: the first ``stop`` percent of a job's steps, at least one."""
    return max(1, min(steps, math.ceil(steps * stop / 100)))
