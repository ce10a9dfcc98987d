"""The latent diffusion loop, written out: text encoders -> UNet with classifier-free guidance -> VAE.

It follows diffusers' ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` step for step (and names),
so that on the same components, seeds and scheduler it makes the same pixels
(tests/engine/test_equivalence.py), and differs where the bot needs it: per-tile seeds, cheap previews off
the GPU thread, cancellation between steps, a tile-at-a-time VAE decode, and errors the user can read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from imaginebot.engine import compose, spatial
from imaginebot.engine._types import Scheduler, UNet, Vae
from imaginebot.engine.api import (
    SAMPLERS,
    CancelCheck,
    GenerateResult,
    GenerateSpec,
    Plan,
    PreviewCallback,
    StepState,
    Task,
)
from imaginebot.engine.canvas import keep_weights
from imaginebot.engine.devices import free_memory, resolve_device, resolve_dtype
from imaginebot.engine.lora import LoraFolder, Loras
from imaginebot.engine.planning import Planner, img2img_steps, stopped_steps, strength
from imaginebot.engine.preview import (
    LatentRGB,
    PreviewWorker,
    fit_latent_rgb,
    latents_to_pixels,
    predict_x0,
    preview_tile_size,
    published_latent_rgb,
)
from imaginebot.engine.prompts import Conditioning, Prompts
from imaginebot.engine.schedulers import alpha_bars, make_scheduler, step_kwargs
from imaginebot.errors import GenerationCancelled, GenerationFailed, ImagineError, OutOfMemory, ParamError

log = logging.getLogger(__name__)

# Without a GPU, a UNet call takes up to this many latent pixels (2^17): 512 samples of the embedded model
# (16x16 latents), 32 of SD 1.5 (64x64), 8 of SDXL (128x128). Past a few dozen samples a CPU gains no speed,
# but every job in the batch moves on, so nobody waits for a first preview.
CPU_LATENT_PIXELS_PER_CALL = 2**17


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
        lora_dir: LoraFolder = None,
    ) -> None:
        """Takes components already on ``device`` in ``dtype``; use ``from_components`` or ``load_engine``."""
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2
        self.unet, self.vae = unet, vae
        self.scheduler_config = dict(scheduler_config)
        if tokenizer_2 is None and self.scheduler_config.get("steps_offset", 1) != 1:
            # old SD 1.x configs; StableDiffusionPipeline fixes it so
            self.scheduler_config["steps_offset"] = 1
        self.device, self.dtype = device, dtype
        self.upscale_max_side = upscale_max_side
        self.planner = Planner.from_configs(unet.config, vae.config, upscale_max_side)
        self.vae_scale_factor = self.planner.vae_scale_factor
        self._previews = PreviewWorker()
        # --tile switches these to circular padding for its own calls
        self._unet_convs, self._vae_convs = spatial.padded_convs(unet), spatial.padded_convs(vae)
        if latent_rgb is None:
            latent_rgb = published_latent_rgb(vae.config, is_sdxl=self.is_sdxl) or self._fit_latent_rgb()
        self.latent_rgb = latent_rgb.to(device)
        self.loras = Loras(lora_dir, unet=unet, text_encoder=text_encoder, text_encoder_2=text_encoder_2)
        self.prompts = Prompts(
            tokenizer,
            text_encoder,
            tokenizer_2,
            text_encoder_2,
            device=device,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
            guidance_dim=unet.config.time_cond_proj_dim if self.planner.guidance_embedded else None,
        )

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
        lora_dir: LoraFolder = None,
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
            lora_dir=lora_dir,
        )

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def native_size(self) -> int:
        return self.planner.native_size

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (one latent pixel)."""
        return self.vae_scale_factor

    def close(self) -> None:
        self._previews.close()

    # -- the step-level Engine protocol --------------------------------------------------------------------

    def default_capacity(self) -> float:
        """Samples of native size per UNet call: measured on CUDA, a budget of latent pixels elsewhere."""
        if self.device.type == "cuda":
            return measure_capacity(self)
        return max(1.0, CPU_LATENT_PIXELS_PER_CALL / (self.native_size // self.vae_scale_factor) ** 2)

    def plan(self, spec: GenerateSpec, task: Task = "generate") -> Plan:
        return self.planner.plan(spec, task)

    def prepare(
        self,
        spec: GenerateSpec,
        task: Task = "generate",
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
    ) -> StepState:
        self._check(spec, task, preview_every)
        started = time.perf_counter()
        plan = self.plan(spec, task)
        fallback = None
        if task != "generate" or spec.init_image is not None:
            assert spec.init_image is not None
            spec = dataclasses.replace(spec, strength=strength(spec, task))
        if task == "upscale":
            assert spec.init_image is not None
            width, height = self.upscaled_size(spec.init_image.width, spec.init_image.height)
            enlarged = spec.init_image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
            spec = dataclasses.replace(
                spec, width=width, height=height, seeds=spec.seeds[:1], init_image=enlarged
            )
            note = f"Upscaled by a plain resize to {width}×{height}: not enough GPU memory to refine it."
            fallback = GenerateResult((enlarged,), spec.seeds, 0.0, note=note)
        with self._errors(_describe(spec), fallback):
            self.loras.apply_to_text_encoders(spec.loras)  # loads a LoRA the first time it is used
            with torch.inference_mode():
                job = self._prepare(spec, plan, on_preview, preview_every)
        job.started, job.fallback = started, fallback
        return job

    def step(self, states: Sequence[StepState]) -> None:
        jobs = [_own(state) for state in states]
        if not jobs:
            return
        group = jobs[0].plan.group
        assert all(job.plan.group == group and not job.done for job in jobs), "one group, none done"
        images = sum(job.spec.num_images for job in jobs)
        what = f"{images} image(s) of {jobs[0].spec.width}×{jobs[0].spec.height}"
        self.loras.apply_to_unet(jobs[0].spec.loras)  # one group, one LoRA set (loaded when prepared)
        with self._errors(what, jobs[0].fallback if len(jobs) == 1 else None), torch.inference_mode():
            self._step(jobs)

    def finish(self, state: StepState) -> GenerateResult:
        job = _own(state)
        assert job.done, "finish() is for a state whose steps are all taken"
        job.wait_for_previews()
        with (
            self._errors(_describe(job.spec), job.fallback),
            torch.inference_mode(),
            spatial.circular(self._vae_convs if job.spec.tile else ()),
        ):
            # one tile at a time: the VAE's activations at full size are the job's memory peak
            images = tuple(self._decode(job.latents[i : i + 1]) for i in range(job.spec.num_images))
        if job.spec.mask_image is not None:
            assert job.spec.init_image is not None
            # the kept area exactly as it was (the VAE does not give back the same pixels), feathered in
            weights = keep_weights(job.spec.mask_image, feather=self.vae_scale_factor)
            canvas = job.spec.init_image.convert("RGB")
            images = tuple(Image.composite(image, canvas, weights) for image in images)
        elapsed = time.perf_counter() - job.started
        return GenerateResult(images=images, seeds=job.spec.seeds, elapsed_s=elapsed)

    # -- one job from start to end: for the tests, the benchmarks and the scripts (workers step jobs) --------

    def generate(
        self,
        spec: GenerateSpec,
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
        should_cancel: CancelCheck | None = None,
        task: Task = "generate",
    ) -> GenerateResult:
        """prepare, step alone to the end, finish: diffusers' ``pipeline(...)`` call, which the equivalence
        tests, the benchmarks and the example scripts compare and time (the bot's workers batch jobs with
        ``prepare``/``step``/``finish`` instead). ``task``: "vary" and "upscale" start from
        ``spec.init_image``. Raises GenerationCancelled, OutOfMemory or GenerationFailed."""
        state: _State | None = None
        try:
            state = _own(self.prepare(spec, task, on_preview=on_preview, preview_every=preview_every))
            while not state.done:
                if should_cancel is not None and should_cancel():
                    done, total = state.steps_done, state.plan.steps
                    raise GenerationCancelled(f"Cancelled after {done} of {total} steps.")
                self.step([state])
            return self.finish(state)
        except OutOfMemory as e:
            if e.fallback is None:
                raise
            log.warning("%s; giving the fallback instead", e)
            return e.fallback
        finally:
            if state is not None:
                state.wait_for_previews()

    def upscaled_size(self, width: int, height: int) -> tuple[int, int]:
        return self.planner.upscaled_size(width, height)

    # -- the loop, a step at a time ------------------------------------------------------------------------

    def _prepare(
        self, spec: GenerateSpec, plan: Plan, on_preview: PreviewCallback | None, preview_every: int
    ) -> _State:
        batch_size = spec.num_images
        num_inference_steps = spec.num_inference_steps
        do_classifier_free_guidance = self.planner.uses_cfg(spec)
        # Tile i comes from its own CPU generator: a seed makes the same tile on any device, alone or not.
        generator = [torch.Generator().manual_seed(seed) for seed in spec.seeds]

        # 1. encode the prompt (or a multi-prompt's parts) and the negative prompt (the unconditional branch
        # of CFG); --chaos moves each tile's reading of the prompt
        cond = self.prompts.encode(spec, batch_size, do_classifier_free_guidance)
        cond.prompt_embeds = compose.spread_conditioning(
            cond.prompt_embeds, cond.layout, spec.seeds, spec.chaos
        )
        prompt_embeds = cond.prompt_embeds

        # 2. a fresh scheduler for this job, and its timesteps
        scheduler = make_scheduler(spec.sampler, self.scheduler_config)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps, begin_index = scheduler.timesteps, 0
        if spec.init_image is not None:
            # img2img: skip the first (1 - strength) of the schedule; at least one step is always run
            assert spec.strength is not None
            init_timestep = img2img_steps(num_inference_steps, spec.strength)
            begin_index = (num_inference_steps - init_timestep) * scheduler.order
            timesteps = timesteps[begin_index:]
            scheduler.set_begin_index(begin_index)

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
            latents = compose.spread_noise(latents, spec.seeds, spec.chaos)  # --chaos: tiles further apart
            latents = latents * scheduler.init_noise_sigma
        else:
            with spatial.circular(self._vae_convs if spec.tile else ()):
                init_latents = self._encode_image(spec.init_image, spec.width, spec.height, generator)
            noise = randn_tensor(
                latent_shape, generator=generator, device=self.device, dtype=prompt_embeds.dtype
            )
            latents = scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(batch_size))
        masked = None
        if spec.mask_image is not None:
            mask = spatial.latent_mask(spec.mask_image, self.vae_scale_factor).to(self.device, self.dtype)
            masked = _Masked(mask, init_latents, noise)

        steps = stopped_steps(len(timesteps), spec.stop)  # --stop: the first part of the schedule
        return _State(
            plan=dataclasses.replace(plan, steps=steps),
            spec=spec,
            do_cfg=do_classifier_free_guidance,
            cond=cond,
            scheduler=scheduler,
            timesteps=timesteps,
            step_kwargs=step_kwargs(scheduler, generator),
            latents=latents,
            masked=masked,
            alpha_bars=(
                alpha_bars(scheduler, timesteps, begin_index)
                if on_preview is not None or steps < len(timesteps)
                else []
            ),
            on_preview=on_preview,
            preview_every=preview_every,
        )

    def _step(self, jobs: list[_State]) -> None:
        # 4. one denoising step of every job in one UNet call. Each sample carries its own timestep and text
        # embeddings (and SDXL's added conditioning); each job has its own rows: [negative | prompt] with CFG.
        rows, timesteps = [], []
        for job in jobs:
            t = job.timesteps[job.steps_done]
            x = job.scheduler.scale_model_input(job.latents, t)
            blocks = job.cond.layout.blocks  # with CFG: [negative | prompt], or a multi-prompt's parts
            rows.append(torch.cat([x] * blocks) if blocks > 1 else x)
            # the UNet turns timesteps into float32 for its embedding, so float32 here changes nothing
            timesteps.append(t.to(torch.float32).reshape(1).expand(rows[-1].shape[0]))
        added_cond_kwargs = None
        if self.is_sdxl:
            added_cond_kwargs = {
                key: _cat([job.cond.added_cond_kwargs[key] for job in jobs])  # type: ignore[index]
                for key in ("text_embeds", "time_ids")
            }
        timestep_cond = None
        if jobs[0].cond.timestep_cond is not None:  # one engine: all of them, or none
            timestep_cond = _cat([job.cond.timestep_cond for job in jobs])  # type: ignore[misc]
        with spatial.circular(self._unet_convs if jobs[0].spec.tile else ()):
            noise_pred = self._unet(
                _cat(rows),
                _cat(timesteps),
                _cat([job.cond.prompt_embeds for job in jobs]),
                added_cond_kwargs,
                timestep_cond,
            )
        # Memory runs out in the UNet call above, before any job's scheduler has moved: a failed step can be
        # retried with the batch split. Below, each job takes its own rows and its own scheduler step.
        offset = 0
        for job, row in zip(jobs, rows, strict=True):
            pred, offset = noise_pred[offset : offset + len(row)], offset + len(row)
            if job.cond.layout.composed:  # several parts: composable diffusion
                pred = compose.combine(pred, job.cond.layout, job.spec.guidance_scale)
            elif job.do_cfg:
                noise_pred_uncond, noise_pred_text = pred.chunk(2)
                # move away from the negative prompt, toward the prompt, by guidance_scale
                pred = noise_pred_uncond + job.spec.guidance_scale * (noise_pred_text - noise_pred_uncond)
            i, t = job.steps_done, job.timesteps[job.steps_done]
            if job.on_preview is not None and (i + 1) % job.preview_every == 0 and i + 1 < job.plan.steps:
                self._preview(row[: job.spec.num_images], pred, job)
            if i + 1 == job.plan.steps and job.plan.steps < len(job.timesteps):
                # --stop: the last step run gives the model's prediction of the clean latents
                job.latents = self._predicted_x0(row[: job.spec.num_images], pred, job)
            else:  # x_t -> x_t-1
                stepped = job.scheduler.step(pred, t, job.latents, **job.step_kwargs, return_dict=False)
                job.latents = stepped[0]
            if job.masked is not None:
                job.latents = self._blend_kept(job)
            job.steps_done += 1

    def _unet(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None,
        timestep_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        def unet(window: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.unet(
                window,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                timestep_cond=timestep_cond,
                added_cond_kwargs=added_cond_kwargs,
                return_dict=False,
            )[0]
            return out

        if self.planner.tiled(*sample.shape[-2:]):  # an upscale of an upscale: native windows
            return spatial.tiled(unet, sample, self.planner.native_latent)
        return unet(sample)

    def _blend_kept(self, job: _State) -> torch.Tensor:
        """Inpainting and outpainting: the kept area's own latents, noised to the level the next step starts
        from (none after the last), in place of what the model made there."""
        assert job.masked is not None
        mask, known = job.masked.mask, job.masked.image_latents
        next_step = job.steps_done + 1
        if next_step < job.plan.steps:
            t = job.timesteps[next_step]
            known = job.scheduler.add_noise(known, job.masked.noise, t.reshape(1).expand(known.shape[0]))
        return (1 - mask) * known.to(job.latents.dtype) + mask * job.latents

    def _encode_image(
        self, image: Image.Image, width: int, height: int, generator: list[torch.Generator]
    ) -> torch.Tensor:
        """img2img: the image's latents, sampled once per tile from that tile's generator."""
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
        pixels = pixels.permute(2, 0, 1).unsqueeze(0).to(device=self.device, dtype=self.vae.dtype)
        f = self.vae_scale_factor
        encode = self.vae.tiled_encode if self.planner.tiled(height // f, width // f) else self.vae.encode
        latent_dist = encode(pixels).latent_dist
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
        # diffusers' tiled VAE where the UNet is tiled too: the full-size activations would not fit
        decode = self.vae.tiled_decode if self.planner.tiled(*latents.shape[-2:]) else self.vae.decode
        image = decode(latents.to(self.vae.dtype), return_dict=False)[0]
        # as diffusers' image processor: [-1, 1] -> [0, 1] -> uint8 by rounding, in float32
        image = (image.float() / 2 + 0.5).clamp(0, 1)
        array = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(array)

    def _latents_mean_std(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels = self.vae.config.latent_channels
        mean = torch.tensor(self.vae.config.latents_mean).view(1, channels, 1, 1).to(like.device, like.dtype)
        std = torch.tensor(self.vae.config.latents_std).view(1, channels, 1, 1).to(like.device, like.dtype)
        return mean, std

    def _predicted_x0(
        self, latent_model_input: torch.Tensor, noise_pred: torch.Tensor, job: _State
    ) -> torch.Tensor:
        prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        return predict_x0(latent_model_input, noise_pred, job.alpha_bars[job.steps_done], prediction_type)

    def _preview(self, latent_model_input: torch.Tensor, noise_pred: torch.Tensor, job: _State) -> None:
        assert job.on_preview is not None
        x0 = self._predicted_x0(latent_model_input, noise_pred, job)
        pixels = latents_to_pixels(x0, self.latent_rgb)
        tile_size = preview_tile_size(job.spec.width, job.spec.height, pixels.shape[2], pixels.shape[1])
        step, total = job.steps_done + 1, job.plan.steps
        preview = self._previews.submit(
            pixels, step=step, total=total, tile_size=tile_size, callback=job.on_preview
        )
        job.previews.append(preview)

    # -- checks, errors, set-up ----------------------------------------------------------------------------

    def _check(self, spec: GenerateSpec, task: Task, preview_every: int) -> None:
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
        if task != "generate" and spec.init_image is None:
            raise ParamError(f"to {task} needs the source image")
        if spec.init_image is not None and spec.strength is not None and not 0.0 < spec.strength <= 1.0:
            raise ParamError(f"strength must be in (0, 1], got {spec.strength}")
        size = (spec.width, spec.height)
        if spec.mask_image is not None and (
            spec.init_image is None or spec.mask_image.size != size or spec.init_image.size != size
        ):
            raise ParamError("a mask needs the image it masks, both of the size of the picture to make")
        if preview_every < 1:
            raise ParamError(f"preview_every must be at least 1, got {preview_every}")
        if spec.parts and not any(weight > 0 for _, weight in spec.parts):
            raise ParamError("a multi-prompt needs a part with a positive weight")
        if not 0 <= spec.chaos <= 100 or not 1 <= spec.stop <= 100:
            raise ParamError(f"chaos must be 0-100 and stop 1-100, got {spec.chaos} and {spec.stop}")

    @contextlib.contextmanager
    def _errors(self, what: str, fallback: GenerateResult | None = None) -> Iterator[None]:
        """Our errors pass through; running out of memory becomes OutOfMemory (after emptying the cache),
        carrying ``fallback``; the rest fail."""
        try:
            yield
        except ImagineError:
            raise
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
            if not isinstance(e, torch.cuda.OutOfMemoryError) and not _is_out_of_memory(e):
                log.exception("generation failed")
                raise GenerationFailed(f"The images could not be made: {type(e).__name__}: {e}") from e
            free_memory(self.device)
            device = "GPU" if self.device.type == "cuda" else "machine"
            raise OutOfMemory(
                f"The {device} ran out of memory making {what}; try fewer images or a smaller size.",
                fallback=fallback,
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


@dataclasses.dataclass(eq=False)
class _Masked:
    """What an inpainting or outpainting job keeps: as diffusers' inpaint pipeline does for a plain
    (4-channel) UNet, the kept area's latents are noised to each step's level and blended in."""

    mask: torch.Tensor  # (1, 1, h, w) latents: 1 where the model draws, 0 where the picture is kept
    image_latents: torch.Tensor  # the canvas's latents, one per tile
    noise: torch.Tensor  # the job's own noise, to bring image_latents to each step's level


@dataclasses.dataclass(eq=False)
class _State:
    """One job between steps: everything of its own, never shared with its neighbours in a batch."""

    plan: Plan
    spec: GenerateSpec  # as run: an upscale's enlarged size and image, the strength in effect
    do_cfg: bool
    cond: Conditioning
    scheduler: Scheduler  # holds per-job state (step index, a multistep solver's history)
    timesteps: torch.Tensor
    step_kwargs: dict[str, Any]  # eta, and the job's own generators (ancestral samplers draw noise)
    latents: torch.Tensor
    masked: _Masked | None  # inpainting and outpainting
    alpha_bars: list[float]  # for previews, per step
    on_preview: PreviewCallback | None
    preview_every: int
    steps_done: int = 0
    started: float = 0.0
    fallback: GenerateResult | None = None
    previews: list[Future[None]] = dataclasses.field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.steps_done >= self.plan.steps

    def wait_for_previews(self) -> None:
        """So that no preview arrives after the result (or the error)."""
        previews, self.previews = self.previews, []
        for preview in previews:
            preview.result()


def _own(state: StepState) -> _State:
    assert isinstance(state, _State), "a state from another engine"
    return state


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _describe(spec: GenerateSpec) -> str:
    return f"{spec.num_images} image(s) of {spec.width}×{spec.height}"


def _is_out_of_memory(error: RuntimeError) -> bool:
    """The CPU allocator's (and MPS's) way of running out of memory: a plain RuntimeError."""
    text = str(error)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def measure_capacity(engine: DiffusionEngine, headroom: float = 0.8) -> float:
    """CUDA: how many samples of native size one UNet call can take in the memory free now.

    Measures the peak memory of a step at batch 1 and 2 (the difference is one sample's activations) and
    divides ``headroom`` of the free memory by it. Attention grows faster than the pixel count, so large
    images may still run out; the batcher then splits the batch and lowers the capacity.
    """
    side = engine.native_size
    probe = GenerateSpec("", width=side, height=side, num_inference_steps=1, guidance_scale=1.0)
    peaks = []
    for batch in (1, 2):
        states = [engine.prepare(probe) for _ in range(batch)]
        free_memory(engine.device)
        torch.cuda.reset_peak_memory_stats(engine.device)
        before = torch.cuda.memory_allocated(engine.device)
        engine.step(states)
        peaks.append(torch.cuda.max_memory_allocated(engine.device) - before)
        del states
    free_memory(engine.device)
    free, _ = torch.cuda.mem_get_info(engine.device)
    capacity = capacity_for(free, peaks[1] - peaks[0], headroom)
    mib = (peaks[1] - peaks[0]) / 2**20
    log.info("batch capacity: %.0f samples of %dx%d (%.0f MiB each)", capacity, side, side, mib)
    return capacity


def capacity_for(free_bytes: int, bytes_per_sample: int, headroom: float = 0.8) -> float:
    """``headroom`` of the free memory in samples, at least one (a job always runs, alone if need be)."""
    return max(1.0, headroom * free_bytes / max(bytes_per_sample, 1))
