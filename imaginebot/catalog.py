"""The bot's models and LoRAs as the job service, the cogs and the workers see them (no torch, no weights).

``IMAGINEBOT_MODELS`` names several checkpoints, the first being the default::

    sd15=/models/v1-5-pruned-emaonly.safetensors, turbo=/models/sd_turbo.safetensors steps=1 cfg=0

Each entry is ``name=path``, then optionally that model's own defaults as ``steps=``, ``cfg=``,
``sampler=``, and ``size=`` its native side where its configs don't say it (a Turbo model, known by its
name or file name, already gets 1 step without guidance at 512 px; a latent consistency model 4 steps of
its own sampler). Entries are separated by commas or new lines. A prompt picks
one with ``--model name``, a user with /settings; the model's defaults apply to what neither sets.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imaginebot.engine.api import SAMPLERS
from imaginebot.engine.lora_files import list_loras
from imaginebot.params import CFG_RANGE, STEPS_RANGE, Choices, RequestDefaults

NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
NAME_ALLOWED = "1-32 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
# Distilled models draw in a step or a few and without classifier-free guidance (cfg <= 1 turns it off);
# their schedule must end at the last timestep ("trailing"), or one step starts from an almost clean t.
TURBO_DEFAULTS: dict[str, Any] = {"steps": 1, "cfg": 0.0, "sampler": "euler_a"}
TURBO_SIZE = 512  # SD-Turbo and SDXL-Turbo both draw at 512×512
TURBO_SCHEDULER: dict[str, Any] = {"timestep_spacing": "trailing"}
# A latent consistency model takes the guidance scale as an input (there is no CFG branch to pay for):
# diffusers' LCM pipeline's 8.5, its own sampler, 4 steps.
LCM_DEFAULTS: dict[str, Any] = {"steps": 4, "cfg": 8.5, "sampler": "lcm"}


@dataclass(frozen=True)
class ModelEntry:
    """One model as configured: its name, where it is, and the defaults its entry sets."""

    name: str
    path: str
    options: Mapping[str, Any] = field(default_factory=dict)  # steps, cfg, sampler, size

    @property
    def turbo(self) -> bool:
        """SD-Turbo, SDXL-Turbo: known by their names (nothing in the weights says it)."""
        return "turbo" in self.name or "turbo" in Path(self.path).name.lower()

    def native_size(self, from_configs: int) -> int:
        """Its native side: the entry's size=, 512 for a Turbo, else what its configs say."""
        return int(self.options.get("size", TURBO_SIZE if self.turbo else from_configs))

    @property
    def scheduler_overrides(self) -> dict[str, Any]:
        """Settings layered over the checkpoint's scheduler config for this model."""
        return dict(TURBO_SCHEDULER) if self.turbo else {}


def parse_models(text: str) -> tuple[ModelEntry, ...]:
    """``IMAGINEBOT_MODELS``; raises ValueError saying which entry is wrong and what is allowed."""
    entries: list[ModelEntry] = []
    for raw in re.split(r"[,\n;]", text):
        if not raw.strip():
            continue
        try:
            words = shlex.split(raw)  # a path with spaces can be quoted
        except ValueError as error:
            raise ValueError(f"entry {raw.strip()!r}: {error}") from None
        name, equals, path = words[0].partition("=")
        name = name.strip().lower()
        if not equals or not path:
            raise ValueError(f"entry {raw.strip()!r} must be name=path, like sd15=/models/v1-5.safetensors")
        if not NAME.fullmatch(name):
            raise ValueError(f"model name {name!r} must be {NAME_ALLOWED}")
        if any(entry.name == name for entry in entries):
            raise ValueError(f"model name {name!r} is given twice; each model needs its own name")
        entries.append(ModelEntry(name, path, _options(name, words[1:])))
    if not entries:
        raise ValueError("names no model; give name=path entries separated by commas")
    return tuple(entries)


def _steps(value: str) -> int:
    steps = int(value)
    if not STEPS_RANGE[0] <= steps <= STEPS_RANGE[1]:
        raise ValueError
    return steps


