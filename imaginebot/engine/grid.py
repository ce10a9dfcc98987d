"""Tiles -> one grid picture, and a picture -> bytes under an upload limit. Pure Pillow.

Layout: 4 tiles make a 2x2 grid, 2 tiles a 1x2 row, 1 tile stands alone, and 3 tiles fill a 2x2 grid with the
last slot left empty. 3 -> 2x2 (not 1x3) keeps every tile where the U1-U4 / V1-V4 buttons say it is
(1 top-left, 2 top-right, 3 bottom-left) and the picture the same shape as a full grid.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, features

BACKGROUND = (32, 34, 37)  # the gutters: near Discord's dark theme, so they read as gaps, not lines


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` tiles."""
    if n < 1:
        raise ValueError(f"a grid needs at least one tile, got {n}")
    if n == 1:
        return 1, 1
    if n == 2:
        return 1, 2
    if n <= 4:
        return 2, 2
    columns = math.ceil(math.sqrt(n))  # more than four (not used by /imagine): as square as it gets
    return -(-n // columns), columns


def gutter_for(tile_width: int, tile_height: int) -> int:
    """A thin gap that scales with the tiles: 8 px between 512 px tiles, never under 2 px."""
    return max(2, min(tile_width, tile_height) // 64)


def make_grid(tiles: Sequence[Image.Image], gutter: int | None = None) -> Image.Image:
    """Lay out equally sized tiles in reading order (see the module docstring for the shapes)."""
    if not tiles:
        raise ValueError("a grid needs at least one tile")
    width, height = tiles[0].size
    if any(tile.size != (width, height) for tile in tiles):
        raise ValueError(f"tiles differ in size: {[tile.size for tile in tiles]}")
    if len(tiles) == 1:
        return tiles[0].convert("RGB")
    gap = gutter_for(width, height) if gutter is None else gutter
    rows, columns = grid_shape(len(tiles))
    grid = Image.new(
        "RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), BACKGROUND
    )
    for i, tile in enumerate(tiles):
        row, column = divmod(i, columns)
        grid.paste(tile.convert("RGB"), (column * (width + gap), row * (height + gap)))
    return grid


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str  # "png", "webp" or "jpeg"
    width: int
    height: int

    @property
    def filename_suffix(self) -> str:
        return ".jpg" if self.format == "jpeg" else f".{self.format}"


_LOSSY_QUALITIES = (95, 90, 80, 70, 60, 50)


def _save(image: Image.Image, fmt: str, quality: int | None = None) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        image.save(out, format="PNG", optimize=False, compress_level=6)
    elif fmt == "webp":
        image.save(out, format="WEBP", quality=quality, method=4)
    else:
        image.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def encode_under_limit(image: Image.Image, max_bytes: int) -> EncodedImage:
    """The best encoding of ``image`` that fits ``max_bytes`` (the caller knows where it goes, and its limit).

    Lossless PNG first; then WebP (or JPEG where Pillow lacks WebP) at decreasing quality; then the picture
    shrunk by a quarter at a time at the lowest quality, until it fits.
    """
    image = image.convert("RGB")
    data = _save(image, "png")
    if len(data) <= max_bytes:
        return EncodedImage(data, "png", *image.size)
    lossy = "webp" if features.check("webp") else "jpeg"
    for quality in _LOSSY_QUALITIES:
        data = _save(image, lossy, quality)
        if len(data) <= max_bytes:
            return EncodedImage(data, lossy, *image.size)
    while image.width > 16 and image.height > 16:
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
        data = _save(image, lossy, _LOSSY_QUALITIES[-1])
        if len(data) <= max_bytes:
            return EncodedImage(data, lossy, *image.size)
    raise ValueError(f"cannot encode a picture in {max_bytes} bytes")
