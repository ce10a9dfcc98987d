"""The engine's public contract: what the executor hands in and gets back.

Nothing here knows Discord. The executor (the one bridge to the event loop) calls an ``Engine`` from its
worker thread, step by step: ``prepare`` a job, ``step`` every prepared job of one latent shape together
(one UNet call), ``finish`` a job whose steps are done.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from PIL import Image

# The prompt language's sampler names (``--sampler``); the engine maps each to a diffusers scheduler.
SAMPLERS: tuple[str, ...] = ("ddim", "euler", "euler_a", "dpm++2m", "dpm++2m_karras", "unipc", "lms", "lcm")
DEFAULT_SAMPLER = "euler_a"


@dataclass(frozen=True)
class GenerateSpec:
    """One job for the engine: txt2img, img2img when ``init_image`` is set, and inpainting or outpainting
    when ``mask_image`` is set too (the editing tools: Zoom Out, Pan, Make Square, Vary (Region)).

    Tile *i* is made from ``torch.Generator().manual_seed(seeds[i])`` alone, so any one tile can be re-made
    by itself with the same seed.
    """

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    num_inference_steps: int = 30
    guidance_scale: float = 7.0
    sampler: str = DEFAULT_SAMPLER
    seeds: tuple[int, ...] = (0,)
    init_image: Image.Image | None = field(default=None, compare=False)
    # img2img: how much noise is added to init_image (1.0: start from pure noise); None: the engine's choice
    # for what it is asked to do (variations 0.6, upscales a light refinement)
    strength: float | None = None
    # Inpainting and outpainting: an "L" image of init_image's size, white where the model draws and black
    # where init_image is kept (blended in at every step, then pasted back); strength None is 1.0 there
    mask_image: Image.Image | None = field(default=None, compare=False)
    tile: bool = False  # seamless: circular padding in the UNet and the VAE, so the picture wraps around
    # Which of the bot's models draws it ("": the only or the first one); an engine of several models
    # (``engine.models.ModelSet``) sends the job to that model's engine.
    model: str = ""
    # LoRAs applied to this job alone, as (name, weight): a name is a file's stem in the engine's LoRA
    # folder, the weight 0-2. Jobs with different LoRA sets never share a UNet call.
    loras: tuple[tuple[str, float], ...] = ()
    # --chaos 0-100: how far apart the tiles' starting noise and text conditioning are drawn, each tile's from
    # its own seed and the chaos alone (0: exactly as without it)
    chaos: int = 0
    # --stop 10-100: the percentage of the steps that run; the images are the model's prediction of the
    # clean picture at the last of them (100: every step, as without it)
    stop: int = 100
    # A multi-prompt's parts as (text, weight), the weights normalised so that the positive ones add up to 1
    # (``imaginebot.prompt_parts``): composable diffusion, one noise prediction per part in the same UNet
    # call (``planning.Layout``). Empty: one part, ``prompt`` itself, run as it always was. With parts,
    # ``prompt`` is their text as the user sees it ("a castle::1 fog::-0.5") and the engine reads the parts.
    parts: tuple[tuple[str, float], ...] = ()

    @property
    def num_images(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class Preview:
    """A cheap preview of all tiles at one step (latent->RGB approximation of the predicted x0)."""

    step: int  # steps done so far, 1-based
    total: int
    image: Image.Image  # the tiles laid out as the final grid will be


@dataclass(frozen=True)
class GenerateResult:
    images: tuple[Image.Image, ...]
    seeds: tuple[int, ...]
    elapsed_s: float
    note: str = ""  # said to the user, e.g. "upscaled by a plain resize: not enough GPU memory"
    flagged: tuple[int, ...] = ()  # 0-based images the safety checker flagged (none without a checker)


class SafetyCheck(Protocol):
    """An image moderator on a worker's device (``engine.safety``): which images to hold for review."""

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        """One flag per image, True to hold it back; all images in one batch. Runs on the worker thread."""
        ...


PreviewCallback = Callable[[Preview], None]
CancelCheck = Callable[[], bool]

# What a job asks of the model: txt2img (or img2img from spec.init_image), variations of spec.init_image
# (strength None: about 0.6), or spec.init_image enlarged 2x and refined by low-strength img2img.
Task = Literal["generate", "vary", "upscale"]


@dataclass(frozen=True)
class Plan:
    """What a job will take of a batched UNet call, known before any work is done."""

    group: Hashable  # jobs of one group (one latent shape) can share a UNet call
    samples: int  # rows of the UNet batch: one per image, twice that with classifier-free guidance
    cost: float  # samples weighted by pixels against the native size: what counts against the capacity
    steps: int  # UNet calls to the end


class StepState(Protocol):
    """A prepared job between steps; the engine's own type behind it."""

    @property
    def plan(self) -> Plan: ...

    @property
    def steps_done(self) -> int: ...

    @property
    def done(self) -> bool:
        """All steps taken: ``finish`` makes the images."""
        ...

    @property
    def fallback(self) -> GenerateResult | None:
        """What to give the user when the job runs out of memory even alone (a plain upscale), if any."""
        ...


class Engine(Protocol):
    """What the executor needs from an engine. Every method but ``plan`` runs on the worker thread and may
    block; each raises OutOfMemory, GenerationFailed or ParamError (from ``prepare``: a spec it refuses)."""

    @property
    def native_size(self) -> int:
        """The model's native side in pixels (512 for SD 1.5, 1024 for SDXL, 64 for the embedded model)."""
        ...

    def default_capacity(self) -> float:
        """Samples of native size per UNet call this device holds (the batch's bound when none is set)."""
        ...

    def plan(self, spec: GenerateSpec, task: Task = "generate") -> Plan:
        """Cheap and pure: safe to call from any thread."""
        ...

    def prepare(
        self,
        spec: GenerateSpec,
        task: Task = "generate",
        *,
        on_preview: PreviewCallback | None = None,
        preview_every: int = 5,
    ) -> StepState:
        """Encode the prompt (and the init image), draw the first latents, build the job's own scheduler."""
        ...

    def step(self, states: Sequence[StepState]) -> None:
        """One denoising step of every state, in one UNet call; all share one ``plan.group``, none is done."""
        ...

    def finish(self, state: StepState) -> GenerateResult:
        """Decode a done state's latents (after its last preview has been delivered)."""
        ...
