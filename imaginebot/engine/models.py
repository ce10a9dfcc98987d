"""Several models on one device, as one ``Engine``: each job goes to its ``spec.model``'s engine.

A worker (a local thread or a Ray actor) holds a ``ModelSet``; the executor sends it only jobs of the models
it holds (``names``). Jobs of different models never share a UNet call: a plan's group carries the model's
name. ``load_models`` loads the models a device can hold, in the configured order, and leaves out the ones
that would not fit next to them (another worker may hold those).

Importing this module does not import torch: the executor reads ``ModelSet`` without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaginebot.engine.api import (
    Engine,
    GenerateResult,
    GenerateSpec,
    Plan,
    PreviewCallback,
    SafetyCheck,
    StepState,
    Task,
)
from imaginebot.errors import ParamError

if TYPE_CHECKING:
    from imaginebot.catalog import ModelEntry
    from imaginebot.engine.planning import Planner

log = logging.getLogger(__name__)

# Of a device's memory, what is kept free for the batches when deciding whether one more model fits.
BATCH_RESERVE = 0.25


class ModelSet:
    """``Engine`` over named engines on one device; the first name is the default (``spec.model == ""``).
    ``safety``: the device's image moderator (IMAGINEBOT_SAFETY_CHECKER), which its worker runs on every
    job's images; None: none."""

    def __init__(self, engines: Mapping[str, Engine], *, safety: SafetyCheck | None = None) -> None:
        if not engines:
            raise ValueError("a model set needs at least one engine")
        self._engines = dict(engines)
        self.names: tuple[str, ...] = tuple(self._engines)
        self.safety = safety

    def engine(self, name: str) -> Engine:
        try:
            return self._engines[name or self.names[0]]
        except KeyError:
            raise ParamError(
                f"The model {name!r} is not loaded on this worker (it has {', '.join(self.names)})."
            ) from None

    @property
    def native_size(self) -> int:
        return self.engine("").native_size

    def default_capacity(self) -> float:
        # One batch is one model's; the smallest capacity holds for whichever runs.
        return min(engine.default_capacity() for engine in self._engines.values())

    def plan(self, spec: GenerateSpec, task: Task = "generate") -> Plan:
        name = spec.model or self.names[0]
        return _of_model(name, self.engine(name).plan(spec, task))

    def prepare(
        self,
        spec: GenerateSpec,
        task: Task = "generate",
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
    ) -> StepState:
        name = spec.model or self.names[0]
        inner = self.engine(name).prepare(spec, task, on_preview=on_preview, preview_every=preview_every)
        return _Routed(name, inner)

    def step(self, states: Sequence[StepState]) -> None:
        routed = [_routed(state) for state in states]
        names = {state.model for state in routed}
        assert len(names) == 1, "one UNet call is one model's"
        self.engine(names.pop()).step([state.inner for state in routed])

    def finish(self, state: StepState) -> GenerateResult:
        routed = _routed(state)
        return self.engine(routed.model).finish(routed.inner)

    def close(self) -> None:
        for engine in self._engines.values():
            close = getattr(engine, "close", None)
            if close is not None:
                close()


@dataclass
class _Routed:
    """A prepared job and the model it belongs to."""

    model: str
    inner: StepState

    @property
    def plan(self) -> Plan:
        return _of_model(self.model, self.inner.plan)

    @property
    def steps_done(self) -> int:
        return self.inner.steps_done

    @property
    def done(self) -> bool:
        return self.inner.done

    @property
    def fallback(self) -> GenerateResult | None:
        return self.inner.fallback


class ModelPlanner:
    """Plans the jobs of several models from their configs alone, as their ``ModelSet`` would: for a bot
    whose engines are elsewhere (Ray workers)."""

    def __init__(self, planners: Mapping[str, Planner]) -> None:
        if not planners:
            raise ValueError("a model planner needs at least one model")
        self._planners = dict(planners)
        self._default = next(iter(self._planners))

    def plan(self, spec: GenerateSpec, task: Task = "generate") -> Plan:
        name = spec.model or self._default
        try:
            planner = self._planners[name]
        except KeyError:
            raise ParamError(f"The model {name!r} is not one of this bot's.") from None
        return _of_model(name, planner.plan(spec, task))


