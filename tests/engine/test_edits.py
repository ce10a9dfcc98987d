"""The engine's side of the editing tools: outpainting and inpainting keep what they must, --tile wraps
around, and large upscales are drawn in tiles."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from imaginebot.engine import DiffusionEngine, GenerateSpec, spatial
from imaginebot.engine import canvas as cv
from imaginebot.engine.canvas import Direction
from imaginebot.errors import ParamError

SOURCE = Image.radial_gradient("L").convert("RGB").resize((32, 32))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def spec(**kwargs: object) -> GenerateSpec:
    base: dict[str, object] = {"width": 32, "height": 32, "num_inference_steps": 6, "seeds": (1, 2)}
    return GenerateSpec("a lighthouse", **(base | kwargs))  # type: ignore[arg-type]


# -- canvases ---------------------------------------------------------------------------------------------


def test_zoom_out_puts_the_picture_shrunk_in_the_middle() -> None:
    c = cv.zoom_out(SOURCE.resize((64, 64)), 2.0, (64, 64))
    assert c.size == (64, 64) and cv.kept_box(c.mask) == (16, 16, 48, 48)
    assert np.abs(pixels(c.image)[16:48, 16:48] - pixels(SOURCE)).max() <= 2
    one_and_a_half = cv.zoom_out(SOURCE, 1.5, (48, 48))
    assert cv.kept_box(one_and_a_half.mask) == (8, 8, 40, 40)
    # another aspect ratio than the picture's: it fits inside, in the middle
    assert cv.kept_box(cv.zoom_out(SOURCE, 1.0, (64, 32)).mask) == (16, 0, 48, 32)
    with pytest.raises(ValueError, match=r"1\.0 to 2\.0"):
        cv.zoom_out(SOURCE, 2.5, (64, 64))


@pytest.mark.parametrize(
    ("direction", "size", "box"),
    [
        (Direction.LEFT, (48, 32), (16, 0, 48, 32)),  # the picture on the right, new on the left
        (Direction.RIGHT, (48, 32), (0, 0, 32, 32)),
        (Direction.UP, (32, 48), (0, 16, 32, 48)),
        (Direction.DOWN, (32, 48), (0, 0, 32, 32)),
    ],
)
def test_a_pan_keeps_the_picture_on_the_far_side(
    direction: Direction, size: tuple[int, int], box: tuple[int, int, int, int]
) -> None:
    assert cv.pan_aspect(SOURCE.size, direction) == ((96, 64) if direction.horizontal else (64, 96))
    c = cv.pan(SOURCE, direction, size)
    assert c.size == size and cv.kept_box(c.mask) == box
    left, top, right, bottom = box
    assert np.array_equal(pixels(c.image)[top:bottom, left:right], pixels(SOURCE))


def test_make_square_extends_the_short_side() -> None:
    wide = SOURCE.resize((48, 24))
    c = cv.make_square(wide, (36, 36))
    left, top, right, bottom = cv.kept_box(c.mask) or (0, 0, 0, 0)
    assert (left, right) == (0, 36) and top > 0 and bottom < 36


def test_region_masks_the_chosen_cells_only() -> None:
    c = cv.region(SOURCE.resize((30, 30)), (1, 5))
    mask = np.asarray(c.mask)
    assert (mask[0:10, 0:10] == cv.DRAW).all() and (mask[10:20, 10:20] == cv.DRAW).all()
    assert (mask == cv.DRAW).sum() == 200
    with pytest.raises(ValueError, match="1 to 9"):
        cv.region(SOURCE, (10,))


def test_pasting_back_never_touches_the_kept_area() -> None:
    mask = cv.zoom_out(SOURCE, 2.0, (64, 64)).mask  # kept: 16 to 48
    weights = np.asarray(cv.keep_weights(mask, feather=4))
    kept = np.asarray(mask) == cv.KEEP
    assert (weights[kept] == 0).all()
    assert weights[0, 0] == 255 and weights[32, 4] == 255  # far into the drawn area: all the model's
    assert 0 < weights[32, 12] < 255  # near the seam: feathered


# -- the engine -------------------------------------------------------------------------------------------


def test_outpainting_keeps_the_picture_and_draws_the_border(sd_engine: DiffusionEngine) -> None:
    c = cv.zoom_out(SOURCE, 2.0, (32, 32))
    result = sd_engine.generate(spec(init_image=c.image, mask_image=c.mask))
    left, top, right, bottom = cv.kept_box(c.mask) or (0, 0, 0, 0)
    for image in result.images:
        assert image.size == (32, 32)
        assert np.array_equal(pixels(image)[top:bottom, left:right], pixels(c.image)[top:bottom, left:right])
        border = np.asarray(c.mask) == cv.DRAW
        assert np.abs(pixels(image) - pixels(c.image))[border].mean() > 5  # drawn, not the stretched edge
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))  # a tile per seed


def test_inpainting_leaves_the_rest_as_it_was(sd_engine: DiffusionEngine) -> None:
    c = cv.region(SOURCE, (5,))
    image = sd_engine.generate(spec(init_image=c.image, mask_image=c.mask, seeds=(3,))).images[0]
    changed = np.abs(pixels(image) - pixels(SOURCE)).max(axis=2) > 0
    left, top, right, bottom = cv.cell_box(SOURCE.size, 5)
    assert changed[top:bottom, left:right].mean() > 0.5
    outside = np.ones_like(changed)
    outside[top:bottom, left:right] = False
    assert not changed[outside].any()


def test_a_mask_needs_its_picture_at_the_size_drawn(sd_engine: DiffusionEngine) -> None:
    c = cv.zoom_out(SOURCE, 2.0, (32, 32))
    with pytest.raises(ParamError, match="mask"):
        sd_engine.generate(spec(mask_image=c.mask))
    with pytest.raises(ParamError, match="mask"):
        sd_engine.generate(spec(width=48, init_image=c.image, mask_image=c.mask))


def test_tile_makes_the_unet_and_the_vae_wrap_around(sd_engine: DiffusionEngine) -> None:
    """With circular padding the networks commute with a roll of the picture (by a multiple of their
    strides): what leaves one edge comes back at the other, so the picture tiles without a seam."""
    unet, vae = sd_engine.unet, sd_engine.vae
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((1, 4, 8, 8), generator=generator)
    text = torch.randn((1, 77, unet.config.cross_attention_dim), generator=generator)
    t = torch.tensor([500.0])

    def unet_out(x: torch.Tensor) -> torch.Tensor:
        return unet(x, t, encoder_hidden_states=text, return_dict=False)[0]

    def rolled(x: torch.Tensor, by: int) -> torch.Tensor:
        return torch.roll(x, shifts=by, dims=-1)

    shift = 4  # latents: a multiple of the UNet's downsampling
    with torch.inference_mode():
        with spatial.circular(spatial.padded_convs(unet)):
            wraps = (unet_out(rolled(latents, shift)) - rolled(unet_out(latents), shift)).abs().max()
        plain = (unet_out(rolled(latents, shift)) - rolled(unet_out(latents), shift)).abs().max()
        f = sd_engine.vae_scale_factor
        with spatial.circular(spatial.padded_convs(vae)):
            decoded = vae.decode(latents).sample
            vae_wraps = (vae.decode(rolled(latents, shift)).sample - rolled(decoded, shift * f)).abs().max()
    assert wraps < 1e-4 < plain
    assert vae_wraps < 1e-4
    assert all(conv.padding_mode == "zeros" for conv in unet.modules() if isinstance(conv, torch.nn.Conv2d))


def test_a_tiled_pictures_left_and_right_edges_join_like_its_inside(
    sd_engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole job, in pixels: started from its noise rolled sideways, a --tile picture comes out rolled
    by as much. So the seam between its right edge and its left edge is a column pair inside the other
    picture: the edges join as smoothly as any two neighbouring columns. Without --tile they don't."""
    import imaginebot.engine.pipeline as pipeline

    shift, f = 4, sd_engine.vae_scale_factor  # latent pixels, a multiple of the UNet's downsampling
    drawn = pipeline.randn_tensor

    def rolled_noise(*args: object, **kwargs: object) -> torch.Tensor:
        return torch.roll(drawn(*args, **kwargs), shifts=shift, dims=-1)  # type: ignore[arg-type]

    for tile, joins in ((True, True), (False, False)):
        job = spec(tile=tile, sampler="euler", seeds=(3,))  # a sampler that draws no noise on the way
        straight = pixels(sd_engine.generate(job).images[0])
        with monkeypatch.context() as patch:
            patch.setattr(pipeline, "randn_tensor", rolled_noise)
            turned = pixels(sd_engine.generate(job).images[0])
        difference = np.abs(turned - np.roll(straight, shift * f, axis=1)).max()
        assert bool(difference <= 2) is joins, (tile, difference)
        if tile:  # the wrap-around seam of one is the inside pair of columns at the shift in the other
            seam = np.abs(straight[:, -1] - straight[:, 0])
            inside = np.abs(turned[:, shift * f - 1] - turned[:, shift * f])
            assert np.abs(seam - inside).max() <= 4


