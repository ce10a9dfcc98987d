"""Fakes shared by the tests of the executor and the job service: a deterministic engine."""

from __future__ import annotations

import threading

from PIL import Image

from imaginebot.engine.api import CancelCheck, GenerateResult, GenerateSpec, Preview, PreviewCallback
from imaginebot.errors import GenerationCancelled, OutOfMemory


class FakeEngine:
    """Deterministic stand-in for the diffusion engine: solid-colour tiles, one "step" at a time.

    Prompts steer it: "oom" raises OutOfMemory, "bug" a plain exception. ``gate`` (when cleared) holds
    every job before its first step; ``permits`` (when set) makes each step wait for one release.
    """

    native_size = 64

    def __init__(self, steps_per_permit: bool = False) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.permits: threading.Semaphore | None = threading.Semaphore(0) if steps_per_permit else None
        self.calls: list[tuple[str, str]] = []  # (method, prompt), in the order jobs ran
        self.specs: list[GenerateSpec] = []  # what each job ran with, in the same order
        self.threads: set[int] = set()

    def _loop(
        self,
        method: str,
        spec: GenerateSpec,
        on_preview: PreviewCallback | None,
        preview_every: int,
        should_cancel: CancelCheck | None,
        colour: tuple[int, int, int],
    ) -> GenerateResult:
        self.calls.append((method, spec.prompt))
        self.specs.append(spec)
        self.threads.add(threading.get_ident())
        self.gate.wait()
        if spec.prompt == "oom":
            raise OutOfMemory("The GPU ran out of memory; try fewer images or a smaller size.")
        if spec.prompt == "bug":
            raise ZeroDivisionError("a bug")
        for step in range(1, spec.num_inference_steps + 1):
            if self.permits is not None:
                self.permits.acquire()
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled("cancelled")
            if on_preview is not None and step % preview_every == 0:
                on_preview(Preview(step, spec.num_inference_steps, Image.new("RGB", (8, 8), (step, 0, 0))))
        tiles = tuple(Image.new("RGB", (spec.width, spec.height), colour) for _ in spec.seeds)
        return GenerateResult(images=tiles, seeds=spec.seeds, elapsed_s=0.0)

    def generate(
        self,
        spec: GenerateSpec,
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
        should_cancel: CancelCheck | None = None,
    ) -> GenerateResult:
        return self._loop("generate", spec, on_preview, preview_every, should_cancel, (0, 0, 255))

    def vary(
        self,
        image: Image.Image,
        spec: GenerateSpec,
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
        should_cancel: CancelCheck | None = None,
    ) -> GenerateResult:
        colour = image.getpixel((0, 0))
        assert isinstance(colour, tuple)
        return self._loop("vary", spec, on_preview, preview_every, should_cancel, colour[:3])

    def upscale(
        self, image: Image.Image, spec: GenerateSpec, *, should_cancel: CancelCheck | None = None
    ) -> GenerateResult:
        return self._loop("upscale", spec, None, 1, should_cancel, (0, 255, 0))