def _of_model(name: str, plan: Plan) -> Plan:
    """A model's plan as a set of models makes it: its group carries the name (no UNet call is shared)."""
    return replace(plan, group=(name, plan.group))


def _routed(state: StepState) -> _Routed:
    if not isinstance(state, _Routed):
        raise TypeError(f"not a state of this model set: {type(state).__name__}")
    return state


def served(engine: Engine) -> frozenset[str] | None:
    """The models an engine serves, when it says (a ``ModelSet``); None: any job's."""
    return frozenset(engine.names) if isinstance(engine, ModelSet) else None


def safety_of(engine: Engine) -> SafetyCheck | None:
    """The image moderator that goes with an engine's device (a ``ModelSet``'s), if any."""
    return engine.safety if isinstance(engine, ModelSet) else None


# -- loading ---------------------------------------------------------------------------------------------


def weights_bytes(path: str | os.PathLike[str]) -> int:
    """About what a model's weights take: the checkpoint file, or the weight files of a folder's parts
    (the larger variant where a folder has both fp16 and fp32 files, so the estimate errs on the safe side).
    0 for a hub id, which is sized only once loaded."""
    root = Path(path).expanduser()
    if root.is_file():
        return root.stat().st_size
    if not root.is_dir():
        return 0
    total = 0
    for part in root.iterdir():
        if part.is_dir():
            sizes = [f.stat().st_size for f in part.iterdir() if f.suffix in (".safetensors", ".bin")]
            total += max(sizes, default=0)
    return total


def model_fits(needed: int, free: int, total: int, reserve: float = BATCH_RESERVE) -> bool:
    """Whether a model of ``needed`` bytes fits in ``free`` bytes of a device of ``total``, leaving
    ``reserve`` of it for the batches."""
    return needed <= free - reserve * total


def device_memory(device: str) -> tuple[int, int]:
    """(free, total) bytes of a device: CUDA's own count, else the machine's memory."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), int(total)
    import psutil

    memory = psutil.virtual_memory()
    return int(memory.available), int(memory.total)


def load_models(
    entries: Sequence[ModelEntry],
    *,
    device: str | None = None,
    dtype: str | None = None,
    upscale_max_side: int = 2048,
    lora_dir: str | os.PathLike[str] | None = None,
    memory: Callable[[], tuple[int, int]] | None = None,
    load: Callable[..., Engine] | None = None,
    safety_checker: str | os.PathLike[str] | None = None,
) -> ModelSet:
    """The models of ``entries`` this device can hold, in order: the first always (it is the default),
    each other one if its weights fit next to those loaded, with room left for the batches. With
    ``safety_checker`` (a folder), the image moderator is loaded first, on the same device.

    ``memory``: (free, total) bytes now (default: ``device_memory(device)``); ``load``: ``load_engine``."""
    if load is None:
        from imaginebot.engine.loading import load_engine

        load = load_engine
    safety = None
    if safety_checker is not None:
        from imaginebot.engine.safety import load_safety_checker

        safety = load_safety_checker(safety_checker, device=device, dtype=dtype)
    where = device or "auto"
    memory = memory or (lambda: device_memory(where))
    engines: dict[str, Engine] = {}
    for entry in entries:
        if engines:
            needed = weights_bytes(entry.path)
            free, total = memory()
            if not model_fits(needed, free, total):
                log.warning(
                    "model %s (%.1f GiB) does not fit on %s next to %s (%.1f GiB free of %.1f): this worker "
                    "leaves it to the others",
                    entry.name, needed / 2**30, where, ", ".join(engines), free / 2**30, total / 2**30,
                )  # fmt: skip
                continue
        engine = load(
            entry.path, device=device, dtype=dtype, upscale_max_side=upscale_max_side, lora_dir=lora_dir
        )
        _layer_scheduler(engine, entry.scheduler_overrides)
        engines[entry.name] = engine
    return ModelSet(engines, safety=safety)


def _layer_scheduler(engine: Engine, overrides: Mapping[str, Any]) -> None:
    config = getattr(engine, "scheduler_config", None)
    if overrides and isinstance(config, dict):
        config.update(overrides)
