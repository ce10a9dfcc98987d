"""Diffusers -> the original LDM key layout (A1111 / ComfyUI single files) of SD 1.x/2.x and SDXL, for tests.

The inverse of diffusers' single-file converters, after diffusers' own
``scripts/convert_diffusers_to_original_stable_diffusion.py`` (and its SDXL twin): tables of
(diffusers prefix -> LDM prefix), renames inside a ResNet or an attention block, the VAE's attention weights
as 1x1 convolutions, OpenCLIP's fused q/k/v projection. Any channel counts: the block counts come from the
configs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

UNET, VAE = "model.diffusion_model.", "first_stage_model."
# each kind's text encoders: CLIP's ("...transformer.") keep HF's names, OpenCLIP's ("...model.") their own
SD1_TEXT = ("cond_stage_model.transformer.",)
SD2_TEXT = ("cond_stage_model.model.",)
SDXL_TEXT = ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model.")

UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_prefixes(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers prefix -> LDM prefix, for the UNet of ``config``."""
    layers = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    prefixes = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",  # SDXL's size and crop conditioning
        "add_embedding.linear_2.": "label_emb.0.2.",
    }
    for i in range(levels):
        for j in range(layers):  # input_blocks: conv_in, then per level its layers and a downsampler
            block = 1 + i * (layers + 1) + j
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{block}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{block}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op."
        for j in range(layers + 1):  # output_blocks: per level one more layer, the upsampler in the last
            block = i * (layers + 1) + j
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{block}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{block}.1."
        with_attention = "CrossAttn" in config["up_block_types"][i]
        upsampler = f"output_blocks.{i * (layers + 1) + layers}.{2 if with_attention else 1}."
        prefixes[f"up_blocks.{i}.upsamplers.0."] = upsampler
    return prefixes


def vae_prefixes(config: Mapping[str, Any]) -> dict[str, str]:
    layers = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    prefixes = {}
    for i in range(levels):  # the decoder's up blocks count the other way in LDM
        for j in range(layers):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        for j in range(layers + 1):
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{levels - 1 - i}.block.{j}."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{levels - 1 - i}.upsample."
    for part in ("encoder", "decoder"):
        for j in range(2):
            prefixes[f"{part}.mid_block.resnets.{j}."] = f"{part}.mid.block_{j + 1}."
        prefixes[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
        prefixes[f"{part}.conv_norm_out."] = f"{part}.norm_out."
    return prefixes


def _rename(key: str, prefixes: Mapping[str, str], inner: Mapping[str, str]) -> str:
    """The LDM name of ``key``: its prefix from the table, the start of the rest from ``inner``."""
    prefix = next((p for p in prefixes if key.startswith(p)), "")
    rest = key[len(prefix) :]
    for old, new in inner.items():
        if rest.startswith(old + "."):
            rest = new + rest[len(old) :]
            break
    return prefixes.get(prefix, "") + rest


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    prefixes = unet_prefixes(config)
    return {
        UNET + _rename(k, prefixes, UNET_RESNET if ".resnets." in k else {}): v for k, v in state_dict.items()
    }


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    prefixes = vae_prefixes(config)
    out = {}
    for key, value in state_dict.items():
        if ".attentions." in key:
            name = _rename(key, prefixes, VAE_ATTENTION)
            if value.ndim == 2:  # LDM's VAE attention projects with 1x1 convolutions
                value = value.reshape(*value.shape, 1, 1).clone()
        else:
            name = _rename(key, prefixes, VAE_RESNET if ".resnets." in key else {})
        out[VAE + name] = value
    return out


def clip_to_ldm(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """CLIP-L keeps the CLIPTextModel's own names under a prefix (transformers >= 5.6 drops "text_model.")."""
    return {
        prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state_dict.items()
    }


OPENCLIP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.": "ln_final.",
    "encoder.layers.": "transformer.resblocks.",
    ".layer_norm1.": ".ln_1.",
    ".layer_norm2.": ".ln_2.",
    ".mlp.fc1.": ".mlp.c_fc.",
    ".mlp.fc2.": ".mlp.c_proj.",
    ".self_attn.out_proj.": ".attn.out_proj.",
}


def openclip_to_ldm(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP's names; q, k and v in one in_proj; the projection as a matrix to multiply by (transposed)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}  # in_proj name -> q, k, v (state dicts list them k, v, q)
    for key, value in state_dict.items():
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
            continue
        name = key.removeprefix("text_model.")
        for old, new in OPENCLIP.items():
            name = name.replace(old, new)
        for part in ("q", "k", "v"):
            if f".self_attn.{part}_proj." in name:
                layer, kind = name.split(f".self_attn.{part}_proj.")
                qkv.setdefault(f"{prefix}{layer}.attn.in_proj_{kind}", {})[part] = value
                break
        else:
            out[prefix + name] = value
    return out | {key: torch.cat([parts["q"], parts["k"], parts["v"]]) for key, parts in qkv.items()}


def text_encoder_to_ldm(model: Any, prefix: str) -> dict[str, torch.Tensor]:
    convert = clip_to_ldm if prefix.endswith(".transformer.") else openclip_to_ldm
    return convert(model.state_dict(), prefix)


def ldm_checkpoint(unet: Any, vae: Any, text_encoders: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The models' weights under the LDM names (``text_encoders``: LDM prefix -> model)."""
    tensors = {**unet_to_ldm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config)}
    for prefix, model in text_encoders.items():
        tensors |= text_encoder_to_ldm(model, prefix)
    return tensors


def save_single_file(tensors: Mapping[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path
