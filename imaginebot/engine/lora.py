"""LoRAs per job: loaded into the engine's own UNet and text encoders by diffusers' LoRA loader (PEFT
backend), each the first time a job uses it, kept as a named adapter, and switched on for that job alone.

This is what a pipeline's ``load_lora_weights`` does, called on our components (there is no pipeline object):
``lora_state_dict`` reads the file and converts its layout (kohya/A1111 ``lora_unet_…``/``lora_te_…`` keys,
the diffusers and PEFT layouts), ``load_lora_into_unet`` / ``load_lora_into_text_encoder`` inject it as a PEFT
adapter. Switching is PEFT's own: a call's LoRAs are activated with their weights, and a call without LoRAs
runs with every adapter layer disabled (the base model exactly). The text encoders are switched when
``prepare`` encodes a job's prompt, the UNet before each UNet call of a group (one LoRA set).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin
from diffusers.utils.constants import USE_PEFT_BACKEND
from diffusers.utils.peft_utils import (
    delete_adapter_layers,
    set_adapter_layers,
    set_weights_and_activate_adapters,
)

from imaginebot.engine.lora_files import LoraSet, check_loras, list_loras, lora_set, unknown_lora
from imaginebot.errors import ParamError

log = logging.getLogger(__name__)

LoraFolder = str | os.PathLike[str] | None  # None: no LoRAs

# The parts of a model a LoRA changes, as the prefixes of diffusers' converted state dicts name them.
UNET, TEXT_ENCODER, TEXT_ENCODER_2 = "unet", "text_encoder", "text_encoder_2"


class Loras:
    """The LoRAs of one engine (one worker thread): the folder they come from, the adapters loaded so far,
    and which adapters each part of the model has switched on now."""

    def __init__(
        self, folder: LoraFolder, *, unet: Any, text_encoder: Any, text_encoder_2: Any | None = None
    ) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else None
        if self.folder is not None and not self.folder.is_dir():
            log.warning("the LoRA folder %s does not exist: no LoRAs until it does", self.folder)
        self.parts: dict[str, Any] = {UNET: unet, TEXT_ENCODER: text_encoder}
        if text_encoder_2 is not None:
            self.parts[TEXT_ENCODER_2] = text_encoder_2
        self.is_sdxl = text_encoder_2 is not None
        # name -> (its adapter, the parts it changes); the adapter names are ours, as a file's stem may hold
        # dots, which PEFT's module dicts refuse
        self._loaded: dict[str, tuple[str, frozenset[str]]] = {}
        self._adapter_ids = itertools.count()  # never reused, not even a failed load's
        # per part, the (adapter, weight) pairs switched on now; a part missing here is in an unknown state
        self._active: dict[str, tuple[tuple[str, float], ...]] = {}

    @property
    def loaded(self) -> list[str]:
        """The names of the LoRAs loaded so far, in the order they were."""
        return list(self._loaded)

    def changes(self, name: str) -> frozenset[str]:
        """The parts of the model (``unet``, ``text_encoder``, ``text_encoder_2``) a loaded LoRA changes."""
        return self._loaded[name][1]

    def apply_to_text_encoders(self, loras: Sequence[tuple[str, float]]) -> None:
        """Before a job's prompt is encoded: its LoRAs on the text encoder(s), and no other. Loads a LoRA the
        first time it is used. ParamError for a name not in the folder, a weight out of range, or a file that
        is not a LoRA for this model (nothing of which then stays loaded)."""
        if loras:
            check_loras(loras, list_loras(self.folder))
        self._apply([part for part in self.parts if part != UNET], lora_set(loras))

    def apply_to_unet(self, loras: Sequence[tuple[str, float]]) -> None:
        """Before a UNet call: the call's LoRAs (one group's) on the UNet, and no other."""
        self._apply([UNET], lora_set(loras))

    def _apply(self, parts: list[str], loras: LoraSet) -> None:
        for name, _ in loras:
            if name not in self._loaded:
                self._load(name)
        for part in parts:
            wanted = tuple((self._loaded[name][0], w) for name, w in loras if part in self._loaded[name][1])
            if self._active.get(part) == wanted:
                continue  # the same as the last call: no walk over the model's modules
            if any(part in changed for _, changed in self._loaded.values()):
                model = self.parts[part]
                set_adapter_layers(model, enabled=bool(wanted))  # type: ignore[no-untyped-call]
                if wanted:
                    adapters, weights = zip(*wanted, strict=True)
                    set_weights_and_activate_adapters(model, list(adapters), list(weights))  # type: ignore[no-untyped-call]
            self._active[part] = wanted

    def _load(self, name: str) -> None:
        available = list_loras(self.folder)
        if name not in available:
            raise ParamError(unknown_lora(name, available))
        if not USE_PEFT_BACKEND:
            raise ParamError("LoRAs need the peft package, which the bot's machine lacks (pip install peft)")
        path, adapter = available[name], f"lora{next(self._adapter_ids)}"
        self._active.clear()  # loading switches the new adapter on where it lands
        try:
            changed = self._load_file(path, adapter)
        except Exception as e:
            self._unload(adapter)
            if isinstance(e, torch.cuda.OutOfMemoryError | MemoryError) or "out of memory" in str(e).lower():
                raise  # the engine's to report: the file may be fine
            log.warning("LoRA %r (%s) could not be loaded: %s: %s", name, path, type(e).__name__, e)
            raise ParamError(f"LoRA {name!r} cannot be used with this model: {_reason(e)}") from e
        self._loaded[name] = (adapter, changed)
        log.info("loaded LoRA %r from %s into the %s", name, path, ", ".join(sorted(changed)))

    def _load_file(self, path: Path, adapter: str) -> frozenset[str]:
        """diffusers' loading, as in ``load_lora_weights``, then a check that every layer found a place."""
        loader = StableDiffusionXLLoraLoaderMixin if self.is_sdxl else StableDiffusionLoraLoaderMixin
        unet = self.parts[UNET]
        # SDXL: kohya names the UNet's blocks as the original (sgm) code does; the config maps them
        options = {"unet_config": unet.config} if self.is_sdxl else {}
        state_dict, alphas, metadata = loader.lora_state_dict(str(path), return_lora_metadata=True, **options)
        not_lora = [key for key in state_dict if "lora" not in key]
        if not state_dict or not_lora:
            raise _NotALora(
                f"it holds no LoRA weights (it has {not_lora[0]!r})" if not_lora else "it is empty"
            )
        with _adapter_bookkeeping():
            loader.load_lora_into_unet(state_dict, alphas, unet, adapter_name=adapter, metadata=metadata)
            for part in [part for part in self.parts if part != UNET]:
                loader.load_lora_into_text_encoder(
                    state_dict, alphas, self.parts[part], prefix=part, adapter_name=adapter, metadata=metadata
                )
        # diffusers only logs the weights it could not place (another model's layers, a part this model lacks,
        # a layout it misreads): a LoRA that would apply in part is refused here instead
        layers = {part: _adapter_layers(model, adapter) for part, model in self.parts.items()}
        expected, placed = sum(1 for key in state_dict if _is_down_weight(key)), sum(layers.values())
        if expected == 0:
            raise _NotALora(
                "it has no LoRA layers in a layout diffusers reads (LoRA down/up or lora_A/lora_B)"
            )
        if placed != expected:
            raise _NotALora(
                f"{'none' if placed == 0 else f'only {placed}'} of its {expected} layers match this model's "
                "(is it a LoRA for another base model, e.g. SDXL rather than SD 1.5?)"
            )
        return frozenset(part for part, count in layers.items() if count)

    def _unload(self, adapter: str) -> None:
        """After a failed load: nothing of the adapter may stay in any part (the engine carries on)."""
        for model in self.parts.values():
            if adapter in (getattr(model, "peft_config", None) or {}) or _adapter_layers(model, adapter):
                with _adapter_bookkeeping():
                    delete_adapter_layers(model, adapter)  # type: ignore[no-untyped-call]
                if getattr(model, "peft_config", None):
                    model.peft_config.pop(adapter, None)


