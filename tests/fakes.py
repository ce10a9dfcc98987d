"""Fakes shared by the tests of the executor and the job service: a deterministic engine."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from imaginebot.engine.api import (
    GenerateResult,
    GenerateSpec,
    Plan,
    Preview,
    PreviewCallback,
    StepState,
    Task,
)
from imaginebot.engine.planning import img2img_steps, strength
from imaginebot.errors import OutOfMemory


@dataclass(eq=False)
class FakeState:
    plan: Plan
    spec: GenerateSpec
    colour: tuple[int, int, int]
    on_preview: PreviewCallback | None
    preview_every: int
    steps_done: int = 0

    @property
    def done(self) -> bool:
        return self.steps_done >= self.plan.steps


class FakeEngine:
    """Deterministic stand-in for the diffusion engine: solid-colour tiles, the step API of the real one.

    A job costs one sample per image; ``capacity`` (default 1: one job at a time) is its default capacity.
    Prompts steer it: "oom" makes any step it is part of run out of memory, "bug" raises a plain exception
    in prepare. ``gate`` (when cleared) holds every job before its first step (in prepare); ``permits``
    (when set) makes each step wait for one release. ``max_samples``: steps bigger than that run out of
    memory. ``batches`` records the job ids of every step, in order.
    """

    native_size = 64

    def __init__(
        self, steps_per_permit: bool = False, capacity: float = 1.0, max_samples: int | None = None
    ) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.permits: threading.Semaphore | None = threading.Semaphore(0) if steps_per_permit else None
        self.capacity = capacity
        self.max_samples = max_samples
        self.calls: list[tuple[str, str]] = []  # (method, prompt), in the order jobs were prepared
        self.specs: list[GenerateSpec] = []  # what each job ran with, in the same order
        self.batches: list[list[str]] = []  # the prompts of each step
        self.threads: set[int] = set()

    def default_capacity(self) -> float:
        return self.capacity

    def plan(self, spec: GenerateSpec, task: Task = "generate") -> Plan:
        steps = spec.num_inference_steps
        if spec.init_image is not None or task != "generate":  # img2img runs the end of the schedule
            steps = img2img_steps(steps, strength(spec, task))
        return Plan((spec.height, spec.width), spec.num_images, spec.num_images, steps)

    def prepare(
        self,
        spec: GenerateSpec,
        task: Task = "generate",
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
    ) -> FakeState:
        self.calls.append((task, spec.prompt))
        self.specs.append(spec)
        self.threads.add(threading.get_ident())
        self.gate.wait()
        if spec.prompt == "bug":
            raise ZeroDivisionError("a bug")
        colour: tuple[int, int, int] = {"generate": (0, 0, 255), "upscale": (0, 255, 0)}.get(task, (0, 0, 0))
        if task == "vary":
            assert spec.init_image is not None
            pixel = spec.init_image.getpixel((0, 0))
            assert isinstance(pixel, tuple)
            colour = (pixel[0], pixel[1], pixel[2])
        return FakeState(self.plan(spec, task), spec, colour, on_preview, preview_every)

    def step(self, states: Sequence[StepState]) -> None:
        jobs = [state for state in states if isinstance(state, FakeState)]
        assert len(jobs) == len(states) and jobs and all(not job.done for job in jobs)
        assert len({job.plan.group for job in jobs}) == 1, "one group per step"
        self.threads.add(threading.get_ident())
        if self.permits is not None:
            self.permits.acquire()
        self.batches.append([job.spec.prompt for job in jobs])
        samples = sum(job.plan.samples for job in jobs)
        if any(job.spec.prompt == "oom" for job in jobs) or (
            self.max_samples is not None and samples > self.max_samples
        ):
            raise OutOfMemory(f"The GPU ran out of memory making {samples} image(s); try fewer.")
        for job in jobs:
            job.steps_done += 1
            step, total = job.steps_done, job.plan.steps
            if job.on_preview is not None and step % job.preview_every == 0:
                job.on_preview(Preview(step, total, Image.new("RGB", (8, 8), (step, 0, 0))))

    def finish(self, state: StepState) -> GenerateResult:
        assert isinstance(state, FakeState) and state.done
        spec = state.spec
        tiles = tuple(Image.new("RGB", (spec.width, spec.height), state.colour) for _ in spec.seeds)
        return GenerateResult(images=tiles, seeds=spec.seeds, elapsed_s=0.0)


class FlagPositions:
    """A stand-in safety checker: flags the images at ``positions`` of each batch it is given (with one job
    at a time, that job's tiles), and records the size of every batch."""

    def __init__(self, *positions: int) -> None:
        self.positions = set(positions)
        self.batches: list[int] = []

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        self.batches.append(len(images))
        return [i in self.positions for i in range(len(images))]
