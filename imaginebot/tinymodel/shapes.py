"""Captioned pictures of one flat shape on a flat background, drawn in code.

"a small red circle on a blue background, top left" — five shapes, eight colours (any colour on any
other), two sizes, five positions, with a little jitter in place, size and angle so that no two
pictures are the same. A fixed tenth of the (shape, colour, background) triples is never trained on:
the tests prompt the model with those.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
# Far apart in RGB so that "the nearest palette colour" is a fair judge of a generated pixel.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 170, 60),
    "blue": (35, 75, 215),
    "purple": (140, 50, 170),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("center", "top left", "top right", "bottom left", "bottom right")
BACKGROUND = "background"

SIDE = 64  # pixels
_SUPERSAMPLE = 4  # drawn 4x larger, then shrunk: smooth edges
_RADIUS = {"small": (8.0, 10.0), "large": (15.0, 18.0)}  # half the shape's extent, in pixels
_JITTER = 2.5  # pixels the centre may move
_MARGIN = 3.0  # pixels between a corner shape and the picture's edge


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    size: str
    position: str
    # Where exactly, drawn at random by random_scene: centre (pixels), half-extent (pixels), turn (degrees).
    cx: float = SIDE / 2
    cy: float = SIDE / 2
    radius: float = 12.0
    angle: float = 0.0


def is_held_out(shape: str, colour: str, background: str) -> bool:
    """True for the tenth of (shape, colour, background) triples kept out of training for the tests."""
    return (SHAPES.index(shape) * 3 + COLOURS.index(colour) * 5 + COLOURS.index(background)) % 10 == 0


def random_scene(rng: random.Random, *, held_out: bool = False, **fixed: str) -> Scene:
    """A random scene of the training set (or, with ``held_out``, of the held-out triples).

    Any of ``shape``, ``colour``, ``background``, ``size``, ``position`` may be fixed by keyword.
    """
    while True:
        shape = fixed.get("shape") or rng.choice(SHAPES)
        colour = fixed.get("colour") or rng.choice(COLOURS)
        background = fixed.get("background") or rng.choice([c for c in COLOURS if c != colour])
        if background != colour and is_held_out(shape, colour, background) == held_out:
            break
    size = fixed.get("size") or rng.choice(SIZES)
    position = fixed.get("position") or rng.choice(POSITIONS)
    lo, hi = _RADIUS[size]
    radius = rng.uniform(lo, hi)
    cx, cy = _centre(position, radius)
    return Scene(
        shape=shape,
        colour=colour,
        background=background,
        size=size,
        position=position,
        cx=cx + rng.uniform(-_JITTER, _JITTER),
        cy=cy + rng.uniform(-_JITTER, _JITTER),
        radius=radius,
        angle=rng.uniform(-12.0, 12.0),
    )


def _centre(position: str, radius: float) -> tuple[float, float]:
    near, far = radius + _MARGIN + _JITTER, SIDE - radius - _MARGIN - _JITTER
    x = {"left": near, "right": far}
    y = {"top": near, "bottom": far}
    if position == "center":
        return SIDE / 2, SIDE / 2
    vertical, horizontal = position.split()
    return x[horizontal], y[vertical]


def caption(scene: Scene, *, omit: frozenset[str] = frozenset()) -> str:
    """The scene in words; ``omit`` leaves out any of "size", "colour", "shape", "background", "position".

    >>> caption(Scene("circle", "red", "blue", "small", "top left"))
    'a small red circle on a blue background, top left'
    """
    words = ["a"]
    if "size" not in omit:
        words.append(scene.size)
    if "colour" not in omit:
        words.append(scene.colour)
    words.append("shape" if "shape" in omit else scene.shape)
    if "background" not in omit:
        words += ["on", "a", scene.background, BACKGROUND]
    text = " ".join(words)
    if "position" not in omit:
        text += ", in the center" if scene.position == "center" else f", {scene.position}"
    return text


def random_caption(scene: Scene, rng: random.Random) -> str:
    """A caption of the kind people type: usually whole, sometimes missing parts, sometimes bare words.

    The partial ones teach the model what each word means alone, which a negative prompt ("--no red")
    and short prompts ("a star") rely on.
    """
    roll = rng.random()
    if roll < 0.6:
        return caption(scene)
    if roll < 0.9:
        parts = ("size", "colour", "shape", "background", "position")
        return caption(scene, omit=frozenset(p for p in parts if rng.random() < 0.35))
    if rng.random() < 0.3:
        # One colour word alone names either of the picture's colours: "red" means "red somewhere", so that
        # "--no red" steers away from a red background as much as from a red shape.
        return rng.choice((scene.colour, scene.background))
    bare = [scene.colour, scene.shape, f"{scene.background} {BACKGROUND}", scene.size, scene.position]
    return " ".join(w for w in bare if rng.random() < 0.5) or scene.colour


def render(scene: Scene) -> Image.Image:
    """The scene as a 64×64 RGB picture."""
    s = _SUPERSAMPLE
    image = Image.new("RGB", (SIDE * s, SIDE * s), PALETTE[scene.background])
    draw = ImageDraw.Draw(image)
    fill = PALETTE[scene.colour]
    cx, cy, r = scene.cx * s, scene.cy * s, scene.radius * s
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(scene.shape, cx, cy, r, scene.angle), fill=fill)
    return image.resize((SIDE, SIDE), Image.Resampling.BOX)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(45.0 + 90.0 * k, r * math.sqrt(2) * 0.85) for k in range(4)]
    elif shape == "diamond":
        corners = [(90.0 * k, r) for k in range(4)]
    elif shape == "triangle":
        # An upright equilateral triangle, its centroid a little low so that it fills the box evenly.
        corners = [(-90.0 + 120.0 * k, r * 1.1) for k in range(3)]
        cy += r * 0.15
    elif shape == "star":
        corners = [(-90.0 + 36.0 * k, r * 1.05 if k % 2 == 0 else r * 0.45) for k in range(10)]
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return [
        (cx + d * math.cos(math.radians(a + angle)), cy + d * math.sin(math.radians(a + angle)))
        for a, d in corners
    ]
