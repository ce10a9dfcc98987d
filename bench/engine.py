"""Our engine against the stock diffusers pipeline on the same components, in one process.

    python bench/engine.py                  # a small random-weight SD 1.x-shaped model on the CPU
    python bench/engine.py --sd15-random    # SD 1.5's full architecture, random weights, on the GPU
    python bench/engine.py --model imaginebot/models/<folder>   # any diffusers folder
    python bench/engine.py --throughput 16  # 16 one-image jobs at once, in images/s

A job is 4 images x 30 steps with classifier-free guidance. Ours makes its cheap previews every five steps
(latent->RGB of the predicted x0, off the loop's thread); stock makes the classic tutorial's preview, a full
VAE decode to PIL every five steps through ``callback_on_step_end``. Speed does not depend on the weights.

``--throughput N``: N simultaneous one-image jobs (each its own prompt and seed, native size, CFG on, no
previews), in images/s: ours batched through the step-level API (prepare / step / finish, as many jobs per
UNet call as ``--capacity`` holds, by default the engine's), ours one job at a time, and stock at batch 4.

Peak memory: the process's RSS above its level before the job on the CPU (sampled every 2 ms, after giving
freed heap back to the OS), ``torch.cuda.max_memory_allocated`` above the level before the job on a GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from imaginebot.engine import DiffusionEngine, GenerateSpec, load_engine
from imaginebot.engine.schedulers import make_scheduler
from imaginebot.engine.tiny import TinyComponents, tiny_sd, tiny_tokenizer, tiny_vae

PROMPT = "a watercolor otter floating on a river at sunset"
SEEDS = (1, 2, 3, 4)
STOCK_BATCH = 4


def sd15_random() -> TinyComponents:
    """SD 1.5's architecture (UNet 860M, VAE 84M, CLIP ViT-L text encoder 123M) with random weights."""
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
            bos_token_id=len(tokenizer) - 2,
            eos_token_id=len(tokenizer) - 1,
            pad_token_id=len(tokenizer) - 1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    return TinyComponents(tokenizer, text_encoder, unet, vae, tiny_sd().scheduler)


def small_cpu_model() -> TinyComponents:
    """Small enough for a shared CPU, big enough that the UNet and the VAE cost something: 64 px images."""
    c = tiny_sd(sample_size=16, channels=(32, 64))
    c.vae = tiny_vae(4, blocks=(32, 64, 64))
    return c


def from_folder(folder: str, device: str) -> tuple[DiffusionEngine, TinyComponents]:
    engine = load_engine(folder, device=device)
    c = TinyComponents(
        engine.tokenizer,
        engine.text_encoder,
        engine.unet,
        engine.vae,
        make_scheduler("ddim", engine.scheduler_config),
    )
    return engine, c


