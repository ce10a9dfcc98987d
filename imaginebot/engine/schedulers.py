"""The prompt language's sampler names -> diffusers schedulers, one fresh instance per job.

Schedulers keep state (``_step_index``, the multistep solvers' history), so a scheduler is never shared
between jobs: each job builds its own from the checkpoint's scheduler config with ``from_config``, which keeps
the checkpoint's betas, timestep spacing and ``prediction_type`` (epsilon or v-prediction).
"""

from __future__ import annotations

import importlib.util
import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)

from imaginebot.engine._types import Scheduler
from imaginebot.engine.api import SAMPLERS
from imaginebot.errors import ParamError

# name -> (scheduler class, settings layered over the checkpoint's config)
_SCHEDULERS: dict[str, tuple[Scheduler, dict[str, Any]]] = {
    # Latents are not in [-1, 1]: clipping the predicted x0 there (DDIM's default) would wreck them;
    # diffusers' StableDiffusionPipeline turns it off the same way for configs that do not say.
    "ddim": (DDIMScheduler, {"clip_sample": False}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": (UniPCMultistepScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    # a latent consistency model's (or an LCM-LoRA's) own sampler, for 2-8 steps
    "lcm": (LCMScheduler, {}),
}
assert tuple(_SCHEDULERS) == SAMPLERS, "every sampler name of the prompt language needs a scheduler"


def make_scheduler(sampler: str, config: Mapping[str, Any]) -> Scheduler:
    """A new scheduler for one job, named by the prompt language (``--sampler``)."""
    try:
        cls, overrides = _SCHEDULERS[sampler]
    except KeyError:
        raise ParamError(f"sampler {sampler!r} is not known; use one of: {', '.join(SAMPLERS)}") from None
    if sampler == "lms" and importlib.util.find_spec("scipy") is None:
        raise ParamError("sampler 'lms' needs SciPy, which is not installed here; choose another sampler")
    return cls.from_config(dict(config), **overrides)


def step_kwargs(scheduler: Scheduler, generator: list[torch.Generator]) -> dict[str, Any]:
    """As diffusers' ``prepare_extra_step_kwargs``: ``eta`` (DDIM, 0) and the per-tile generators."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def alpha_bars(scheduler: Scheduler, timesteps: torch.Tensor, begin_index: int) -> list[float]:
    """Cumulative alpha at each step of this job, computed on the host once so previews never sync."""
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, torch.Tensor):
        s = sigmas.detach().to("cpu", torch.float64)
        return [1.0 / (1.0 + float(s[begin_index + i]) ** 2) for i in range(len(timesteps))]
    alphas_cumprod = scheduler.alphas_cumprod.detach().to("cpu", torch.float64)
    return [float(alphas_cumprod[int(t)]) for t in timesteps.to("cpu")]


def guidance_embedding(guidance_scale: float, dim: int, rows: int) -> torch.Tensor:
    """A distilled LCM UNet's guidance input (``timestep_cond``), as diffusers' LCM pipeline makes it: the
    sinusoidal embedding of ``1000 * (w - 1)``, one row per image."""
    w = torch.full((rows,), (guidance_scale - 1.0) * 1000.0)
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angles = w[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(embedding, (0, 1)) if dim % 2 else embedding
