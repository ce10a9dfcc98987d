"""Midjourney's editing tools on an upscale, as jobs: Zoom Out, Pan, Make Square and Vary (Region).

Each is one ``Edit`` (stored with its job); here is how an edit turns its parent's picture into the canvas,
the mask and the size the engine draws at. The job service derives the jobs (``imaginebot.jobs``); the
geometry is ``imaginebot.engine.canvas``'s.

Zoom, Pan and Make Square draw at about the model's native pixel count (a grid of four, like /imagine), with
the picture shrunk to fit; Vary (Region) redraws the cells in the picture at its own size.
"""

from __future__ import annotations

import math

from PIL import Image

from imaginebot.engine import canvas
from imaginebot.engine.canvas import Canvas, Direction
from imaginebot.errors import ImagineError
from imaginebot.params import MAX_ASPECT, size_for_aspect
from imaginebot.store_models import Edit, EditKind

ZOOM_RANGE = (1.0, 2.0)  # Custom Zoom's factor, as Midjourney's
ARROWS = {Direction.LEFT: "⬅️", Direction.RIGHT: "➡️", Direction.UP: "⬆️", Direction.DOWN: "⬇️"}
CELL_NAMES = (
    "top left",
    "top",
    "top right",
    "left",
    "middle",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)


def describe(edit: Edit) -> str:
    """The tool's name as its button says it."""
    match edit.kind:
        case EditKind.ZOOM:
            return f"Zoom Out {edit.factor:g}x"
        case EditKind.PAN:
            assert edit.direction is not None
            return f"Pan {ARROWS[edit.direction]}"
        case EditKind.SQUARE:
            return "Make Square"
        case EditKind.REGION:
            return f"Vary (Region) of {', '.join(CELL_NAMES[c - 1] for c in edit.cells)}"


def check(edit: Edit) -> None:
    """The one check of an edit's values (buttons, the Custom Zoom modal, the region menu)."""
    low, high = ZOOM_RANGE
    if edit.kind is EditKind.ZOOM and not (math.isfinite(edit.factor) and low <= edit.factor <= high):
        raise ImagineError(
            f"The zoom factor must be a number from {low:g} to {high:g}; you gave {edit.factor:g}."
        )
    if edit.kind is EditKind.PAN and edit.direction is None:
        raise ValueError("a pan needs a direction")
    if edit.kind is EditKind.REGION:
        if not edit.cells:
            raise ImagineError("Choose at least one part of the picture to redraw.")
        if any(not 1 <= c <= len(CELL_NAMES) for c in edit.cells):
            raise ImagineError(f"The parts of the picture are numbered 1 to {len(CELL_NAMES)}.")


def aspect(edit: Edit, picture: tuple[int, int], asked: tuple[int, int]) -> tuple[int, int]:
    """The aspect ratio of the result: ``asked`` (the prompt's --ar) for a zoom, the picture's own
    extended for a pan, square for Make Square, the picture's for a region."""
    match edit.kind:
        case EditKind.ZOOM:
            return asked
        case EditKind.PAN:
            assert edit.direction is not None
            width, height = canvas.pan_aspect(picture, edit.direction)
        case EditKind.SQUARE:
            width, height = 1, 1
        case EditKind.REGION:
            width, height = picture
    divisor = math.gcd(width, height)
    width, height = width // divisor, height // divisor
    if width > MAX_ASPECT * height or height > MAX_ASPECT * width:
        raise ImagineError(
            f"That would make the picture more than {MAX_ASPECT} times as wide as it is high (or high as it "
            "is wide), the most this bot draws; pan the other way, or zoom out."
        )
    return width, height


def size(edit: Edit, picture: tuple[int, int], asked: tuple[int, int], native_side: int) -> tuple[int, int]:
    """Width and height the engine draws the edit at."""
    if edit.kind is EditKind.REGION:
        return picture
    return size_for_aspect(aspect(edit, picture, asked), native_side)


def make_canvas(edit: Edit, picture: Image.Image, size: tuple[int, int]) -> Canvas:
    match edit.kind:
        case EditKind.ZOOM:
            return canvas.zoom_out(picture, edit.factor, size)
        case EditKind.PAN:
            assert edit.direction is not None
            return canvas.pan(picture, edit.direction, size)
        case EditKind.SQUARE:
            return canvas.make_square(picture, size)
        case EditKind.REGION:
            return canvas.region(picture, edit.cells)
