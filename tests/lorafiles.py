"""LoRA files for the tiny test models, in the kohya/A1111 and the diffusers/PEFT layouts (shared by the
engine's LoRA tests and the bot's)."""

from __future__ import annotations

import torch

from imaginebot.engine.tiny import TinyComponents

RANK, ALPHA = 4, 2.0  # kohya scales a layer by alpha / rank: 0.5 here
Tensors = tuple[torch.Tensor, torch.Tensor]

# The SD 1.x-shaped tiny model's layers that a typical LoRA trains: the UNet's attention, the text encoder's
# attention and MLP (all four attention projections: diffusers tells the older layouts apart by to_out).
UNET_LAYERS = [
    f"{block}.attentions.0.transformer_blocks.0.{attn}.{proj}"
    for block in ("down_blocks.1", "mid_block", "up_blocks.0")
    for attn in ("attn1", "attn2")
    for proj in ("to_q", "to_k", "to_v", "to_out.0")
] + ["mid_block.attentions.0.proj_in", "up_blocks.0.attentions.1.transformer_blocks.0.ff.net.0.proj"]
TEXT_LAYERS = [
    f"encoder.layers.{i}.{layer}"
    for i in (0, 1)
    for layer in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1")
]


def random_lora(
    model: TinyComponents, seed: int, text_encoder_2: bool = False
) -> dict[str, dict[str, Tensors]]:
    """Per part, per layer: (down, up) weights of rank RANK, large enough to change the picture."""
    generator = torch.Generator().manual_seed(seed)
    parts = {"unet": (model.unet, UNET_LAYERS), "text_encoder": (model.text_encoder, TEXT_LAYERS)}
    if text_encoder_2:
        parts["text_encoder_2"] = (model.text_encoder_2, TEXT_LAYERS)
    lora: dict[str, dict[str, Tensors]] = {}
    for part, (module, layers) in parts.items():
        weights = dict(module.named_modules())
        lora[part] = {}
        for layer in layers:
            # CLIPTextModel is flat in recent transformers, CLIPTextModelWithProjection keeps text_model.
            found = weights[layer] if layer in weights else weights[f"text_model.{layer}"]
            shape = found.weight.shape  # (out, in), or a 1x1 conv's (out, in, 1, 1)
            ones = (1,) * (len(shape) - 2)
            down = torch.randn((RANK, shape[1], *ones), generator=generator) * 0.5
            up = torch.randn((shape[0], RANK, *ones), generator=generator) * 0.5
            lora[part][layer] = (down, up)
    return lora


KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def kohya_layout(lora: dict[str, dict[str, Tensors]]) -> dict[str, torch.Tensor]:
    """As kohya's sd-scripts and A1111 save it: flat module paths, lora_down/lora_up and an alpha each."""
    out = {}
    for part, layers in lora.items():
        # SD 1.x files say lora_te_; SDXL's lora_te1_ / lora_te2_
        prefix = "lora_te_" if part == "text_encoder" and "text_encoder_2" not in lora else KOHYA_PREFIX[part]
        for layer, (down, up) in layers.items():
            path = ("text_model." + layer if part != "unet" else layer).replace(".", "_")
            out[f"{prefix}{path}.lora_down.weight"] = down
            out[f"{prefix}{path}.lora_up.weight"] = up
            out[f"{prefix}{path}.alpha"] = torch.tensor(ALPHA)
    return out


def peft_layout(lora: dict[str, dict[str, Tensors]]) -> dict[str, torch.Tensor]:
    """As diffusers' save_lora_weights saves it: PEFT names, no alphas (scale 1: up carries alpha / rank)."""
    out = {}
    for part, layers in lora.items():
        for layer, (down, up) in layers.items():
            path = f"{part}.text_model.{layer}" if part != "unet" else f"unet.{layer}"
            out[f"{path}.lora_A.weight"] = down
            out[f"{path}.lora_B.weight"] = up * (ALPHA / RANK)
    return out
