"""A job's prompt as the UNet takes it: the text encoders' embeddings (SD 1.x/2.x: one CLIP; SDXL: two, with
the pooled projection and the size conditioning), with classifier-free guidance's negative rows first and a
multi-prompt's parts in blocks after them (``planning.Layout``), and a latent consistency model's embedded
guidance scale.

The same steps as diffusers' pipelines' ``encode_prompt``, for our step-level loop (jobs are encoded one by
one, as they join a batch, and their rows are concatenated per UNet call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from imaginebot.engine.api import GenerateSpec
from imaginebot.engine.planning import Layout
from imaginebot.engine.schedulers import guidance_embedding


@dataclass
class Conditioning:
    """What the UNet is conditioned on, for one job's rows: ``layout.blocks`` blocks of one row per image."""

    prompt_embeds: torch.Tensor  # (blocks * B, seq, dim), the blocks in ``layout``'s order (negative first)
    added_cond_kwargs: dict[str, torch.Tensor] | None  # SDXL: pooled text embeddings and time ids
    layout: Layout  # which block of rows is what, and how their predictions combine
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
        """Every block of the job's layout for ``batch_size`` images: with CFG the negative prompt first, then
        the prompt (or a multi-prompt's parts)."""
        layout = Layout.of(spec, do_cfg)
        texts = layout.texts(spec)
        # the first block with CFG is the negative side: SDXL makes an empty one of zeros
        negative = {0} if do_cfg else set()
        if layout.empty_block:
            negative.add(1)
        if self.text_encoder_2 is None:
            embeds = {
                text: self._clip(self.tokenizer, self.text_encoder, text) for text in dict.fromkeys(texts)
            }
            blocks = [embeds[text] for text in texts]
            added_cond_kwargs = None
        else:
            zeroed = {i for i in negative if texts[i] == "" and self.force_zeros_for_empty_prompt}
            wanted = [text for i, text in enumerate(texts) if i not in zeroed]
            encoded = {text: self._clip_sdxl(text) for text in dict.fromkeys(wanted)}
            like = encoded[wanted[0]]
            sdxl = [
                (torch.zeros_like(like[0]), torch.zeros_like(like[1])) if i in zeroed else encoded[text]
                for i, text in enumerate(texts)
            ]
            blocks = [embeds for embeds, _ in sdxl]
            add_text_embeds = torch.cat([pooled.repeat(batch_size, 1) for _, pooled in sdxl])
            # SDXL's micro-conditioning: original size, crop top-left, target size
            add_time_ids = torch.tensor(
                [[spec.height, spec.width, 0, 0, spec.height, spec.width]], dtype=blocks[0].dtype
            ).to(self.device)
            add_time_ids = add_time_ids.repeat(batch_size * len(texts), 1)
            added_cond_kwargs = {"text_embeds": add_text_embeds, "time_ids": add_time_ids}
        prompt_embeds = torch.cat([embeds.repeat(batch_size, 1, 1) for embeds in blocks])
        timestep_cond = None
        if self.guidance_dim is not None:  # no CFG branch: the guidance is an input of the UNet
            embedding = guidance_embedding(spec.guidance_scale, self.guidance_dim, batch_size * len(texts))
            timestep_cond = embedding.to(self.device, prompt_embeds.dtype)
        return Conditioning(prompt_embeds, added_cond_kwargs, layout, timestep_cond)

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