class PeakMemory:
    """Peak memory of one job above the level before it (RSS on the CPU, allocated memory on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        if sys.platform.startswith("linux"):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back so RSS starts from the floor
        self.process = psutil.Process()
        self.base = self.peak_rss = self.process.memory_info().rss
        self.stop = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.002):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.sampler.join()
            self.peak = max(self.peak_rss, self.process.memory_info().rss) - self.base


def timed(run: Callable[[], Any], device: torch.device) -> tuple[float, int]:
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return elapsed, memory.peak


def compare(
    sides: dict[str, Callable[[], Any]], device: torch.device, runs: int
) -> dict[str, tuple[float, int]]:
    """Median seconds and peak memory of each side over ``runs``, after one warm-up run each."""
    for run in sides.values():  # warm-up (kernel selection, allocator pools)
        run()
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
    for _ in range(runs):  # alternate, so that background load hits every side alike
        for name, run in sides.items():
            results[name].append(timed(run, device))
    return {
        name: (statistics.median(t for t, _ in timings), statistics.median(m for _, m in timings))
        for name, timings in results.items()
    }


def per_job(engine: DiffusionEngine, pipe: StableDiffusionPipeline, args: argparse.Namespace) -> None:
    """One job of 4 images: ours with cheap previews against stock with VAE-decode previews."""
    device, side = engine.device, engine.native_size
    spec = GenerateSpec(
        PROMPT, width=side, height=side, num_inference_steps=args.steps, sampler=args.sampler, seeds=SEEDS
    )
    previews: list[object] = []

    def ours() -> None:
        engine.generate(spec, on_preview=previews.append, preview_every=5)

    def decode_preview(
        pipe: StableDiffusionPipeline, i: int, t: Any, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if (i + 1) % 5 == 0 and i + 1 < args.steps:  # the classic tutorial's preview: a full VAE decode
            latents = kwargs["latents"]
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            previews.append(pipe.image_processor.postprocess(image, output_type="pil"))
        return kwargs

    def stock() -> None:
        pipe.scheduler = make_scheduler(args.sampler, engine.scheduler_config)  # fresh per job, as ours
        pipe(
            PROMPT,
            height=side,
            width=side,
            num_inference_steps=args.steps,
            guidance_scale=spec.guidance_scale,
            num_images_per_prompt=len(SEEDS),
            generator=[torch.Generator().manual_seed(s) for s in SEEDS],
            callback_on_step_end=decode_preview,
        )

    print(
        f"device: {device} ({engine.dtype}), {side}x{side}, {len(SEEDS)} images x {args.steps} steps, "
        f"sampler {args.sampler}, torch threads {torch.get_num_threads()}"
    )
    summary = compare({"ours": ours, "stock": stock}, device, args.runs)
    unit = "allocated" if device.type == "cuda" else "RSS delta"
    for name, (seconds, memory) in summary.items():
        label = "ours (linear x0 previews)" if name == "ours" else "stock (VAE-decode previews)"
        print(f"{label:<30} {seconds:8.3f} s/job   peak memory {memory / 2**20:9.1f} MiB ({unit})")
    ratio = summary["ours"][0] / summary["stock"][0]
    print(f"ratio ours/stock: {ratio:.3f}  ({'faster' if ratio < 1 else 'NOT faster'})")
    print(f"memory ours/stock: {summary['ours'][1] / max(summary['stock'][1], 1):.3f}")


def throughput(engine: DiffusionEngine, pipe: StableDiffusionPipeline, args: argparse.Namespace) -> None:
    """N one-tile jobs at once: ours batched through the step-level API, ours one at a time, stock at
    batch 4. No previews on any side: this is images per second."""
    device, side, n = engine.device, engine.native_size, args.throughput
    prompts = [f"a red circle on a blue background, number {i}" for i in range(n)]  # fits 32 tokens
    specs = [
        GenerateSpec(
            prompt,
            width=side,
            height=side,
            num_inference_steps=args.steps,
            sampler=args.sampler,
            seeds=(seed,),
        )
        for seed, prompt in enumerate(prompts, start=1)
    ]
    capacity = args.capacity or engine.default_capacity()
    # the bot's rule: jobs share a UNet call while their cost (samples at native size) fits the capacity
    jobs_per_call = max(1, int(capacity // engine.plan(specs[0]).cost))

    def ours_batched() -> None:
        states = [engine.prepare(spec) for spec in specs]
        while not all(s.done for s in states):
            engine.step([s for s in states if not s.done][:jobs_per_call])
        for state in states:
            engine.finish(state)

    def ours_alone() -> None:
        for spec in specs:
            state = engine.prepare(spec)
            while not state.done:
                engine.step([state])
            engine.finish(state)

    def stock() -> None:
        for i in range(0, n, STOCK_BATCH):
            pipe.scheduler = make_scheduler(args.sampler, engine.scheduler_config)  # fresh per call
            pipe(
                prompts[i : i + STOCK_BATCH],
                height=side,
                width=side,
                num_inference_steps=args.steps,
                guidance_scale=specs[0].guidance_scale,
                generator=[torch.Generator().manual_seed(s.seeds[0]) for s in specs[i : i + STOCK_BATCH]],
            )

    print(
        f"device: {device} ({engine.dtype}), {side}x{side}, {n} one-image jobs x {args.steps} steps, "
        f"sampler {args.sampler}, capacity {capacity:g} samples ({jobs_per_call} jobs per UNet call), "
        f"torch threads {torch.get_num_threads()}"
    )
    sides = {
        "ours batched": ours_batched,
        "ours one at a time": ours_alone,
        f"stock at batch {STOCK_BATCH}": stock,
    }
    summary = compare(sides, device, args.runs)
    unit = "allocated" if device.type == "cuda" else "RSS delta"
    rate = {name: n / seconds for name, (seconds, _) in summary.items()}
    for name, (_, memory) in summary.items():
        print(f"{name:<22} {rate[name]:8.2f} images/s   peak memory {memory / 2**20:9.1f} MiB ({unit})")
    batched, alone, stock_rate = rate.values()
    print(f"ratio ours batched / stock at batch {STOCK_BATCH}: {batched / stock_rate:.2f}")
    print(f"ratio ours batched / ours one at a time: {batched / alone:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sd15-random", action="store_true", help="SD 1.5's architecture, random weights")
    parser.add_argument("--model", help="a diffusers folder or cached hub id instead of a built model")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side (the median is printed)")
    parser.add_argument("--sampler", default="euler_a")
    parser.add_argument(
        "--throughput",
        type=int,
        metavar="N",
        help="N one-image jobs at once, in images/s, instead of one job",
    )
    parser.add_argument(
        "--capacity", type=float, help="with --throughput: samples per UNet call (default: the engine's)"
    )
    args = parser.parse_args()

    if args.model:
        engine, c = from_folder(args.model, args.device or "auto")
    else:
        c = sd15_random() if args.sd15_random else small_cpu_model()
        engine = DiffusionEngine.from_components(
            tokenizer=c.tokenizer,
            text_encoder=c.text_encoder,
            unet=c.unet,
            vae=c.vae,
            scheduler=c.scheduler,
            device=args.device,
        )
    pipe = StableDiffusionPipeline(
        vae=engine.vae,
        text_encoder=engine.text_encoder,
        tokenizer=engine.tokenizer,
        unet=engine.unet,
        scheduler=make_scheduler(args.sampler, engine.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    if args.throughput:
        throughput(engine, pipe, args)
    else:
        per_job(engine, pipe, args)
    engine.close()


if __name__ == "__main__":
    main()
