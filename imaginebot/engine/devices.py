"""Device and dtype choice from the settings' strings, and freeing memory after an OOM."""

from __future__ import annotations

import gc

import torch

from imaginebot.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | None) -> torch.device:
    """ "auto" (or None): CUDA, then Apple's MPS, then the CPU."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"device {device!r} is not one of: {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asks for CUDA, but this PyTorch sees no CUDA GPU")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA GPU(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} asks for MPS, but it is not available here")
    return torch.device(name)


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """ "auto" (or None): float16 on a GPU (CUDA, MPS), float32 on the CPU."""
    name = (dtype or "auto").strip().lower()
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of: auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def free_memory(device: torch.device) -> None:
    """After an out-of-memory error: drop what the failed job held and give the cached blocks back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
