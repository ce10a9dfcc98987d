"""Tiny random-weight models built in the test process (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from imaginebot.engine import DiffusionEngine
from imaginebot.engine.tiny import TinyComponents, engine_from, tiny_sd, tiny_sdxl

# Two CPU cores are shared with the rest of the suite: keep torch from oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def sd() -> TinyComponents:
    return tiny_sd()


@pytest.fixture(scope="session")
def sdxl() -> TinyComponents:
    return tiny_sdxl()


@pytest.fixture(scope="session")
def make_engine() -> Callable[..., DiffusionEngine]:
    """``make_engine(components, **from_components_kwargs)``, on the CPU in float32."""
    return engine_from


@pytest.fixture(scope="session")
def sd_engine(sd: TinyComponents) -> DiffusionEngine:
    return engine_from(sd)
