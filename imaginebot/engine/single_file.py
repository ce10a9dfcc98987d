"""Single-file checkpoints (A1111 / ComfyUI ``.safetensors`` or ``.ckpt``, the LDM key layout), offline.

The file's header alone tells its kind, by the marker keys and shapes that diffusers'
``infer_diffusers_model_type`` looks at: SD 1.x, SD 2.x (512 epsilon or 768 v-prediction) or SDXL base.
Each kind's diffusers configs ship with the bot (``models/configs/<hub repo>/``: the official ones, without
weights) and go to diffusers' single-file loaders as ``config=`` with ``local_files_only``, so nothing asks
the hub for them; the tokenizers are built from the shipped CLIP merges (``clip_tokenizer``). Reading the
header of a ``.safetensors`` needs no torch: the bot plans from a file it never loads
(``Planner.from_checkpoint``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaginebot.errors import ModelNotFound

if TYPE_CHECKING:
    from imaginebot.engine.pipeline import DiffusionEngine

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[1] / "models" / "configs"
SUFFIXES = (".safetensors", ".ckpt", ".pt")
SUPPORTED = "SD 1.x, SD 2.x (512 and 768-v) and SDXL base checkpoints"

UNET = "model.diffusion_model."
VAE = "first_stage_model."
# diffusers' CHECKPOINT_KEY_NAMES (loaders/single_file_utils.py), the ones that tell our kinds from the rest
KEY_V1 = UNET + "output_blocks.11.0.skip_connection.weight"
KEY_V2 = UNET + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"  # [-1]: 1024 on SD 2.x
KEY_XL_BASE = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
KEY_XL_REFINER = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
KEY_IN = UNET + "input_blocks.0.0.weight"  # [1]: 9 inpainting, 8 instruct-pix2pix
KEY_UPSCALE = UNET + "input_blocks.10.0.skip_connection.bias"
KEYS_CONTROLNET = ("control_model.time_embed.0.weight", "controlnet_cond_embedding.conv_in.weight")
SD2_BASE_GLOBAL_STEP = 875000  # the step of the SD 2.x 512 (epsilon) release, as diffusers tells it


@dataclass(frozen=True)
class CheckpointKind:
    name: str  # what the user is told
    config: str  # the folder of its configs under models/configs (named after the hub repo they are from)
    parts: tuple[tuple[str, str], ...]  # (what, LDM key prefix) of each component the file must hold

    @property
    def folder(self) -> Path:
        return CONFIGS / self.config


_CLIP, _OPENCLIP = "the CLIP text encoder", "the OpenCLIP text encoder"
SD1 = CheckpointKind(
    "SD 1.x",
    "stable-diffusion-v1-5",
    (("the UNet", UNET), ("the VAE", VAE), (_CLIP, "cond_stage_model.transformer.")),
)
_SD2_PARTS = (("the UNet", UNET), ("the VAE", VAE), (_OPENCLIP, "cond_stage_model.model."))
SD2_BASE = CheckpointKind("SD 2.x 512 (epsilon)", "stable-diffusion-2-1-base", _SD2_PARTS)
SD2_V = CheckpointKind("SD 2.x 768 (v-prediction)", "stable-diffusion-2-1", _SD2_PARTS)
SDXL = CheckpointKind(
    "SDXL base",
    "stable-diffusion-xl-base-1.0",
    (
        ("the UNet", UNET),
        ("the VAE", VAE),
        (_CLIP, "conditioner.embedders.0.transformer."),
        (_OPENCLIP, "conditioner.embedders.1.model."),
    ),
)


@dataclass(frozen=True)
class Header:
    """What a checkpoint holds, without its weights: each tensor's shape, and the training step if saved."""

    path: Path
    shapes: Mapping[str, tuple[int, ...]]
    global_step: int | None = None


