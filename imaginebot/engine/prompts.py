"""A job's prompt as the UNet takes it: the text encoders' embeddings (SD 1.x/2.x: one CLIP; SDXL: two, with
the pooled projection and the size conditioning), with classifier-free guidance's negative rows first, and a
latent consistency model's embedded guidance scale.

The same steps as diffusers' pipelines' ``encode_prompt``, for our step-level loop (jobs are encoded one by
one, as they join a batch, and their rows are concatenated per UNet call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from imaginebot.engine.api import GenerateSpec
from imaginebot.engine.schedulers import guidance_embedding


@dataclass
class Conditioning:
    """What the UNet is conditioned on, for one job's rows."""

    prompt_embeds: torch.Tensor  # (2B, seq, dim) with CFG: negative first, as the UNet batch is laid out
    added_cond_kwargs: dict[str, torch.Tensor] | None  # SDXL: pooled text embeddings and time ids
    timestep_cond: torch.Tensor | None = None  # a distilled LCM UNet: the guidance scale, embedded


@dataclass
class Prompts:
    """The tokenizers and text encoders of one engine."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    tokenizer_2: CLIPTokenizer | None
    text_encoder_2: CLIPTextModelWithProjection | None
    device: torch.device
    # SDXL checkpoints say whether an empty negative prompt means zero embeddings (model_index.json).
    force_zeros_for_empty_prompt: bool = True
    guidance_dim: int | None = None  # a latent consistency UNet's time_cond_proj_dim

    def encode(self, spec: GenerateSpec, batch_size: int, do_cfg: bool) -> Conditioning:
        """The prompt (and with CFG the negative prompt, first) for ``batch_size`` images."""
        if self.text_encoder_2 is None:
            prompt_embeds = self._clip(self.tokenizer, self.text_encoder, spec.prompt)
            if do_cfg:
                negative_prompt_embeds = self._clip(self.tokenizer, self.text_encoder, spec.negative_prompt)
            added_cond_kwargs = None
        else:
            prompt_embeds, pooled_prompt_embeds = self._clip_sdxl(spec.prompt)
            if spec.negative_prompt == "" and self.force_zeros_for_empty_prompt:
                negative_prompt_embeds = torch.zeros_like(prompt_embeds)
                negative_pooled_prompt_embeds = torch.zeros_like(pooled_prompt_embeds)
            else:
                negative_prompt_embeds, negative_pooled_prompt_embeds = self._clip_sdxl(spec.negative_prompt)
            add_text_embeds = pooled_prompt_embeds.repeat(batch_size, 1)
            # SDXL's micro-conditioning: original size, crop top-left, target size
            add_time_ids = torch.tensor(
                [[spec.height, spec.width, 0, 0, spec.height, spec.width]], dtype=prompt_embeds.dtype
            ).to(self.device)
            add_time_ids = add_time_ids.repeat(batch_size * (2 if do_cfg else 1), 1)
            if do_cfg:
                negative_text_embeds = negative_pooled_prompt_embeds.repeat(batch_size, 1)
                add_text_embeds = torch.cat([negative_text_embeds, add_text_embeds])
            added_cond_kwargs = {"text_embeds": add_text_embeds, "time_ids": add_time_ids}
        prompt_embeds = prompt_embeds.repeat(batch_size, 1, 1)
        if do_cfg:
            prompt_embeds = torch.cat([negative_prompt_embeds.repeat(batch_size, 1, 1), prompt_embeds])
        timestep_cond = None
        if self.guidance_dim is not None:  # no CFG branch: the guidance is an input of the UNet
            embedding = guidance_embedding(spec.guidance_scale, self.guidance_dim, batch_size)
            timestep_cond = embedding.to(self.device, prompt_embeds.dtype)
        return Conditioning(prompt_embeds, added_cond_kwargs, timestep_cond)

    def _token_ids(self, tokenizer: CLIPTokenizer, text: str) -> torch.Tensor:
        input_ids: torch.Tensor = _tokenize(tokenizer, text).input_ids
        return input_ids.to(self.device)

    def _clip(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, text: str) -> torch.Tensor:
        """SD 1.x/2.x: the text encoder's last hidden state, (1, seq, dim)."""
        text_inputs = _tokenize(tokenizer, text)
        attention_mask = None
        if getattr(text_encoder.config, "use_attention_mask", False):
            attention_mask = text_inputs.attention_mask.to(self.device)
        out = text_encoder(text_inputs.input_ids.to(self.device), attention_mask=attention_mask)
        prompt_embeds: torch.Tensor = out[0]
        return prompt_embeds.to(dtype=self.text_encoder.dtype)

    def _clip_sdxl(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL: both encoders' penultimate hidden states side by side, and the second's pooled projection."""
        assert self.tokenizer_2 is not None and self.text_encoder_2 is not None
        hidden = []
        pooled_prompt_embeds: torch.Tensor | None = None
        for tokenizer, text_encoder in (
            (self.tokenizer, self.text_encoder),
            (self.tokenizer_2, self.text_encoder_2),
        ):
            out = text_encoder(self._token_ids(tokenizer, text), output_hidden_states=True)
            if pooled_prompt_embeds is None and out[0].ndim == 2:
                pooled_prompt_embeds = out[0]
            hidden.append(out.hidden_states[-2])
        assert pooled_prompt_embeds is not None, "SDXL's second text encoder must have a projection"
        prompt_embeds = torch.cat(hidden, dim=-1).to(dtype=self.text_encoder_2.dtype)
        return prompt_embeds, pooled_prompt_embeds


def _tokenize(tokenizer: CLIPTokenizer, text: str) -> Any:
    """As the pipelines: padded to the tokenizer's length, cut there (a BatchEncoding of one row)."""
    length = tokenizer.model_max_length
    return tokenizer(text, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
