"""Comparing the pictures of two different code paths, with a tolerance that says why it is what it is.

The same code on the same inputs makes the same pixels, and a test may say so bit for bit (a restart, a
retry, a repeat). Two different paths (two loaders of the same weights, a job in a batch and the job alone,
a Ray worker and a local one, a UNet call whole and in windows) run the same math in another order or on
tensors laid out otherwise, and a CPU's kernels may then round a value to its neighbour: which values,
and how many, depends on the CPU. Such tests compare with one of the tolerances below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

Picture = Image.Image | np.ndarray


@dataclass(frozen=True)
class Tolerance:
    """At most ``max_abs`` (out of 255) apart anywhere, and at most ``max_fraction`` of the values apart at
    all."""

    max_abs: int
    max_fraction: float
    why: str


# The same weights loaded two ways (a diffusers folder and a single file; kohya and PEFT LoRA layouts):
# the same arithmetic on tensors of other memory layouts. A fresh AMD EPYC machine saw 1 value of 12,288
# differ by 1 for SDXL; a rounding there and there, not a drift.
LOADERS = Tolerance(
    1, 0.001, "the same weights from two loaders: other memory layouts, other summation order"
)
# A job in a batch against the job alone (or on a Ray worker against a local one): other batch sizes take
# other kernels, whose last-bit differences the sampler carries through every step, so many values may be
# off by one or two; a different picture is off by tens.
BATCHED = Tolerance(2, 1.0, "a batch and a job alone take other kernels; the sampler carries their rounding")
# An end-to-end job through the bot (batched with whatever else runs, its PNG decoded) against the engine
# alone: as BATCHED.
THROUGH_THE_BOT = BATCHED


@dataclass(frozen=True)
class Difference:
    max_abs: int
    differing: int  # values (pixels x channels) not equal
    total: int

    @property
    def fraction(self) -> float:
        return self.differing / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"max {self.max_abs}/255, {self.differing} of {self.total} values ({self.fraction:.4%})"


def _array(picture: Picture) -> np.ndarray:
    return np.asarray(picture.convert("RGB") if isinstance(picture, Image.Image) else picture, dtype=np.int16)


def difference(a: Picture | Sequence[Picture], b: Picture | Sequence[Picture]) -> Difference:
    """How far apart two pictures (or two equally long sequences of pictures) are."""
    pairs = (
        list(zip(a, b, strict=True))
        if isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, np.ndarray)
        else [(a, b)]
    )
    max_abs = differing = total = 0
    for x, y in pairs:
        ax, ay = _array(x), _array(y)  # type: ignore[arg-type]
        assert ax.shape == ay.shape, f"the pictures differ in size: {ax.shape} and {ay.shape}"
        delta = np.abs(ax - ay)
        max_abs = max(max_abs, int(delta.max()) if delta.size else 0)
        differing += int(np.count_nonzero(delta))
        total += delta.size
    return Difference(max_abs, differing, total)


def assert_close_pixels(
    a: Picture | Sequence[Picture], b: Picture | Sequence[Picture], tolerance: Tolerance, what: str = ""
) -> Difference:
    """Fail, saying how far apart they are (and ``what`` they are), unless ``a`` and ``b`` are within
    ``tolerance``."""
    found = difference(a, b)
    assert found.max_abs <= tolerance.max_abs and found.fraction <= tolerance.max_fraction, (
        f"{what + ': ' if what else ''}the pictures differ by {found}; allowed: {tolerance.max_abs}/255 in "
        f"{tolerance.max_fraction:.2%} of values ({tolerance.why})"
    )
    return found


def assert_different_pictures(
    a: Picture | Sequence[Picture], b: Picture | Sequence[Picture], *, at_least: int = 20
) -> Difference:
    """Fail unless ``a`` and ``b`` are different pictures: somewhere at least ``at_least``/255 apart, far
    beyond any rounding."""
    found = difference(a, b)
    assert found.max_abs >= at_least, (
        f"the pictures are nearly the same ({found}); expected {at_least}+ apart"
    )
    return found