def _cfg(value: str) -> float:
    cfg = float(value)
    if not CFG_RANGE[0] <= cfg <= CFG_RANGE[1]:
        raise ValueError
    return cfg


def _sampler(value: str) -> str:
    if value.lower() not in SAMPLERS:
        raise ValueError
    return value.lower()


def _size(value: str) -> int:
    size = int(value)
    if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1] or size % 64:
        raise ValueError
    return size


SIZE_RANGE = (256, 2048)
# What a model's entry may set: how to read each, and what is allowed.
_OPTIONS: dict[str, tuple[Any, str]] = {
    "steps": (_steps, f"a whole number from {STEPS_RANGE[0]} to {STEPS_RANGE[1]}"),
    "cfg": (_cfg, f"a number from {CFG_RANGE[0]:g} to {CFG_RANGE[1]:g}"),
    "sampler": (_sampler, "one of " + ", ".join(SAMPLERS)),
    "size": (_size, f"the native side in pixels, a multiple of 64 from {SIZE_RANGE[0]} to {SIZE_RANGE[1]}"),
}


def _options(name: str, words: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or key not in _OPTIONS:
            known = ", ".join(f"{option}=" for option in _OPTIONS)
            raise ValueError(f"model {name!r}: {word!r} is not an option; options are {known}")
        read, allowed = _OPTIONS[key]
        try:
            options[key] = read(value)
        except ValueError:
            raise ValueError(f"model {name!r}: {key} must be {allowed}, not {value!r}") from None
    return options


@dataclass(frozen=True)
class ModelInfo:
    """A model as the bot offers it: what /models shows and what a prompt with ``--model`` gets."""

    name: str
    path: str
    native_size: int  # pixels
    defaults: RequestDefaults  # steps, CFG, sampler, images and aspect when neither prompt nor user sets them
    kind: str = ""  # what it is, for /models: "SD 1.x", "SDXL", "the embedded model"…


def model_defaults(
    entry: ModelEntry, server: RequestDefaults, *, preset: Mapping[str, Any], chosen: Sequence[str] = ()
) -> RequestDefaults:
    """A model's defaults: its entry's options, over the server's own settings (those ``chosen``, i.e. set
    by the operator), over the model's kind (``preset``: Turbo, LCM, the embedded model), over the rest."""
    values: dict[str, Any] = {"steps": server.steps, "cfg": server.cfg, "sampler": server.sampler}
    values |= {key: value for key, value in preset.items() if key not in chosen}
    values |= {key: value for key, value in entry.options.items() if key in values}
    return replace(server, model=entry.name, **values)


@dataclass(frozen=True)
class Catalog:
    """Every model the bot has (the default first) and its LoRA folder."""

    models: tuple[ModelInfo, ...]
    lora_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("the catalog needs at least one model")

    @property
    def default(self) -> ModelInfo:
        return self.models[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(model.name for model in self.models)

    def get(self, name: str) -> ModelInfo:
        """The model of that name ("": the default); KeyError when there is none."""
        if not name:
            return self.default
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def model_or_default(self, name: str) -> ModelInfo:
        """A model by name, or the default where the bot no longer has it (a saved /settings choice, an old
        job's model; a new prompt's --model is checked by ``parse``)."""
        try:
            return self.get(name)
        except KeyError:
            return self.default

    def loras(self) -> dict[str, Path]:
        """The LoRA folder's files by name, read now (a teacher may add one while the bot runs)."""
        return list_loras(self.lora_dir) if self.lora_dir is not None else {}

    def choices(self, mine: Mapping[str, RequestDefaults] | None = None) -> Choices:
        """What a prompt may name; ``mine``: each model's defaults with a user's /settings on top."""
        defaults = mine if mine is not None else {m.name: m.defaults for m in self.models}
        return Choices(defaults=defaults, loras=tuple(self.loras()))

    @classmethod
    def single(cls, native_size: int, defaults: RequestDefaults, name: str = "") -> Catalog:
        """One model and no LoRAs: for tests and tools that run one engine."""
        return cls((ModelInfo(name, "", native_size, replace(defaults, model=name)),))
