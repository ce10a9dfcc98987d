"""The LoRA folder and the rules for a job's LoRAs, without torch (the job service checks names with these).

A LoRA is a file in the bot's LoRA folder; its name is the file's stem (``ghibli_style.safetensors`` is
``ghibli_style``). ``lora.py`` loads and applies them in the engine.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path

from imaginebot.errors import ParamError

# safetensors first: when two files share a stem, it is the one used (.pt and .bin are pickles)
LORA_SUFFIXES = (".safetensors", ".pt", ".bin")
MIN_LORA_WEIGHT, MAX_LORA_WEIGHT = 0.0, 2.0

LoraSet = tuple[tuple[str, float], ...]


def list_loras(folder: str | Path | None) -> dict[str, Path]:
    """The LoRAs in ``folder`` (not its subfolders), name -> file, sorted by name; {} without a folder."""
    if folder is None or not Path(folder).is_dir():
        return {}
    found: dict[str, Path] = {}
    for suffix in reversed(LORA_SUFFIXES):  # the preferred suffix last, so it wins a shared stem
        for path in Path(folder).glob(f"*{suffix}"):
            if path.is_file() and not path.name.startswith("."):
                found[path.stem] = path
    return dict(sorted(found.items()))


def check_loras(loras: Sequence[tuple[str, float]], available: Mapping[str, Path]) -> None:
    """Raise ParamError unless every name is in ``available`` (``list_loras``), once, at a weight of 0-2."""
    seen: set[str] = set()
    for name, weight in loras:
        if name not in available:
            raise ParamError(unknown_lora(name, available))
        if name in seen:
            raise ParamError(f"LoRA {name!r} is given twice; give it once, with one weight")
        seen.add(name)
        if not MIN_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:
            allowed = f"from {MIN_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}"
            raise ParamError(f"LoRA {name!r}: the weight must be {allowed}, got {weight:g}")


def unknown_lora(name: str, available: Mapping[str, Path]) -> str:
    """The sentence for a LoRA name that is not in the folder, with the closest names."""
    if not available:
        return f"LoRA {name!r} is not available: this bot has no LoRAs"
    close = difflib.get_close_matches(name, list(available), n=3, cutoff=0.5)
    if close:
        return f"LoRA {name!r} is not available; did you mean {' or '.join(map(repr, close))}?"
    shown = ", ".join(list(available)[:10]) + (", …" if len(available) > 10 else "")
    return f"LoRA {name!r} is not available; the LoRAs are: {shown}"


def lora_set(loras: Sequence[tuple[str, float]]) -> LoraSet:
    """A job's LoRAs as the engine applies them and groups jobs by: sorted by name, weights as floats,
    weight 0 left out (a LoRA at weight 0 changes nothing, so such a job batches with jobs without it)."""
    return tuple(sorted((name, float(weight)) for name, weight in loras if weight != 0))
