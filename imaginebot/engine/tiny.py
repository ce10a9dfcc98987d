"""Tiny random-weight SD 1.x- and SDXL-shaped components, built in code (tests and the benchmark).

Nothing is downloaded: the CLIP tokenizer is built from a byte-level vocabulary written here, and every model
is made from a config with random weights. Speed and plumbing do not depend on the weights; pictures do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from imaginebot.engine._types import Scheduler, UNet, Vae
from imaginebot.engine.clip_tokenizer import bytes_to_unicode

if TYPE_CHECKING:
    from imaginebot.engine.pipeline import DiffusionEngine


def tiny_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A real CLIP BPE tokenizer over single characters (plus a few merges), 516 tokens."""
    chars = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("o", "n</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    # the fast tokenizer's BPE takes (left, right) pairs, though the stub says strings
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)  # type: ignore[arg-type]


def _text_config(hidden_size: int, layers: int, vocab_size: int, projection_dim: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_attention_heads=2,
        num_hidden_layers=layers,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        hidden_act="gelu",
    )


def tiny_vae(latent_channels: int = 4, blocks: tuple[int, ...] = (8, 16)) -> Vae:
    """A VAE with scale factor 2 ** (len(blocks) - 1)."""
    return AutoencoderKL(  # type: ignore[no-untyped-call]
        block_out_channels=blocks,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        latent_channels=latent_channels,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=32,
    )


@dataclass
class TinyComponents:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet
    vae: Vae
    scheduler: Scheduler
    tokenizer_2: CLIPTokenizer | None = None
    text_encoder_2: CLIPTextModelWithProjection | None = None


def _scheduler(prediction_type: str) -> Scheduler:
    # SD 1.5's scheduler settings (scaled-linear betas, "leading" spacing with offset 1).
    return EulerDiscreteScheduler(  # type: ignore[no-untyped-call]
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=prediction_type,
    )


def tiny_sd(
    seed: int = 0,
    *,
    sample_size: int = 16,
    channels: tuple[int, int] = (16, 32),
    latent_channels: int = 4,
    prediction_type: str = "epsilon",
    time_cond_proj_dim: int | None = None,
) -> TinyComponents:
    """SD 1.x-shaped: one CLIP text encoder, a cross-attention UNet, a VAE of scale factor 2.
    ``time_cond_proj_dim``: a latent consistency model's UNet, which takes the guidance as an input."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(_text_config(32, 2, len(tokenizer), 32))
    unet: UNet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
        time_cond_proj_dim=time_cond_proj_dim,
    )
    vae = tiny_vae(latent_channels)
    return TinyComponents(tokenizer, text_encoder, unet, vae, _scheduler(prediction_type))


def tiny_sdxl(seed: int = 0, *, sample_size: int = 16) -> TinyComponents:
    """SDXL-shaped: two text encoders (the second with a projection: pooled embeddings) and text-time ids."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(_text_config(16, 2, len(tokenizer), 16))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(16, 2, len(tokenizer), 16))
    unet: UNet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 16,
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    vae = tiny_vae(4)
    scheduler = _scheduler("epsilon")
    return TinyComponents(tokenizer, text_encoder, unet, vae, scheduler, tiny_tokenizer(), text_encoder_2)


def engine_from(components: TinyComponents, **options: Any) -> DiffusionEngine:
    """An engine over tiny components, on the CPU in fp32 (``options`` go to ``from_components``)."""
    from imaginebot.engine.pipeline import DiffusionEngine

    return DiffusionEngine.from_components(
        tokenizer=components.tokenizer,
        text_encoder=components.text_encoder,
        tokenizer_2=components.tokenizer_2,
        text_encoder_2=components.text_encoder_2,
        unet=components.unet,
        vae=components.vae,
        scheduler=components.scheduler,
        **{"device": "cpu", "dtype": "float32", **options},
    )


def save_sd(components: TinyComponents, folder: Path) -> Path:
    """Tiny SD 1.x components as a diffusers checkpoint folder, loadable like a real one."""
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline(  # type: ignore[no-untyped-call,attr-defined]
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=components.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder
