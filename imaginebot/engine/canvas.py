"""Canvases for the editing tools: where a picture goes on a new canvas, and the mask of what is drawn.

Zoom Out, Pan and Make Square are outpainting (the picture on a larger canvas, the model draws the new
border); Vary (Region) is inpainting (the model redraws some cells of a 3×3 grid). Each gives a ``Canvas``:
the picture as the model starts from it and a mask, white where the model draws, black where the picture is
kept. The engine blends the kept part in at every step and pastes it back at the end (``keep_weights``).

Plain Pillow and numpy geometry: no model, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, ImageFilter

DRAW, KEEP = 255, 0  # mask values
REGION_GRID = 3  # Vary (Region) picks cells of a 3×3 grid, numbered 1-9 row by row


class Direction(StrEnum):
    """A pan's direction; the value rides in a button's custom_id: never change one."""

    LEFT = "l"
    RIGHT = "r"
    UP = "u"
    DOWN = "d"

    @property
    def horizontal(self) -> bool:
        return self in (Direction.LEFT, Direction.RIGHT)


@dataclass(frozen=True)
class Canvas:
    image: Image.Image  # RGB; the new area is filled by stretching the picture's edge outwards
    mask: Image.Image  # "L", the same size: DRAW where the model draws, KEEP where the picture stays

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def zoom_out(image: Image.Image, factor: float, size: tuple[int, int]) -> Canvas:
    """The picture shrunk by ``factor`` (1.0-2.0: 2 makes it half as wide) in the middle of a ``size``
    canvas; where the canvas has another aspect ratio than the picture, the picture fits inside it."""
    if not 1.0 <= factor <= 2.0:
        raise ValueError(f"a zoom factor is from 1.0 to 2.0, not {factor}")
    width, height = size
    scale = min(width / image.width, height / image.height) / factor
    box_w, box_h = _at_least_one(image.width * scale), _at_least_one(image.height * scale)
    return _placed(image, size, ((width - box_w) // 2, (height - box_h) // 2), (box_w, box_h))


def pan_aspect(size: tuple[int, int], direction: Direction) -> tuple[int, int]:
    """The aspect ratio after a pan of a picture of ``size``: half the picture added on that side."""
    width, height = size
    if direction.horizontal:
        return 3 * width, 2 * height
    return 2 * width, 3 * height


def pan(image: Image.Image, direction: Direction, size: tuple[int, int]) -> Canvas:
    """The picture kept on the far side of a ``size`` canvas (about ``pan_aspect``), the rest to draw."""
    width, height = size
    if direction.horizontal:
        box = (min(width, _at_least_one(image.width * height / image.height)), height)
    else:
        box = (width, min(height, _at_least_one(image.height * width / image.width)))
    x = width - box[0] if direction is Direction.LEFT else 0
    y = height - box[1] if direction is Direction.UP else 0
    return _placed(image, size, (x, y), box)


def make_square(image: Image.Image, size: tuple[int, int]) -> Canvas:
    """The picture in the middle of a square canvas, its short side extended on both sides."""
    if size[0] != size[1]:
        raise ValueError(f"a square canvas, not {size[0]}×{size[1]}")
    return zoom_out(image, 1.0, size)


def region(image: Image.Image, cells: tuple[int, ...]) -> Canvas:
    """Vary (Region): redraw ``cells`` (1-9, row by row, of a 3×3 grid) of the picture, keep the rest."""
    bad = [c for c in cells if not 1 <= c <= REGION_GRID**2]
    if not cells or bad:
        raise ValueError(f"cells are 1 to {REGION_GRID**2}, not {cells}")
    mask = Image.new("L", image.size, KEEP)
    for cell in cells:
        mask.paste(DRAW, cell_box(image.size, cell))
    return Canvas(image.convert("RGB"), mask)


def cell_box(size: tuple[int, int], cell: int) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom) of grid cell ``cell`` (1-9)."""
    row, column = divmod(cell - 1, REGION_GRID)
    width, height = size
    xs = [round(width * i / REGION_GRID) for i in range(REGION_GRID + 1)]
    ys = [round(height * i / REGION_GRID) for i in range(REGION_GRID + 1)]
    return xs[column], ys[row], xs[column + 1], ys[row + 1]


def kept_box(mask: Image.Image) -> tuple[int, int, int, int] | None:
    """The bounding box of the kept area (None if everything is drawn)."""
    kept = np.asarray(mask) == KEEP
    if not kept.any():
        return None
    ys, xs = np.nonzero(kept)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def keep_weights(mask: Image.Image, feather: int) -> Image.Image:
    """How much of the model's drawing to take at each pixel when the picture is pasted back: 0 in the
    whole kept area (so it stays exactly as it was), rising to 1 over ``feather`` pixels into the drawn
    area (so no seam shows where the two meet)."""
    if feather <= 0:
        return mask
    # Shrink the drawn area by the feather (a max filter on the kept area), then blur by the same: the blur
    # never reaches back into the kept area.
    shrunk = mask.filter(ImageFilter.MinFilter(2 * feather + 1))
    return shrunk.filter(ImageFilter.BoxBlur(feather))


def _at_least_one(value: float) -> int:
    return max(1, round(value))


def _placed(image: Image.Image, size: tuple[int, int], at: tuple[int, int], box: tuple[int, int]) -> Canvas:
    """``image`` resized to ``box`` at ``at`` on a ``size`` canvas, its edges stretched over the rest."""
    width, height = size
    (x, y), (box_w, box_h) = at, box
    inner = np.asarray(image.convert("RGB").resize(box, Image.Resampling.LANCZOS))
    pad = ((y, height - y - box_h), (x, width - x - box_w), (0, 0))
    filled = Image.fromarray(np.pad(inner, pad, mode="edge"))
    mask = Image.new("L", size, DRAW)
    mask.paste(KEEP, (x, y, x + box_w, y + box_h))
    return Canvas(filled, mask)
