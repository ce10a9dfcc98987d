"""The step-level API: a job's pixels never depend on the jobs it shares UNet calls with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from PIL import Image
from pixels import BATCHED, assert_close_pixels

from imaginebot.engine import DiffusionEngine, GenerateSpec
from imaginebot.engine.api import StepState, Task
from imaginebot.engine.canvas import zoom_out
from imaginebot.engine.pipeline import capacity_for
from imaginebot.engine.tiny import TinyComponents, engine_from
from imaginebot.errors import OutOfMemory
from imaginebot.executor import Done, Executor, JobRequest
from imaginebot.store_models import JobKind

MakeEngine = Callable[..., DiffusionEngine]
SOURCE = Image.radial_gradient("L").convert("RGB").resize((32, 32))
ZOOMED = zoom_out(SOURCE, 2.0, (32, 32))
MULTI = (("a red", 0.6), ("lighthouse", 0.4), ("fog", -0.2))  # a red::3 lighthouse::2 fog::-1, normalised


@dataclass(frozen=True)
class Job:
    spec: GenerateSpec
    task: Task = "generate"
    joins_at: int = 0  # the batch's step at which it arrives


def spec(prompt: str, **kwargs: object) -> GenerateSpec:
    base: dict[str, object] = {"width": 32, "height": 32, "num_inference_steps": 6, "seeds": (1, 2)}
    return GenerateSpec(prompt, **(base | kwargs))  # type: ignore[arg-type]


# Different prompts, step counts, samplers, guidance (on, off), sizes (two latent shapes: two groups),
# img2img, variations, an upscale, an outpainting, a seamless tile, multi-prompts (their parts are rows of the
# shared calls), --stop and --chaos, joining at different steps.
JOBS = [
    Job(spec("a red lighthouse", sampler="euler_a")),
    Job(spec("a blue boat", sampler="dpm++2m", num_inference_steps=4, guidance_scale=1.0)),
    Job(spec("a green hill", sampler="ddim", guidance_scale=9.0, seeds=(3,)), joins_at=2),
    Job(spec("a wide field", sampler="euler", width=48, height=32), joins_at=1),
    Job(spec("a tall tower", sampler="unipc", width=48, height=32, negative_prompt="fog"), joins_at=3),
    Job(spec("img2img", init_image=SOURCE, strength=0.5, num_inference_steps=8), joins_at=1),
    Job(spec("vary", init_image=SOURCE, seeds=(5, 6)), task="vary", joins_at=2),
    Job(spec("upscale", init_image=SOURCE.resize((16, 16)), seeds=(7,)), task="upscale", joins_at=1),
    Job(spec("zoom out", init_image=ZOOMED.image, mask_image=ZOOMED.mask, seeds=(8, 9)), joins_at=1),
    # circular padding is set for its own group's calls only
    Job(spec("a seamless pattern", tile=True), joins_at=2),
    Job(spec("a red::3 lighthouse::2 fog::-1", parts=MULTI, negative_prompt="rain"), joins_at=1),
    Job(spec("a blue:: boat", parts=(("a blue", 0.5), ("boat", 0.5)), guidance_scale=1.0, sampler="dpm++2m")),
    Job(spec("a stopped lighthouse", stop=50, sampler="ddim"), joins_at=2),
    Job(spec("a chaotic sea", chaos=70), joins_at=1),
]


def run_together(engine: DiffusionEngine, jobs: list[Job]) -> tuple[list[tuple[Image.Image, ...]], int]:
    """As the worker does: jobs join at their step, each group of one latent shape steps in one call, done
    jobs finish. Returns each job's images and the most states one call took."""
    states: dict[int, StepState] = {}
    results: dict[int, tuple[Image.Image, ...]] = {}
    widest, tick = 0, 0
    while len(results) < len(jobs):
        for i, job in enumerate(jobs):
            if job.joins_at == tick:
                states[i] = engine.prepare(job.spec, job.task)
        groups: dict[object, list[int]] = {}
        for i, state in states.items():
            groups.setdefault(state.plan.group, []).append(i)
        for members in groups.values():
            engine.step([states[i] for i in members])
            widest = max(widest, len(members))
        for i in [i for i, state in states.items() if state.done]:
            results[i] = engine.finish(states.pop(i)).images
        tick += 1
    return [results[i] for i in range(len(jobs))], widest


def test_a_jobs_pixels_are_the_same_alone_or_amid_others(sd_engine: DiffusionEngine) -> None:
    alone = [sd_engine.generate(job.spec, task=job.task).images for job in JOBS]
    together, widest = run_together(sd_engine, JOBS)
    assert widest >= 4  # the calls really were shared
    for job, a, t in zip(JOBS, alone, together, strict=True):
        assert_close_pixels(a, t, BATCHED, job.spec.prompt)


def test_sdxl_time_ids_and_pooled_embeddings_are_per_sample(sdxl: TinyComponents) -> None:
    engine = engine_from(sdxl)
    jobs = [
        Job(spec("a red lighthouse")),
        Job(spec("a blue boat", guidance_scale=1.0), joins_at=1),
        Job(spec("a green hill", negative_prompt="rain", guidance_scale=3.0), joins_at=2),
        Job(spec("a red::3 lighthouse::2 fog::-1", parts=MULTI, chaos=50), joins_at=1),
    ]
    alone = [engine.generate(job.spec).images for job in jobs]
    together, widest = run_together(engine, jobs)
    assert widest == 4
    for a, t in zip(alone, together, strict=True):
        assert_close_pixels(a, t, BATCHED)


