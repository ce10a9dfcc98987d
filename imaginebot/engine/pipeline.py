"""The latent diffusion loop, written out: text encoders -> UNet with classifier-free guidance -> VAE.

It follows diffusers' ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` step for step (and names),
so that on the same components, seeds and scheduler it makes the same pixels
(tests/engine/test_equivalence.py), and differs where the bot needs it: per-tile seeds, cheap previews off
the GPU thread, cancellation between steps, a tile-at-a-time VAE decode, and errors the user can read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from imaginebot.engine._types import Scheduler, UNet, Vae
from imaginebot.engine.api import (
    SAMPLERS,
    CancelCheck,
    GenerateResult,
    GenerateSpec,
    PreviewCallback,
)
from imaginebot.engine.devices import free_memory, resolve_device, resolve_dtype
from imaginebot.engine.preview import (
    LatentRGB,
    PreviewWorker,
    fit_latent_rgb,
    latents_to_pixels,
    predict_x0,
    preview_tile_size,
    published_latent_rgb,
)
from imaginebot.engine.schedulers import make_scheduler
from imaginebot.errors import GenerationCancelled, GenerationFailed, ImagineError, OutOfMemory, ParamError

log = logging.getLogger(__name__)

VARY_STRENGTH = 0.6  # V1-V4: keeps the composition and colours, changes the details
UPSCALE_STRENGTH = 0.3  # U1-U4: "hires fix", sharpens the enlarged tile without redrawing it
IMG2IMG_STRENGTH = 0.8  # an init image with no strength given: the default of diffusers' img2img pipeline


@dataclasses.dataclass
class _Conditioning:
    prompt_embeds: torch.Tensor  # (2B, seq, dim) with CFG: negative first, as the UNet batch is laid out
    added_cond_kwargs: dict[str, torch.Tensor] | None  # SDXL: pooled text embeddings and time ids


class DiffusionEngine:
    """An ``Engine`` over diffusers/transformers components (SD 1.x, 2.x, SDXL), for one worker thread."""

    def __init__(
        self,
        *,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        unet: UNet,
        vae: Vae,
        scheduler_config: Mapping[str, Any],
        tokenizer_2: CLIPTokenizer | None = None,
        text_encoder_2: CLIPTextModelWithProjection | None = None,
        device: torch.device,
        dtype: torch.dtype,
        upscale_max_side: int = 2048,
        force_zeros_for_empty_prompt: bool = True,
        latent_rgb: LatentRGB | None = None,
    ) -> None:
        """Takes components already on ``device`` in ``dtype``; use ``from_components`` or ``load_engine``."""
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2
        self.unet, self.vae = unet, vae
        self.scheduler_config = dict(scheduler_config)
        if tokenizer_2 is None and self.scheduler_config.get("steps_offset", 1) != 1:
            self.scheduler_config["steps_offset"] = (
                1  # old SD 1.x configs; StableDiffusionPipeline fixes it so
            )
        self.device, self.dtype = device, dtype
        self.upscale_max_side = upscale_max_side
        # SDXL checkpoints say whether an empty negative prompt means zero embeddings (model_index.json).
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt
        self.vae_scale_factor: int = 2 ** (len(vae.config.block_out_channels) - 1)
        self._previews = PreviewWorker()
        if latent_rgb is None:
            latent_rgb = published_latent_rgb(vae.config, is_sdxl=self.is_sdxl) or self._fit_latent_rgb()
        self.latent_rgb = latent_rgb.to(device)

    @classmethod
    def from_components(
        cls,
        *,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        unet: UNet,
        vae: Vae,
        scheduler: Scheduler | Mapping[str, Any],
        tokenizer_2: CLIPTokenizer | None = None,
        text_encoder_2: CLIPTextModelWithProjection | None = None,
        device: str | None = None,
        dtype: str | None = None,
        upscale_max_side: int = 2048,
        force_zeros_for_empty_prompt: bool = True,
        latent_rgb: LatentRGB | None = None,
    ) -> DiffusionEngine:
        """Build an engine from in-memory models (moved to ``device``/``dtype``; "auto" or None picks)."""
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        modules: list[Any] = [text_encoder, text_encoder_2, unet, vae]
        for module in modules:
            if module is not None:
                module.to(device=torch_device).eval().requires_grad_(False)
                if module.dtype != torch_dtype:
                    module.to(dtype=torch_dtype)
        if text_encoder_2 is not None and torch_dtype == torch.float16 and vae.config.force_upcast:
            vae.to(dtype=torch.float32)  # SDXL's VAE overflows in fp16; the SDXL pipeline upcasts it alike
        if torch_device.type == "cuda":
            unet.to(memory_format=torch.channels_last)
        config = scheduler if isinstance(scheduler, Mapping) else scheduler.config
        return cls(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            unet=unet,
            vae=vae,
            scheduler_config=config,
            tokenizer_2=tokenizer_2,
            text_encoder_2=text_encoder_2,
            device=torch_device,
            dtype=torch_dtype,
            upscale_max_side=upscale_max_side,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
            latent_rgb=latent_rgb,
        )

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def native_size(self) -> int:
        sample_size = self.unet.config.sample_size
        side = sample_size if isinstance(sample_size, int) else sample_size[0]
        return int(side) * int(self.vae_scale_factor)

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (one latent pixel)."""
        return self.vae_scale_factor

    def close(self) -> None:
        self._previews.close()

    # -- the Engine protocol -------------------------------------------------------------------------------

    def generate(
        self,
        spec: GenerateSpec,
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
        should_cancel: CancelCheck | None = None,
    ) -> GenerateResult:
        self._check(spec, preview_every)
        start = time.perf_counter()
        try:
            with self._errors(spec), torch.inference_mode():
                images = self._generate(spec, on_preview, preview_every, should_cancel)
        finally:
            self._previews.drain()
        return GenerateResult(images=tuple(images), seeds=spec.seeds, elapsed_s=time.perf_counter() - start)

    def vary(
        self,
        image: Image.Image,
        spec: GenerateSpec,
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
        should_cancel: CancelCheck | None = None,
    ) -> GenerateResult:
        # no strength: the engine's choice; Vary (Subtle/Strong) pass their own
        strength = VARY_STRENGTH if spec.strength is None else spec.strength
        variation = dataclasses.replace(spec, init_image=image, strength=strength)
        return self.generate(
            variation, on_preview=on_preview, preview_every=preview_every, should_cancel=should_cancel
        )

    def upscale(
        self, image: Image.Image, spec: GenerateSpec, *, should_cancel: CancelCheck | None = None
    ) -> GenerateResult:
        start = time.perf_counter()
        width, height = self.upscaled_size(image.width, image.height)
        enlarged = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        refine = dataclasses.replace(
            spec,
            width=width,
            height=height,
            seeds=spec.seeds[:1],
            init_image=enlarged,
            strength=UPSCALE_STRENGTH,
        )
        try:
            return self.generate(refine, should_cancel=should_cancel)
        except OutOfMemory:
            log.warning("upscale to %dx%d ran out of memory; returning a plain Lanczos resize", width, height)
            note = f"Upscaled by a plain resize to {width}×{height}: not enough GPU memory to refine it."
            return GenerateResult((enlarged,), refine.seeds, time.perf_counter() - start, note=note)

    def upscaled_size(self, width: int, height: int) -> tuple[int, int]:
        """2x, the longest side capped at ``upscale_max_side``, rounded down to the size multiple."""
        scale = min(2.0, self.upscale_max_side / max(width, height))
        m = self.size_multiple
        return max(m, int(width * scale) // m * m), max(m, int(height * scale) // m * m)

    # -- the loop ------------------------------------------------------------------------------------------

    def _generate(
        self,
        spec: GenerateSpec,
        on_preview: PreviewCallback | None,
        preview_every: int,
        should_cancel: CancelCheck | None,
    ) -> list[Image.Image]:
        batch_size = spec.num_images
        num_inference_steps = spec.num_inference_steps
        guidance_scale = spec.guidance_scale
        do_classifier_free_guidance = guidance_scale > 1.0 and self.unet.config.time_cond_proj_dim is None
        # Tile i comes from its own CPU generator: a seed makes the same tile on any device, alone or not.
        generator = [torch.Generator().manual_seed(seed) for seed in spec.seeds]

        # 1. encode the prompt and the negative prompt (the unconditional branch of CFG)
        cond = self._encode_prompt(spec, batch_size, do_classifier_free_guidance)
        prompt_embeds = cond.prompt_embeds

        # 2. a fresh scheduler for this job, and its timesteps
        scheduler = make_scheduler(spec.sampler, self.scheduler_config)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps, begin_index = scheduler.timesteps, 0
        if spec.init_image is not None:
            # img2img: skip the first (1 - strength) of the schedule; at least one step is always run
            strength = IMG2IMG_STRENGTH if spec.strength is None else spec.strength
            init_timestep = max(1, min(int(num_inference_steps * strength), num_inference_steps))
            begin_index = (num_inference_steps - init_timestep) * scheduler.order
            timesteps = timesteps[begin_index:]
            scheduler.set_begin_index(begin_index)
        step_kwargs = _step_kwargs(scheduler, generator)

        # 3. prepare latents: pure noise, or the image's latents noised to where the schedule begins
        latent_shape = (
            batch_size,
            self.unet.config.in_channels,
            spec.height // self.vae_scale_factor,
            spec.width // self.vae_scale_factor,
        )
        if spec.init_image is None:
            latents = randn_tensor(
                latent_shape, generator=generator, device=self.device, dtype=prompt_embeds.dtype
            )
            latents = latents * scheduler.init_noise_sigma
        else:
            init_latents = self._encode_image(spec.init_image, spec.width, spec.height, generator)
            noise = randn_tensor(
                latent_shape, generator=generator, device=self.device, dtype=prompt_embeds.dtype
            )
            latents = scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(batch_size))

        # 4. denoising loop
        alpha_bars = _alpha_bars(scheduler, timesteps, begin_index) if on_preview is not None else []
        for i, t in enumerate(timesteps):
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled(f"Cancelled after {i} of {len(timesteps)} steps.")
            # both CFG branches in one UNet batch: [negative | prompt]
            latent_model_input = torch.cat([latents] * 2) if do_classifier_free_guidance else latents
            latent_model_input = scheduler.scale_model_input(latent_model_input, t)
            noise_pred = self.unet(
                latent_model_input,
                t,
                encoder_hidden_states=prompt_embeds,
                added_cond_kwargs=cond.added_cond_kwargs,
                return_dict=False,
            )[0]
            if do_classifier_free_guidance:
                noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
                # move away from the negative prompt, toward the prompt, by guidance_scale
                noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
            if on_preview is not None and (i + 1) % preview_every == 0 and i + 1 < len(timesteps):
                x_t = latent_model_input[:batch_size]
                self._preview(x_t, noise_pred, alpha_bars[i], spec, (i + 1, len(timesteps)), on_preview)
            # x_t -> x_t-1
            latents = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]

        # 5. decode, one tile at a time: the VAE's activations at full size are the job's memory peak
        return [self._decode(latents[i : i + 1]) for i in range(batch_size)]

    def _encode_prompt(self, spec: GenerateSpec, batch_size: int, do_cfg: bool) -> _Conditioning:
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
        return _Conditioning(prompt_embeds, added_cond_kwargs)

    def _token_ids(self, tokenizer: CLIPTokenizer, text: str) -> torch.Tensor:
        text_inputs = tokenizer(
            text,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        input_ids: torch.Tensor = text_inputs.input_ids
        return input_ids.to(self.device)

    def _clip(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, text: str) -> torch.Tensor:
        """SD 1.x/2.x: the text encoder's last hidden state, (1, seq, dim)."""
        text_inputs = tokenizer(
            text,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
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

    def _encode_image(
        self, image: Image.Image, width: int, height: int, generator: list[torch.Generator]
    ) -> torch.Tensor:
        """img2img: the image's latents, sampled once per tile from that tile's generator."""
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
        pixels = pixels.permute(2, 0, 1).unsqueeze(0).to(device=self.device, dtype=self.vae.dtype)
        latent_dist = self.vae.encode(pixels).latent_dist
        init_latents = torch.cat([latent_dist.sample(g) for g in generator])
        config = self.vae.config
        if (
            getattr(config, "latents_mean", None) is not None
            and getattr(config, "latents_std", None) is not None
        ):
            mean, std = self._latents_mean_std(init_latents)
            init_latents = (init_latents - mean) * float(config.scaling_factor) / std
        else:
            init_latents = init_latents * float(config.scaling_factor)
        return init_latents.to(self.dtype)

    def _decode(self, latents: torch.Tensor) -> Image.Image:
        config = self.vae.config
        if (
            getattr(config, "latents_mean", None) is not None
            and getattr(config, "latents_std", None) is not None
        ):
            mean, std = self._latents_mean_std(latents)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        image = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
        # as diffusers' image processor: [-1, 1] -> [0, 1] -> uint8 by rounding, in float32
        image = (image.float() / 2 + 0.5).clamp(0, 1)
        array = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(array)

    def _latents_mean_std(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels = self.vae.config.latent_channels
        mean = torch.tensor(self.vae.config.latents_mean).view(1, channels, 1, 1).to(like.device, like.dtype)
        std = torch.tensor(self.vae.config.latents_std).view(1, channels, 1, 1).to(like.device, like.dtype)
        return mean, std

    def _preview(
        self,
        latent_model_input: torch.Tensor,
        noise_pred: torch.Tensor,
        alpha_bar: float,
        spec: GenerateSpec,
        progress: tuple[int, int],
        on_preview: PreviewCallback,
    ) -> None:
        prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        x0 = predict_x0(latent_model_input, noise_pred, alpha_bar, prediction_type)
        pixels = latents_to_pixels(x0, self.latent_rgb)
        tile_size = preview_tile_size(spec.width, spec.height, pixels.shape[2], pixels.shape[1])
        step, total = progress
        self._previews.submit(pixels, step=step, total=total, tile_size=tile_size, callback=on_preview)

    # -- checks, errors, set-up ----------------------------------------------------------------------------

    def _check(self, spec: GenerateSpec, preview_every: int) -> None:
        m = self.size_multiple
        if spec.width < m or spec.height < m or spec.width % m or spec.height % m:
            raise ParamError(
                f"width and height must be positive multiples of {m} for this model, "
                f"got {spec.width}×{spec.height}"
            )
        if spec.num_inference_steps < 1:
            raise ParamError(f"steps must be at least 1, got {spec.num_inference_steps}")
        if not spec.seeds:
            raise ParamError("at least one seed (one image) is needed")
        if spec.sampler not in SAMPLERS:
            raise ParamError(f"sampler {spec.sampler!r} is not known; use one of: {', '.join(SAMPLERS)}")
        if spec.init_image is not None and spec.strength is not None and not 0.0 < spec.strength <= 1.0:
            raise ParamError(f"strength must be in (0, 1], got {spec.strength}")
        if preview_every < 1:
            raise ParamError(f"preview_every must be at least 1, got {preview_every}")

    @contextlib.contextmanager
    def _errors(self, spec: GenerateSpec) -> Iterator[None]:
        """Our errors pass through; CUDA OOM becomes OutOfMemory (after emptying the cache); the rest fail."""
        try:
            yield
        except ImagineError:
            raise
        except torch.cuda.OutOfMemoryError as e:
            free_memory(self.device)
            raise OutOfMemory(
                f"The GPU ran out of memory making {spec.num_images} image(s) of {spec.width}×{spec.height}; "
                "try fewer images or a smaller size."
            ) from e
        except Exception as e:
            log.exception("generation failed")
            raise GenerationFailed(f"The images could not be made: {type(e).__name__}: {e}") from e

    def _fit_latent_rgb(self) -> LatentRGB:
        side = min(self.native_size, 256) // self.vae_scale_factor * self.vae_scale_factor

        def encode(images: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                pixels = images.to(device=self.device, dtype=self.vae.dtype)
                latents: torch.Tensor = self.vae.encode(pixels).latent_dist.mean
                return latents * float(self.vae.config.scaling_factor)

        latent_rgb = fit_latent_rgb(encode, self.vae_scale_factor, side)
        log.info("fitted a latent->RGB preview map for a %d-channel VAE", latent_rgb.weight.shape[0])
        return latent_rgb


def _step_kwargs(scheduler: Scheduler, generator: list[torch.Generator]) -> dict[str, Any]:
    """As diffusers' ``prepare_extra_step_kwargs``: ``eta`` (DDIM, 0) and the per-tile generators."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _alpha_bars(scheduler: Scheduler, timesteps: torch.Tensor, begin_index: int) -> list[float]:
    """Cumulative alpha at each step of this job, computed on the host once so previews never sync."""
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, torch.Tensor):
        s = sigmas.detach().to("cpu", torch.float64)
        return [1.0 / (1.0 + float(s[begin_index + i]) ** 2) for i in range(len(timesteps))]
    alphas_cumprod = scheduler.alphas_cumprod.detach().to("cpu", torch.float64)
    return [float(alphas_cumprod[int(t)]) for t in timesteps.to("cpu")]