def test_tile_is_a_group_of_its_own(sd_engine: DiffusionEngine) -> None:
    assert sd_engine.plan(spec(tile=True)).group != sd_engine.plan(spec()).group


def test_large_latents_go_through_the_unet_in_native_windows(sd_engine: DiffusionEngine) -> None:
    native = sd_engine.native_size  # 32: latents of 8
    seen: list[tuple[int, int]] = []
    hook = sd_engine.unet.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        big = sd_engine.generate(spec(width=5 * native, height=3 * native, seeds=(1,), num_inference_steps=2))
        seen_big, seen[:] = list(seen), []
        sd_engine.generate(spec(width=2 * native, height=2 * native, seeds=(1,), num_inference_steps=2))
        seen_double = list(seen)
    finally:
        hook.remove()
    assert big.images[0].size == (5 * native, 3 * native)
    latent = native // sd_engine.vae_scale_factor
    assert set(seen_big) == {(latent, latent)} and len(seen_big) > 2 * 6  # windows, every step
    assert seen_double == [(2 * latent, 2 * latent)] * 2  # twice the native side: one call a step


def test_an_upscale_of_an_upscale_is_tiled_and_sized(sd_engine: DiffusionEngine) -> None:
    up = sd_engine.generate(dataclasses.replace(spec(seeds=(1,)), init_image=SOURCE), task="upscale").images[
        0
    ]
    subtle = dataclasses.replace(spec(seeds=(1,)), init_image=up, strength=0.2)
    again = sd_engine.generate(subtle, task="upscale").images[0]
    assert up.size == (64, 64) and again.size == (128, 128)


@pytest.mark.parametrize(("length", "tile", "overlap"), [(8, 8, 2), (20, 8, 2), (33, 8, 2), (64, 16, 4)])
def test_windows_cover_everything_and_overlap(length: int, tile: int, overlap: int) -> None:
    starts = spatial.window_starts(length, tile, overlap)
    covered = np.zeros(length, dtype=bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered.all() and starts[0] == 0 and starts[-1] + min(tile, length) == length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
