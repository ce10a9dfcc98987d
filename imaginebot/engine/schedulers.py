"""The prompt language's sampler names -> diffusers schedulers, one fresh instance per job.

Schedulers keep state (``_step_index``, the multistep solvers' history), so a scheduler is never shared
between jobs: each job builds its own from the checkpoint's scheduler config with ``from_config``, which keeps
the checkpoint's betas, timestep spacing and ``prediction_type`` (epsilon or v-prediction).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
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
