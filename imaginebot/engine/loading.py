"""Load a diffusers-format checkpoint (a folder, or a hub id already in the local cache) into an engine; a
single-file checkpoint goes to ``single_file``.

The components are loaded one by one from the folder's subfolders (tokenizer, text_encoder, [tokenizer_2,
text_encoder_2], unet, vae, scheduler), the same way for SD 1.x/2.x, SDXL and our embedded model: nothing
about channel counts or the VAE's scale factor is assumed, all of it comes from the configs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from imaginebot.engine._types import UNet, Vae
from imaginebot.engine.devices import resolve_device, resolve_dtype
from imaginebot.engine.pipeline import DiffusionEngine
from imaginebot.engine.single_file import is_single_file, load_single_file
from imaginebot.errors import ModelNotFound

log = logging.getLogger(__name__)

_REQUIRED = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")


def load_engine(
    model: str | os.PathLike[str],
    *,
    device: str | None = None,
    dtype: str | None = None,
    upscale_max_side: int = 2048,
    offline: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    lora_dir: str | os.PathLike[str] | None = None,
) -> DiffusionEngine:
    """An engine for ``model``: a diffusers folder, a single-file checkpoint (.safetensors or .ckpt, see
    ``single_file``), or a hub id (from the local cache unless offline=False).

    ``device``: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps"; ``dtype``: "auto"
    (float16 on a GPU, float32 on the CPU), "float32", "float16" or "bfloat16". ``lora_dir``: the folder of
    the LoRAs jobs may use (``GenerateSpec.loras``), None for none.
    """
    if is_single_file(model):
        return load_single_file(
            model, device=device, dtype=dtype, upscale_max_side=upscale_max_side, lora_dir=lora_dir
        )
    folder = find_model_folder(model, offline=offline, cache_dir=cache_dir)
    index = _model_index(folder)
    missing = [name for name in _REQUIRED if not (folder / name).is_dir()]
    if missing:
        raise ModelNotFound(
            f"{folder} is not a Stable Diffusion checkpoint this bot can run: it lacks {', '.join(missing)}/ "
            "(SD 1.x, SD 2.x and SDXL base checkpoints in the diffusers layout are supported)"
        )
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    log.info("loading %s from %s on %s as %s", model, folder, torch_device, torch_dtype)

    is_sdxl = (folder / "text_encoder_2").is_dir()
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(
        folder / "text_encoder", dtype=torch_dtype, variant=_variant(folder / "text_encoder", torch_dtype)
    )
    tokenizer_2 = text_encoder_2 = None
    if is_sdxl:
        tokenizer_2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
            folder / "text_encoder_2",
            dtype=torch_dtype,
            variant=_variant(folder / "text_encoder_2", torch_dtype),
        )
    unet: UNet = UNet2DConditionModel.from_pretrained(  # type: ignore[no-untyped-call]
        folder, subfolder="unet", torch_dtype=torch_dtype, variant=_variant(folder / "unet", torch_dtype)
    )
    vae: Vae = AutoencoderKL.from_pretrained(  # type: ignore[no-untyped-call]
        folder, subfolder="vae", torch_dtype=torch_dtype, variant=_variant(folder / "vae", torch_dtype)
    )
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return DiffusionEngine.from_components(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        tokenizer_2=tokenizer_2,
        text_encoder_2=text_encoder_2,
        unet=unet,
        vae=vae,
        scheduler=scheduler_config,
        device=str(torch_device),
        dtype=str(torch_dtype).removeprefix("torch."),
        upscale_max_side=upscale_max_side,
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
        lora_dir=lora_dir,
    )


def find_model_folder(
    model: str | os.PathLike[str], *, offline: bool = True, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The folder holding ``model``: the path itself, or the hub id's snapshot in the local cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    name = str(model)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelNotFound(f"model {name!r} is not a folder (looked at {path.resolve()}) and not a hub id")
    from huggingface_hub import constants, snapshot_download

    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    try:
        if offline:
            return Path(snapshot_download(name, local_files_only=True, cache_dir=cache))
        from diffusers import DiffusionPipeline

        return Path(DiffusionPipeline.download(name, cache_dir=cache))
    except Exception as e:
        how = (
            f"download it once with `hf download {name}` (or `huggingface-cli download {name}`), "
            "or allow downloads (offline=False), or point the model setting at a diffusers folder"
        )
        where = "is not in the local Hugging Face cache" if offline else "could not be downloaded"
        raise ModelNotFound(f"model {name!r} {where} (looked in {cache}): {how}") from e


def _model_index(folder: Path) -> dict[str, Any]:
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelNotFound(f"{folder} is not a diffusers model folder: it has no model_index.json")
    index: dict[str, Any] = json.loads(index_file.read_text())
    return index


def _variant(subfolder: Path, dtype: torch.dtype) -> str | None:
    """ "fp16" when the fp16 weights are wanted and present, or are the only weights there."""
    names = [p.name for p in subfolder.iterdir()] if subfolder.is_dir() else []
    weights = [n for n in names if n.endswith((".safetensors", ".bin"))]
    has_fp16 = any(".fp16." in n for n in weights)
    has_plain = any(".fp16." not in n for n in weights)
    if has_fp16 and (dtype == torch.float16 or not has_plain):
        return "fp16"
    return None
