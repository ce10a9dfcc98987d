"""The diffusion engine: torch, diffusers and transformers; nothing of Discord.

``load_engine(model)`` gives a ``DiffusionEngine`` (the ``Engine`` protocol of ``api``) that the executor
drives from its worker thread.

torch and diffusers are imported on first use of ``load_engine``/``DiffusionEngine``/
``find_model_folder``, not on ``import imaginebot.engine``: the prompt parser, the store and the cogs use
``api``'s plain types, and should not pay seconds of torch import for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from imaginebot.engine.loading import find_model_folder, load_engine
    from imaginebot.engine.pipeline import DiffusionEngine

_LAZY = {
    "load_engine": "imaginebot.engine.loading",
    "find_model_folder": "imaginebot.engine.loading",
    "DiffusionEngine": "imaginebot.engine.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
