from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imaginebot.engine.grid import encode_under_limit, grid_shape, gutter_for, make_grid

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def tiles(n: int, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    return [Image.new("RGB", size, COLOURS[i]) for i in range(n)]


@pytest.mark.parametrize(("n", "shape"), [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2))])
def test_grid_shapes(n: int, shape: tuple[int, int]) -> None:
    assert grid_shape(n) == shape


def test_four_tiles_in_reading_order_with_gutters() -> None:
    grid = make_grid(tiles(4), gutter=4)
    assert grid.size == (2 * 64 + 4, 2 * 48 + 4)
    assert grid.getpixel((10, 10)) == COLOURS[0]
    assert grid.getpixel((64 + 4 + 10, 10)) == COLOURS[1]
    assert grid.getpixel((10, 48 + 4 + 10)) == COLOURS[2]
    assert grid.getpixel((64 + 4 + 10, 48 + 4 + 10)) == COLOURS[3]
    assert grid.getpixel((65, 10)) not in COLOURS  # the gutter


def test_three_tiles_leave_the_fourth_slot_empty() -> None:
    grid = make_grid(tiles(3), gutter=4)
    assert grid.size == (2 * 64 + 4, 2 * 48 + 4)
    assert grid.getpixel((64 + 4 + 10, 48 + 4 + 10)) not in COLOURS


def test_one_and_two_tiles() -> None:
    assert make_grid(tiles(1)).size == (64, 48)
    two = make_grid(tiles(2))
    assert two.size == (2 * 64 + gutter_for(64, 48), 48)


def test_tiles_of_different_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        make_grid([Image.new("RGB", (8, 8)), Image.new("RGB", (8, 9))])


def test_small_picture_stays_png() -> None:
    encoded = encode_under_limit(make_grid(tiles(4)), max_bytes=10 * 2**20)
    assert encoded.format == "png"
    assert Image.open(io.BytesIO(encoded.data)).format == "PNG"


def noise(side: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_noisy_picture_falls_back_to_lossy_under_the_limit() -> None:
    picture = noise(256)  # ~197 KB as PNG
    encoded = encode_under_limit(picture, max_bytes=100_000)
    assert encoded.format in ("webp", "jpeg")
    assert len(encoded.data) <= 100_000
    assert (encoded.width, encoded.height) == (256, 256)


def test_tight_limit_downscales() -> None:
    encoded = encode_under_limit(noise(256), max_bytes=8_000)
    assert len(encoded.data) <= 8_000
    assert encoded.width < 256
    decoded = Image.open(io.BytesIO(encoded.data))
    assert decoded.size == (encoded.width, encoded.height)
