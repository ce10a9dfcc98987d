"""Safety checkers with random weights, built by the tests: diffusers' ``StableDiffusionSafetyChecker`` on a
tiny CLIPConfig, saved with ``save_pretrained`` as a folder that the bot's own loading code reads (shared by
the engine's tests, the bot's and the Ray workers')."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig

from imaginebot.engine.safety import CLIPImageProcessor

# An image is flagged when its cosine similarity to a concept, at most 1, passes the concept's threshold:
# a threshold of -2 flags every image, one of 2 none. The three "special care" thresholds only lower the
# others by 0.01 when they are passed: at 2, never.
FLAGS_EVERYTHING, FLAGS_NOTHING = -2.0, 2.0


def save_checker(folder: Path, *, flags: bool, pipeline_layout: bool = False) -> Path:
    """A checker that flags every image (``flags``) or none, in ``folder``: the checker's own layout
    (config.json, weights and preprocessor_config.json together) or a pipeline's (``safety_checker/`` and
    ``feature_extractor/``). Returns ``folder``."""
    torch.manual_seed(0)
    config = CLIPConfig(
        # the text tower is never built by the checker; the vocabulary only keeps the config consistent
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(FLAGS_EVERYTHING if flags else FLAGS_NOTHING)
        checker.special_care_embeds_weights.fill_(FLAGS_NOTHING)
    weights, processor = folder, folder
    if pipeline_layout:
        weights, processor = folder / "safety_checker", folder / "feature_extractor"
    checker.save_pretrained(weights)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        processor
    )
    return folder