def test_plans_say_what_a_job_takes(sd_engine: DiffusionEngine) -> None:
    native = sd_engine.native_size  # 32 for the tiny model
    plan = sd_engine.plan(spec("x", seeds=(1, 2, 3, 4)))
    assert (plan.samples, plan.cost, plan.steps) == (8, 8.0, 6)  # four images, both CFG branches
    no_cfg = sd_engine.plan(spec("x", guidance_scale=1.0, seeds=(1,)))
    assert (no_cfg.samples, no_cfg.cost) == (1, 1.0)
    wide = sd_engine.plan(spec("x", width=2 * native, seeds=(1,)))
    assert wide.group != plan.group and wide.cost == 2 * wide.samples
    img2img = sd_engine.plan(spec("x", init_image=SOURCE, strength=0.5, num_inference_steps=8))
    assert img2img.steps == 4
    upscale = sd_engine.plan(spec("x", init_image=SOURCE.resize((16, 16)), seeds=(1, 2)), "upscale")
    assert upscale.samples == 2 and upscale.steps == 1  # one seed; 0.3 of 6 steps
    state = sd_engine.prepare(spec("x", init_image=SOURCE, strength=0.5, num_inference_steps=8))
    assert state.plan == img2img and not state.done


def test_default_capacity_on_the_cpu_is_a_budget_of_latent_pixels(sd_engine: DiffusionEngine) -> None:
    assert sd_engine.default_capacity() == 2**17 / (32 // 2) ** 2  # 16x16 latents
    assert capacity_for(free_bytes=10 * 2**30, bytes_per_sample=2**30) == 8.0
    assert capacity_for(free_bytes=2**20, bytes_per_sample=2**30) == 1.0  # one job always runs alone


def test_out_of_memory_in_a_shared_step_moves_no_job(sd_engine: DiffusionEngine) -> None:
    """The batcher retries a call that ran out of memory in two halves: no scheduler may have moved."""
    jobs = [spec("a red lighthouse"), spec("a blue boat", sampler="dpm++2m")]
    expected = [sd_engine.generate(s).images for s in jobs]
    states = [sd_engine.prepare(s) for s in jobs]
    armed = {"on": True}

    def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if armed["on"] and args[0].shape[0] > 4:  # more than one job's rows
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = sd_engine.unet.register_forward_pre_hook(hook)
    try:
        while not states[0].done:
            try:
                sd_engine.step(states)
            except OutOfMemory as e:
                assert e.fallback is None  # a shared call has no one fallback
                for state in states:
                    sd_engine.step([state])
    finally:
        handle.remove()
    for state, images in zip(states, expected, strict=True):
        assert_close_pixels(sd_engine.finish(state).images, images, BATCHED)


def test_an_upscale_alone_out_of_memory_carries_its_plain_resize(sd_engine: DiffusionEngine) -> None:
    tile = SOURCE.resize((16, 16))
    state = sd_engine.prepare(spec("upscale", init_image=tile, seeds=(7,)), "upscale")
    handle = sd_engine.unet.register_forward_pre_hook(
        lambda module, args: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    )
    try:
        with pytest.raises(OutOfMemory) as caught:
            sd_engine.step([state])
    finally:
        handle.remove()
    fallback = caught.value.fallback
    assert fallback is not None and "plain resize" in fallback.note
    assert fallback.images[0].size == (32, 32)


def test_cpu_allocation_failures_count_as_out_of_memory(sd_engine: DiffusionEngine) -> None:
    state = sd_engine.prepare(spec("x"))

    def hook(module: torch.nn.Module, args: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    handle = sd_engine.unet.register_forward_pre_hook(hook)
    try:
        with pytest.raises(OutOfMemory, match="machine ran out of memory making 2 image"):
            sd_engine.step([state])
    finally:
        handle.remove()
    sd_engine.step([state])  # the state did not move, and steps on
    assert state.steps_done == 1


class Recording:
    """The engine, counting the states of every step."""

    def __init__(self, engine: DiffusionEngine) -> None:
        self._engine, self.widths = engine, list[int]()

    def __getattr__(self, name: str) -> object:
        return getattr(self._engine, name)

    def step(self, states: list[StepState]) -> None:
        self.widths.append(len(states))
        self._engine.step(states)


async def test_the_executor_batches_real_jobs_and_their_pixels_stay_their_own(
    sd_engine: DiffusionEngine,
) -> None:
    specs = [JOBS[0].spec, JOBS[1].spec, JOBS[2].spec, JOBS[5].spec]
    alone = [sd_engine.generate(s).images for s in specs]
    engine = Recording(sd_engine)
    async with Executor(engine, capacity=100) as ex:  # type: ignore[arg-type]
        handles = [ex.submit(JobRequest(i, i, JobKind.IMAGINE, s)) for i, s in enumerate(specs)]
        finals = [await h.wait() for h in handles]
    assert max(engine.widths) >= 3
    for final, images in zip(finals, alone, strict=True):
        assert isinstance(final, Done)
        assert_close_pixels(final.result.images, images, BATCHED)


def test_the_bot_plans_from_the_model_folder_alone() -> None:
    """With Ray workers the bot holds no engine: the folder's configs give the same plans."""
    from imaginebot.config import EMBEDDED_MODEL
    from imaginebot.engine.loading import load_engine
    from imaginebot.engine.planning import Planner

    planner = Planner.from_folder(EMBEDDED_MODEL, upscale_max_side=96)
    engine = load_engine(EMBEDDED_MODEL, device="cpu", upscale_max_side=96)
    assert planner == engine.planner
    for job in JOBS:
        assert planner.plan(job.spec, job.task) == engine.plan(job.spec, job.task)