class _NotALora(ValueError):
    """A file diffusers read without complaint that is still no LoRA for this model."""


def _adapter_layers(model: Any, adapter: str) -> int:
    """How many of ``model``'s layers carry ``adapter``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(
        1
        for module in model.modules()
        if isinstance(module, BaseTunerLayer) and adapter in getattr(module, "lora_A", {})
    )


def _is_down_weight(key: str) -> bool:
    """One key per LoRA layer, in each layout diffusers' converters give: PEFT's ``lora_A`` and the older
    diffusers ``….lora.down.weight``, ``…_lora.down.weight`` and ``lora_linear_layer.down.weight``."""
    return key.endswith(("lora_A.weight", "lora.down.weight", "lora_linear_layer.down.weight"))


def _reason(error: Exception) -> str:
    """What went wrong, in a sentence for a chat reply (no file paths: the user sees it)."""
    text = " ".join(str(error).split())
    if isinstance(error, _NotALora):
        return text
    shape = re.search(
        r"size mismatch for (\S+?)\.lora_[AB]\.\S+ copying a param with shape torch\.Size\((\[.*?\])\) "
        r"from checkpoint, the shape in current model is torch\.Size\((\[.*?\])\)",
        text,
    )
    if shape:
        layer, theirs, ours = shape.groups()
        return f"its weights for the layer {layer} have the shape {theirs}, where this model needs {ours}"
    if "not found in the base model" in text:
        return "its layers are not this model's (is it a LoRA for another base model?)"
    if "ignore_mismatched_sizes" in text:  # transformers, for a text encoder
        return (
            "its text encoder weights have the wrong shapes for this model (a LoRA for another base model?)"
        )
    if "Unable to load weights from checkpoint file" in text:
        return "the file cannot be read (neither safetensors nor a PyTorch state dict)"
    if "have not been correctly renamed" in text:
        return "it is not a plain LoRA (LoHa, LoKr and other LyCORIS kinds are not supported)"
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return "it does not fit this model (" + (text if len(text) <= 160 else text[:160] + "…") + ")"


@contextlib.contextmanager
def _adapter_bookkeeping() -> Iterator[None]:
    """Without PEFT's warnings about what is meant here: several adapters in one model (on every adapter after
    the first) and, when a failed one is deleted, another made active (each call sets its own anyway)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Already found a `peft_config` attribute", UserWarning)
        warnings.filterwarnings("ignore", "Adapter .* was active which is now deleted", UserWarning)
        yield
