"""The embedded default model's synthetic world: shapes, captions and the caption vocabulary.

Shared by ``scripts/train_tiny.py`` (which trains the model on it) and the tests (which judge the
model's pictures against it). Nothing here imports torch, so the bot never pays for it at import time.
"""

from imaginebot.tinymodel.shapes import (
    BACKGROUND,
    COLOURS,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    caption,
    is_held_out,
    random_caption,
    random_scene,
    render,
)
from imaginebot.tinymodel.vocab import build_clip_vocab, caption_words

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "build_clip_vocab",
    "caption",
    "caption_words",
    "is_held_out",
    "random_caption",
    "random_scene",
    "render",
]
