"""Per-tile seeds, variation, upscale, cancellation, out-of-memory and argument checks, on the CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from pixels import BATCHED, assert_close_pixels, difference

from imaginebot.engine import DiffusionEngine, GenerateSpec
from imaginebot.errors import GenerationCancelled, OutOfMemory, ParamError

MakeEngine = Callable[..., DiffusionEngine]


def spec(**kwargs: object) -> GenerateSpec:
    base: dict[str, object] = {
        "prompt": "a lighthouse at dusk",
        "width": 32,
        "height": 32,
        "num_inference_steps": 4,
        "seeds": (1, 2, 3, 4),
    }
    return GenerateSpec(**(base | kwargs))  # type: ignore[arg-type]


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and bool(np.array_equal(np.asarray(a), np.asarray(b)))


def close(a: Image.Image, b: Image.Image) -> bool:
    """Equal but for float rounding: a batch of 4 and a batch of 1 may take different kernels."""
    found = difference(a, b)
    return found.max_abs <= BATCHED.max_abs and found.fraction <= BATCHED.max_fraction


def test_any_tile_can_be_remade_alone(sd_engine: DiffusionEngine) -> None:
    grid = sd_engine.generate(spec(sampler="euler_a"))
    alone = sd_engine.generate(spec(sampler="euler_a", seeds=(3,)))
    assert_close_pixels(grid.images[2], alone.images[0], BATCHED)
    assert not same(grid.images[0], grid.images[1])
    assert grid.seeds == (1, 2, 3, 4) and grid.elapsed_s > 0


def test_native_size_and_size_multiple(sd_engine: DiffusionEngine) -> None:
    assert sd_engine.native_size == 16 * 2
    assert sd_engine.size_multiple == 2


def count_unet_calls(engine: DiffusionEngine) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls: list[int] = []
    handle = engine.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


def test_variation_is_img2img_of_the_tile_with_new_seeds(sd_engine: DiffusionEngine) -> None:
    source = sd_engine.generate(spec(seeds=(7,))).images[0]
    calls, handle = count_unet_calls(sd_engine)
    try:
        variations = sd_engine.generate(
            spec(init_image=source, seeds=(10, 11, 12, 13), num_inference_steps=10), task="vary"
        )
    finally:
        handle.remove()
    assert len(calls) == 6  # about 0.6 strength: the last 6 of 10 steps
    assert len(variations.images) == 4 and variations.seeds == (10, 11, 12, 13)
    assert all(v.size == source.size for v in variations.images)
    assert not same(variations.images[0], variations.images[1])
    # reproducible per tile, and made from the source (another source, other pictures)
    again = sd_engine.generate(spec(init_image=source, seeds=(12,), num_inference_steps=10), task="vary")
    assert_close_pixels(again.images[0], variations.images[2], BATCHED)
    calls, handle = count_unet_calls(sd_engine)
    try:
        subtle = spec(init_image=source, seeds=(12,), num_inference_steps=10, strength=0.3)  # "Vary (Subtle)"
        sd_engine.generate(subtle, task="vary")
    finally:
        handle.remove()
    assert len(calls) == 3
    blue = Image.new("RGB", (32, 32), (0, 90, 200))
    other = sd_engine.generate(spec(init_image=blue, seeds=(12,), num_inference_steps=10), task="vary")
    assert not close(other.images[0], variations.images[2])


def test_upscale_doubles_and_refines(sd_engine: DiffusionEngine) -> None:
    tile = sd_engine.generate(spec(seeds=(5,))).images[0]
    calls, handle = count_unet_calls(sd_engine)
    try:
        result = sd_engine.generate(spec(init_image=tile, seeds=(5,), num_inference_steps=10), task="upscale")
    finally:
        handle.remove()
    assert len(calls) == 3  # low strength (0.3): a light refinement
    (big,) = result.images
    assert big.size == (64, 64) and result.note == ""
    plain = tile.resize((64, 64), Image.Resampling.LANCZOS)
    assert not same(big, plain)  # refined by the model, not only resized


def test_upscale_is_capped(make_engine: MakeEngine, sd: object) -> None:
    engine = make_engine(sd, upscale_max_side=48)
    assert engine.upscaled_size(32, 32) == (48, 48)
    assert engine.upscaled_size(32, 16) == (48, 24)
    assert engine.upscaled_size(512, 512) == (48, 48)


def test_cancel_between_steps(sd_engine: DiffusionEngine) -> None:
    calls = 0

    def should_cancel() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    with pytest.raises(GenerationCancelled, match="after 2 of 4 steps"):
        sd_engine.generate(spec(), should_cancel=should_cancel)
    assert len(sd_engine.generate(spec(seeds=(1,))).images) == 1  # still serving


@pytest.fixture
def out_of_memory(sd_engine: DiffusionEngine) -> Iterator[dict[str, bool]]:
    """Fault injection at the outer edge: the UNet raises CUDA's out-of-memory error while armed."""
    armed = {"on": True}

    def hook(module: torch.nn.Module, args: object) -> None:
        if armed["on"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = sd_engine.unet.register_forward_pre_hook(hook)
    yield armed
    handle.remove()


def test_out_of_memory_is_reported_and_the_engine_carries_on(
    sd_engine: DiffusionEngine, out_of_memory: dict[str, bool]
) -> None:
    with pytest.raises(OutOfMemory, match="ran out of memory making 4 image") as excinfo:
        sd_engine.generate(spec())
    assert isinstance(excinfo.value.__cause__, torch.cuda.OutOfMemoryError)
    out_of_memory["on"] = False
    assert len(sd_engine.generate(spec()).images) == 4


def test_upscale_falls_back_to_a_plain_resize_when_memory_is_short(
    sd_engine: DiffusionEngine, out_of_memory: dict[str, bool]
) -> None:
    tile = Image.new("RGB", (32, 32), (200, 100, 50))
    result = sd_engine.generate(spec(init_image=tile, seeds=(5,)), task="upscale")
    assert "plain resize" in result.note
    assert same(result.images[0], tile.resize((64, 64), Image.Resampling.LANCZOS))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 33}, "multiples of 2"),
        ({"num_inference_steps": 0}, "steps"),
        ({"seeds": ()}, "seed"),
        ({"sampler": "heun"}, "sampler 'heun'"),
        ({"init_image": Image.new("RGB", (32, 32)), "strength": 0.0}, "strength"),
    ],
)
def test_bad_specs_are_refused_by_name(
    sd_engine: DiffusionEngine, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ParamError, match=message):
        sd_engine.generate(spec(**kwargs))
