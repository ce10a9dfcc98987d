"""The diffusion engine: torch, diffusers and transformers; nothing of Discord.

``load_engine(model)`` gives a ``DiffusionEngine`` (the ``Engine`` protocol of ``api``) that the executor
drives from its worker thread.
"""

from imaginebot.engine.api import (
    DEFAULT_SAMPLER,
    SAMPLERS,
    CancelCheck,
    Engine,
    GenerateResult,
    GenerateSpec,
    Preview,
    PreviewCallback,
)
from imaginebot.engine.loading import find_model_folder, load_engine
from imaginebot.engine.pipeline import DiffusionEngine

__all__ = [
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "CancelCheck",
    "DiffusionEngine",
    "Engine",
    "GenerateResult",
    "GenerateSpec",
    "Preview",
    "PreviewCallback",
    "find_model_folder",
    "load_engine",
]
