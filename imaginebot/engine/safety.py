"""Image moderation on the worker: diffusers' ``StableDiffusionSafetyChecker``, batched.

The checker is what the Stable Diffusion pipelines use to flag images: CLIP's vision tower embeds each
image, and an image is flagged when its cosine similarity to any of 17 concept embeddings passes that
concept's threshold (``concept_embeds_weights``; three "special care" concepts lower the bar). Here it
only flags: the images stay as they are, and the job service holds flagged ones for a moderator.

``IMAGINEBOT_SAFETY_CHECKER`` names a folder in diffusers' layout, loaded offline: the checker's own folder
(``config.json``, its weights and CLIPImageProcessor's ``preprocessor_config.json``, as the hub's
``CompVis/stable-diffusion-safety-checker`` is laid out), or a Stable Diffusion pipeline folder with
``safety_checker/`` and ``feature_extractor/``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image

from imaginebot.engine.devices import resolve_device, resolve_dtype
from imaginebot.errors import ModelNotFound

log = logging.getLogger(__name__)

# CLIP's image preprocessing. transformers 5 names its Pillow implementation apart and logs a warning when
# the plain name has to fall back to it for want of torchvision; older versions have only the plain name.
CLIPImageProcessor: Any = (
    getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
)


class SafetyChecker:
    """A ``SafetyCheck`` (``engine.api``) over diffusers' checker, on one device."""

    def __init__(self, checker: StableDiffusionSafetyChecker, processor: Any, device: torch.device) -> None:
        module: Any = checker  # transformers' typing of .to() confuses mypy
        module.to(device=device).eval().requires_grad_(False)
        self.checker = checker
        self.processor = processor
        self.device = device

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        if not images:
            return []
        pixels = self.processor([image.convert("RGB") for image in images], return_tensors="pt")
        clip_input = pixels.pixel_values.to(device=self.device, dtype=self.checker.dtype)
        with torch.inference_mode():
            # forward_onnx is forward's vectorised twin (the same scores and thresholds, not rounded to three
            # decimals); forward would also black out the images it is given and log that it did so.
            _, flagged = self.checker.forward_onnx(
                clip_input, torch.zeros(len(images), 1, device=self.device)
            )
        return [bool(flag) for flag in flagged.tolist()]


def load_safety_checker(
    path: str | os.PathLike[str], *, device: str | None = None, dtype: str | None = None
) -> SafetyChecker:
    """The checker in ``path`` (see the module's docstring), offline, on ``device`` in ``dtype`` ("auto":
    fp16 on a GPU, fp32 on the CPU, as the engine). Raises ModelNotFound saying what is missing."""
    folder = Path(path).expanduser()
    weights, processor = folder, folder
    if (folder / "safety_checker").is_dir():  # a pipeline's folder
        weights, processor = folder / "safety_checker", folder / "feature_extractor"
    for needed in (weights / "config.json", processor / "preprocessor_config.json"):
        if not needed.is_file():
            raise ModelNotFound(
                f"IMAGINEBOT_SAFETY_CHECKER={path} is not a safety checker folder: it has no {needed.name} "
                f"in {needed.parent} (a StableDiffusionSafetyChecker folder in diffusers' layout, with its "
                "CLIPImageProcessor's preprocessor_config.json, or a pipeline folder with safety_checker/ "
                "and feature_extractor/)"
            )
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    log.info("loading the safety checker from %s on %s as %s", weights, torch_device, torch_dtype)
    try:
        checker = StableDiffusionSafetyChecker.from_pretrained(
            weights, local_files_only=True, dtype=torch_dtype
        )
        image_processor = CLIPImageProcessor.from_pretrained(processor, local_files_only=True)
    except OSError as error:  # no weights file, or one that is not what its config says
        raise ModelNotFound(f"The safety checker in {weights} could not be loaded: {error}") from error
    return SafetyChecker(checker, image_processor, torch_device)