def is_single_file(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` names a single-file checkpoint (by its suffix; it need not exist)."""
    return Path(model).suffix.lower() in SUFFIXES


def read_header(path: str | os.PathLike[str]) -> Header:
    """The checkpoint's header: a ``.safetensors`` is read up to its tensors, a ``.ckpt`` is mapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    if path.suffix.lower() == ".safetensors":
        return Header(path, _safetensors_shapes(path))
    return _torch_header(path)


def detect_kind(header: Header) -> CheckpointKind:
    """The kind of checkpoint, by diffusers' rules; ModelNotFound naming what it is when we can't run it."""
    shapes, path = header.shapes, header.path
    if not any(key.startswith(UNET) for key in shapes):
        raise _unsupported(path, _not_a_model(shapes))
    in_channels = shapes.get(KEY_IN, (0, 4))[1]
    if in_channels != 4:
        what = {9: "an inpainting model", 8: "an instruct-pix2pix model"}.get(in_channels, "a model")
        raise _unsupported(path, f"{what} ({in_channels} input channels)")
    if KEY_V2 in shapes and shapes[KEY_V2][-1] == 1024:
        return _sd2_kind(header)
    if "edm_mean" in shapes:
        raise _unsupported(path, "a Playground v2.5 model")
    if KEY_XL_BASE in shapes:
        return SDXL
    if KEY_XL_REFINER in shapes:
        raise _unsupported(path, "an SDXL refiner")
    if KEY_UPSCALE in shapes:
        raise _unsupported(path, "an SD x4 upscaler")
    if any(key in shapes for key in KEYS_CONTROLNET):
        raise _unsupported(path, "a ControlNet")
    if KEY_V1 in shapes:
        return SD1
    raise _unsupported(path, "a UNet of no Stable Diffusion version we know")


def checkpoint_kind(path: str | os.PathLike[str]) -> CheckpointKind:
    """The kind of a whole checkpoint (every component present), from its header."""
    return _whole_kind(read_header(path))


def _whole_kind(header: Header) -> CheckpointKind:
    kind = detect_kind(header)
    missing = [
        (what, prefix) for what, prefix in kind.parts if not any(k.startswith(prefix) for k in header.shapes)
    ]
    if missing:
        lacks = " and ".join(f"{what} (no {prefix}* keys)" for what, prefix in missing)
        raise ModelNotFound(
            f"{header.path} is an {kind.name} checkpoint without {lacks}; the bot needs a whole model"
        )
    return kind


def model_configs(
    path: str | os.PathLike[str], config: str | os.PathLike[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The UNet's and the VAE's diffusers configs of a checkpoint (``config``: a folder to take them from)."""
    folder = Path(config) if config is not None else checkpoint_kind(path).folder
    unet, vae = (json.loads((folder / part / "config.json").read_text()) for part in ("unet", "vae"))
    return unet, vae


def load_single_file(
    path: str | os.PathLike[str],
    *,
    device: str | None = None,
    dtype: str | None = None,
    upscale_max_side: int = 2048,
    lora_dir: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> DiffusionEngine:
    """An engine for a single-file checkpoint, with no download (the options are ``load_engine``'s).

    ``config``: a folder in the diffusers layout (configs, tokenizer, scheduler; no weights) to build the
    models from instead of the shipped configs of the checkpoint's kind (a fine-tune of other sizes).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        create_diffusers_clip_model_from_ldm,
        load_single_file_checkpoint,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from imaginebot.engine.clip_tokenizer import clip_tokenizer
    from imaginebot.engine.devices import resolve_device, resolve_dtype
    from imaginebot.engine.pipeline import DiffusionEngine

    path = Path(path).expanduser()
    header = read_header(path)
    kind = _whole_kind(header)
    folder = Path(config) if config is not None else kind.folder
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    check_weights(header, kind, folder)
    log.info("loading %s (%s, configs %s) on %s as %s", path, kind.name, folder, torch_device, torch_dtype)

    with _reading(path, "its weights"):
        checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)  # type: ignore[no-untyped-call]
    # every loader below finds its config in `folder` and never asks the hub
    offline: dict[str, Any] = {"config": str(folder), "local_files_only": True, "torch_dtype": torch_dtype}
    is_sdxl = kind is SDXL
    with _reading(path, "the UNet"):
        unet = UNet2DConditionModel.from_single_file(checkpoint, subfolder="unet", **offline)
    with _reading(path, "the VAE"):
        vae = AutoencoderKL.from_single_file(checkpoint, subfolder="vae", **offline)
    with _reading(path, kind.parts[2][0]):
        text_encoder = create_diffusers_clip_model_from_ldm(  # type: ignore[no-untyped-call]
            CLIPTextModel, checkpoint, "text_encoder", **offline
        )
    text_encoder_2 = None
    if is_sdxl:
        with _reading(path, _OPENCLIP):
            text_encoder_2 = create_diffusers_clip_model_from_ldm(  # type: ignore[no-untyped-call]
                CLIPTextModelWithProjection, checkpoint, "text_encoder_2", **offline
            )
    del checkpoint  # the models hold their own copies (in torch_dtype) from here
    _complete(
        path, {"the UNet": unet, "the VAE": vae, kind.parts[2][0]: text_encoder, _OPENCLIP: text_encoder_2}
    )

    index = json.loads((folder / "model_index.json").read_text())
    return DiffusionEngine.from_components(
        tokenizer=clip_tokenizer(folder / "tokenizer"),
        text_encoder=text_encoder,
        tokenizer_2=clip_tokenizer(folder / "tokenizer_2") if is_sdxl else None,
        text_encoder_2=text_encoder_2,
        unet=unet,
        vae=vae,
        # the file as it is, as load_engine reads a folder's: what it leaves out, each sampler's class fills
        scheduler=json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
        device=str(torch_device),
        dtype=str(torch_dtype).removeprefix("torch."),
        upscale_max_side=upscale_max_side,
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
        lora_dir=lora_dir,
    )


def check_weights(header: Header, kind: CheckpointKind, folder: Path | None = None) -> None:
    """Every weight the models need is in the file, at its shape, before any is read: diffusers' own
    converters run on the header's shapes (meta tensors), the models are built on the meta device, and the
    two are compared. (Loading a file that lacks some would fail on the meta tensors left, saying no name.)"""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = folder or kind.folder
    meta = {key: torch.empty(shape, device="meta") for key, shape in header.shapes.items()}
    with torch.device("meta"):
        unet: Any = UNet2DConditionModel.from_config(  # type: ignore[no-untyped-call]
            UNet2DConditionModel.load_config(folder, subfolder="unet")
        )
        vae: Any = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))  # type: ignore[no-untyped-call]
    converted: list[tuple[str, Any, dict[str, Any]]] = []
    with _reading(header.path, "the UNet"):
        converted.append(("the UNet", unet, convert_ldm_unet_checkpoint(meta, unet.config)))  # type: ignore[no-untyped-call]
    with _reading(header.path, "the VAE"):
        converted.append(("the VAE", vae, convert_ldm_vae_checkpoint(meta, vae.config)))  # type: ignore[no-untyped-call]
    encoders: list[tuple[type[Any], str]] = [
        (CLIPTextModel, "text_encoder"),
        (CLIPTextModelWithProjection, "text_encoder_2"),
    ]
    for (cls, subfolder), (what, prefix) in zip(encoders, kind.parts[2:], strict=False):  # SD 1.x/2.x: one
        with torch.device("meta"):
            model = cls(CLIPTextConfig.from_pretrained(folder / subfolder))
        with _reading(header.path, what):
            if what == _CLIP:
                weights = convert_ldm_clip_checkpoint(meta)  # type: ignore[no-untyped-call]
            else:
                weights = convert_open_clip_checkpoint(model, meta, prefix=prefix)  # type: ignore[no-untyped-call]
        if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
            weights = {key.removeprefix("text_model."): value for key, value in weights.items()}
        converted.append((what, model, weights))
    for what, model, weights in converted:
        expected = model.state_dict()
        missing = [key for key in expected if key not in weights]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ModelNotFound(f"{header.path} lacks weights of {what}: {missing[0]}{more}")
        for key, tensor in expected.items():
            if tuple(weights[key].shape) != tuple(tensor.shape):
                raise ModelNotFound(
                    f"{header.path} is not the {kind.name} architecture: {what}'s {key} has the shape "
                    f"{tuple(weights[key].shape)}, where the {folder.name} configs have {tuple(tensor.shape)}"
                )


# -- the header ---------------------------------------------------------------------------------------------

_MAX_HEADER = 100_000_000  # the safetensors format's own limit on the JSON header


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """A safetensors file is 8 bytes (little-endian header length), a JSON header, then the tensors' bytes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        start = f.read(8)
        if start.startswith(b"PK\x03\x04") or start[:1] == b"\x80":
            raise ModelNotFound(
                f"{path} is not a safetensors file: it is a PyTorch pickle; name it .ckpt to load it as one"
            )
        (length,) = struct.unpack("<Q", start) if len(start) == 8 else (0,)
        if not 2 <= length <= _MAX_HEADER:
            raise ModelNotFound(f"{path} is not a safetensors file: its first 8 bytes are no header length")
        raw = f.read(length)
    if len(raw) < length and raw[:1] == b"{":
        raise ModelNotFound(
            f"{path} is truncated: its header alone is {8 + length} bytes, the file has {size}"
        )
    try:
        header = json.loads(raw)
        header.pop("__metadata__", None)
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
        shapes = {key: tuple(int(n) for n in t["shape"]) for key, t in header.items()}
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise ModelNotFound(
            f"{path} is not a safetensors file: its header is not a table of tensors"
        ) from None
    if size < 8 + length + end:
        raise ModelNotFound(
            f"{path} is truncated: its header says {8 + length + end} bytes, the file has {size} "
            "(a download that stopped? fetch it again)"
        )
    return shapes


def _torch_header(path: Path) -> Header:
    """A ``.ckpt``: a pickled (usually zipped) dict, mapped into memory rather than read (weights_only: no
    code from the file runs). Its training step, outside ``state_dict``, tells SD 2.x 512 from 768."""
    import zipfile

    import torch

    with _reading(path, "its pickle"):
        obj: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    step = obj.get("global_step") if isinstance(obj, dict) else None
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelNotFound(
            f"{path} is not a checkpoint: it holds a {type(obj).__name__}, not a table of tensors"
        )
    shapes = {key: tuple(t.shape) for key, t in obj.items() if isinstance(t, torch.Tensor)}
    return Header(path, shapes, int(step) if isinstance(step, int | torch.Tensor) else None)


def _sd2_kind(header: Header) -> CheckpointKind:
    """SD 2.x at 768 predicts v, at 512 (2.0-base, 2.1-base) epsilon, and the weights have the same shapes.

    As diffusers decides (``_legacy_load_scheduler``, and its original converter): epsilon for the 512 base's
    training step, v-prediction otherwise (its default config for SD 2.x is stable-diffusion-2-1, 768-v).
    A1111's own way of telling, a ``.yaml`` beside the file, wins when there is one: ``parameterization: "v"``
    is v-prediction, its absence epsilon (the LDM default).
    """
    yaml = header.path.with_suffix(".yaml")
    if yaml.is_file():
        is_v = re.search(r"""^\s*parameterization:\s*["']?v["']?\s*$""", yaml.read_text(), re.MULTILINE)
        log.info("%s says %s", yaml, "v-prediction" if is_v else "epsilon")
        return SD2_V if is_v else SD2_BASE
    return SD2_BASE if header.global_step == SD2_BASE_GLOBAL_STEP else SD2_V


def _not_a_model(shapes: Mapping[str, Any]) -> str:
    """What a file without a Stable Diffusion UNet holds, as far as its keys tell."""
    keys = list(shapes)
    if any("lora" in key for key in keys):
        return "a LoRA, not a whole model"
    if any(key in shapes for key in ("string_to_param", "emb_params", "clip_l", "clip_g")):
        return "a textual-inversion embedding, not a whole model"
    if any(key.startswith(("encoder.down.", "decoder.up.", VAE)) for key in keys):
        return "a VAE alone, not a whole model"
    if any(key.startswith(("down_blocks.", "conv_in.")) for key in keys):
        return "a UNet in the diffusers layout (point the model at its whole diffusers folder instead)"
    return "not a Stable Diffusion checkpoint (it has no model.diffusion_model.* keys)"


def _unsupported(path: Path, what: str) -> ModelNotFound:
    return ModelNotFound(f"{path} is {what}, which the bot does not run; it runs {SUPPORTED}")


# -- loading ------------------------------------------------------------------------------------------------


def _first_line(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return f"{e.args[0]!r} is missing"
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _out_of_memory(e: Exception) -> bool:
    import torch

    return isinstance(e, MemoryError | torch.OutOfMemoryError)


@contextlib.contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """One line naming the file and what of it failed, for the many kinds of error torch, safetensors and
    diffusers' converters raise for one cause (a file that is not a whole checkpoint of its kind)."""
    try:
        yield
    except Exception as e:
        if _out_of_memory(e):
            raise
        raise ModelNotFound(f"{path}: could not read {what}: {_first_line(e)}") from e


def _complete(path: Path, models: Mapping[str, Any]) -> None:
    """What check_weights could not foresee: weights left on the meta device, where diffusers builds them."""
    for what, model in models.items():
        missing = [name for name, p in model.named_parameters() if p.is_meta] if model is not None else []
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ModelNotFound(f"{path} lacks weights of {what}: {missing[0]}{more}")
