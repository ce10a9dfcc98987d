"""What a job's buttons do: the actions its message offers in each state, what a button asks first, and
the new job each action derives from the job it is on (its parent): a ``Recipe``.

The job service (``imaginebot.jobs``) launches a recipe: reserves the quota, queues it, follows it. Here
is only what the new job is: its kind, its canonical prompt, its engine spec, and where it starts from.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from PIL import Image

from imaginebot import edits
from imaginebot.catalog import Catalog
from imaginebot.engine.api import GenerateSpec
from imaginebot.engine.canvas import Direction
from imaginebot.errors import ImagineError
from imaginebot.params import ImagineRequest, parse
from imaginebot.store import Store
from imaginebot.store_models import Edit, EditKind, Job, JobKind, JobStatus

VARY_SUBTLE, VARY_STRONG = 0.35, 0.75  # img2img strength of Vary (Subtle) / Vary (Strong)
UPSCALE_SUBTLE, UPSCALE_CREATIVE = 0.2, 0.5  # of Upscale (Subtle) / (Creative): 2x again, refined


class Action(StrEnum):
    """What a job's buttons ask for. The value rides in the button's custom_id: never change one."""

    UPSCALE = "u"  # U1–U4: one tile, enlarged and refined
    VARY = "v"  # V1–V4: four variations of one tile
    REROLL = "r"  # 🔄: the same prompt with new seeds
    RETRY = "a"  # the very same job again, after it failed or was cut off
    CANCEL = "c"  # while queued or running
    # the tools on an upscale
    UPSCALE_SUBTLE = "b"
    UPSCALE_CREATIVE = "k"
    VARY_SUBTLE = "s"
    VARY_STRONG = "t"
    VARY_REGION = "g"  # asks which cells, and the region's prompt
    ZOOM_2X = "z"
    ZOOM_1_5X = "o"
    CUSTOM_ZOOM = "m"  # asks for the prompt and the factor
    MAKE_SQUARE = "q"
    PAN_LEFT = "w"
    PAN_RIGHT = "e"
    PAN_UP = "n"
    PAN_DOWN = "d"


PANS = {
    Action.PAN_LEFT: Direction.LEFT,
    Action.PAN_RIGHT: Direction.RIGHT,
    Action.PAN_UP: Direction.UP,
    Action.PAN_DOWN: Direction.DOWN,
}
ZOOMS = {Action.ZOOM_2X: 2.0, Action.ZOOM_1_5X: 1.5}
# With Remix mode on (/settings), these first open the prompt for editing.
REMIXABLE = frozenset({Action.VARY, Action.REROLL, Action.VARY_SUBTLE, Action.VARY_STRONG, *ZOOMS, *PANS})


class Ask(StrEnum):
    """What the user is asked before a button's job is made (the cogs choose how: a modal, a menu)."""

    NOTHING = "nothing"
    PROMPT = "prompt"  # Remix mode: the prompt, to change
    ZOOM = "zoom"  # Custom Zoom: the prompt and a factor
    REGION = "region"  # Vary (Region): which cells, then the region's prompt


def asks_for(action: Action, remix: bool) -> Ask:
    if action is Action.CUSTOM_ZOOM:
        return Ask.ZOOM
    if action is Action.VARY_REGION:
        return Ask.REGION
    return Ask.PROMPT if remix and action in REMIXABLE else Ask.NOTHING


@dataclass(frozen=True)
class Tweak:
    """What the user gave when asked (``asks_for``): a new prompt (None: the parent's), a zoom factor, the
    cells of a region."""

    prompt: str | None = None
    factor: float | None = None
    cells: tuple[int, ...] = ()


def upscale_tools(job: Job) -> tuple[Action, ...]:
    """Midjourney's tools under an upscale; Make Square only where the picture is not square."""
    square = () if job.spec.width == job.spec.height else (Action.MAKE_SQUARE,)
    return (
        Action.UPSCALE_SUBTLE,
        Action.UPSCALE_CREATIVE,
        Action.VARY_SUBTLE,
        Action.VARY_STRONG,
        Action.VARY_REGION,
        Action.ZOOM_2X,
        Action.ZOOM_1_5X,
        Action.CUSTOM_ZOOM,
        *square,
        *PANS,
    )


def next_actions(job: Job) -> tuple[tuple[Action, int], ...]:
    """The buttons a job's message offers in its state: (action, tile) pairs, tile 0 where none applies."""
    if job.hidden:  # taken down by a moderator
        return ()
    if not job.status.finished:
        return ((Action.CANCEL, 0),)
    if job.status is JobStatus.DONE:
        if job.kind is JobKind.UPSCALE:
            return tuple((action, 0) for action in upscale_tools(job))
        tiles = range(1, len(job.images) + 1)
        return (
            *((Action.UPSCALE, t) for t in tiles),
            *((Action.VARY, t) for t in tiles),
            (Action.REROLL, 0),
        )
    if job.status in (JobStatus.FAILED, JobStatus.INTERRUPTED):
        return ((Action.RETRY, 0),)
    return ()


@dataclass(frozen=True)
class Recipe:
    """What a new job will be, before who and where are known."""

    kind: JobKind
    prompt_text: str  # the canonical /imagine text
    spec: GenerateSpec
    parent_id: int | None = None
    tile_index: int | None = None  # 0-based tile of the parent, for V and U
    edit: Edit | None = None
    source: str | None = None  # an image prompt's picture


class Recipes:
    """The new job each action makes of its parent."""

    def __init__(
        self, store: Store, catalog: Catalog, *, seeds: Callable[[], int], upscale_max_side: int = 2048
    ) -> None:
        self.store, self.catalog = store, catalog
        self.upscale_max_side = upscale_max_side
        self._seeds = seeds
        self._by_action: dict[Action, Callable[[Job, int, Tweak], Awaitable[Recipe]]] = {
            Action.UPSCALE: self._upscale,
            Action.VARY: self._vary,
            Action.REROLL: self._reroll,
            Action.RETRY: self._retry,
            Action.UPSCALE_SUBTLE: self._upscale_subtle,
            Action.UPSCALE_CREATIVE: self._upscale_creative,
            Action.VARY_SUBTLE: self._vary_subtle,
            Action.VARY_STRONG: self._vary_strong,
            Action.VARY_REGION: self._vary_region,
            Action.ZOOM_2X: functools.partial(self._zoom, ZOOMS[Action.ZOOM_2X]),
            Action.ZOOM_1_5X: functools.partial(self._zoom, ZOOMS[Action.ZOOM_1_5X]),
            Action.CUSTOM_ZOOM: functools.partial(self._zoom, None),  # the factor the user gave
            Action.MAKE_SQUARE: self._make_square,
            **{action: functools.partial(self._pan, direction) for action, direction in PANS.items()},
        }

    async def make(self, action: Action, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        """The job ``action`` asks of ``parent`` (tile 1-based where it applies), or ImagineError."""
        recipe = self._by_action.get(action)
        if recipe is None:
            raise ValueError(f"{action!r} does not make a new job")
        return await recipe(parent, tile, tweak)

    async def parent_of(self, job_id: int) -> Job:
        """The job a button is on; ImagineError when it is gone or a moderator removed it."""
        parent = await self.store.get_job(job_id)
        if parent is None:
            raise ImagineError("That job is no longer known to the bot; start a new /imagine.")
        if parent.hidden:
            raise ImagineError("A moderator took that image down: its buttons no longer work.")
        return parent

    def native(self, request: ImagineRequest) -> int:
        """The native side of the request's model."""
        return self.catalog.model_or_default(request.model).native_size

    async def _upscale(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        index = self._tile(parent, tile)
        seed = parent.spec.seeds[index]
        # The footer's /imagine text makes exactly this tile again: tile 0 of its own seed.
        request = replace(parse(parent.prompt_text), seed=seed, images=1)
        # the parts and the chaos stay the tile's; a --stop tile is refined to the end of the upscale's steps
        spec = replace(parent.spec, seeds=(seed,), strength=None, stop=100)
        return Recipe(JobKind.UPSCALE, str(request), spec, parent.id, index)

    async def _vary(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        index = self._tile(parent, tile)
        request = replace(self._request(parent, tweak), seed=self._seeds(), images=4)
        spec = replace(
            request.to_spec(self.native(request)), width=parent.spec.width, height=parent.spec.height
        )
        return Recipe(JobKind.VARIATION, str(request), spec, parent.id, index)

    async def _vary_subtle(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        return await self._vary_upscaled(parent, VARY_SUBTLE, tweak)

    async def _vary_strong(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        return await self._vary_upscaled(parent, VARY_STRONG, tweak)

    async def _vary_upscaled(self, parent: Job, strength: float, tweak: Tweak) -> Recipe:
        source = await self._upscaled_picture(parent)
        request = replace(self._request(parent, tweak), seed=self._seeds(), images=4)
        spec = replace(
            request.to_spec(self.native(request)),
            width=source.width,
            height=source.height,
            strength=strength,
        )
        return Recipe(JobKind.VARIATION, str(request), spec, parent.id, 0)

    async def _upscale_subtle(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        return await self._upscale_again(parent, UPSCALE_SUBTLE)

    async def _upscale_creative(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        return await self._upscale_again(parent, UPSCALE_CREATIVE)

    async def _upscale_again(self, parent: Job, strength: float) -> Recipe:
        """Upscale (Subtle) / (Creative): the upscale 2x again (tiled past twice the native size), refined
        lightly or boldly."""
        source = await self._upscaled_picture(parent)
        if max(source.size) * 2 > self.upscale_max_side:
            raise ImagineError(
                f"This image is {source.width}×{source.height}; twice that would pass "
                f"{self.upscale_max_side} pixels, the largest upscale this bot makes "
                "(IMAGINEBOT_UPSCALE_MAX_SIDE). Vary, zoom or pan it instead."
            )
        spec = replace(parent.spec, width=source.width, height=source.height, strength=strength)
        return Recipe(JobKind.UPSCALE, parent.prompt_text, spec, parent.id, 0)

    async def _vary_region(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        return await self._edit(parent, Edit(EditKind.REGION, cells=tuple(sorted(set(tweak.cells)))), tweak)

    async def _zoom(self, factor: float | None, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        factor = factor if factor is not None else tweak.factor
        if factor is None:
            raise ValueError("Custom Zoom needs a factor")
        return await self._edit(parent, Edit(EditKind.ZOOM, factor=factor), tweak)

    async def _pan(self, direction: Direction, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        return await self._edit(parent, Edit(EditKind.PAN, direction=direction), tweak)

    async def _make_square(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        return await self._edit(parent, Edit(EditKind.SQUARE), tweak)

    async def _edit(self, parent: Job, edit: Edit, tweak: Tweak) -> Recipe:
        """Zoom, pan, square or region of an upscale: a grid of four drawn on the edit's canvas."""
        edits.check(edit)
        picture = (await self._upscaled_picture(parent)).size
        request = replace(self._request(parent, tweak), seed=self._seeds(), images=4)
        request = replace(request, aspect=edits.aspect(edit, picture, request.aspect))
        width, height = edits.size(edit, picture, request.aspect, self.native(request))
        spec = replace(request.to_spec(self.native(request)), width=width, height=height)
        return Recipe(JobKind.EDIT, str(request), spec, parent.id, 0, edit)

    async def _reroll(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        if parent.kind is JobKind.EDIT and parent.edit is not None:  # the same edit of the same upscale
            prompt = parent.prompt_text if tweak.prompt is None else tweak.prompt
            upscale = await self.parent_of(parent.parent_id or 0)
            return await self._edit(upscale, parent.edit, replace(tweak, prompt=prompt))
        request = self._request(parent, tweak).with_seed(self._seeds())
        spec = request.to_spec(self.native(request), image_prompt=parent.source is not None)
        return Recipe(JobKind.REROLL, str(request), spec, parent.id, source=parent.source)  # same image

    def _request(self, parent: Job, tweak: Tweak) -> ImagineRequest:
        """The parent's /imagine, or the one the user remixed it into."""
        text = parent.prompt_text if tweak.prompt is None else tweak.prompt
        defaults = self.catalog.model_or_default(parent.spec.model).defaults
        return parse(text, defaults, choices=self.catalog.choices(), later_wins=tweak.prompt is not None)

    async def _upscaled_picture(self, parent: Job) -> Image.Image:
        """The picture of a finished upscale, which the tools under it start from."""
        if parent.kind is not JobKind.UPSCALE:
            raise ImagineError("That tool works on an upscale: press U1–U4 first.")
        self._tile(parent, 1)
        return await self.starting_picture(parent.images[0])

    async def starting_picture(self, path: str) -> Image.Image:
        """A picture a job starts from (a parent's tile, an image prompt); ImagineError when it is gone."""
        try:
            return await self.store.load_image(path)
        except OSError as error:
            raise ImagineError("The image this job starts from is gone; start a new /imagine.") from error

    async def _retry(self, parent: Job, tile: int, tweak: Tweak) -> Recipe:
        if parent.status not in (JobStatus.FAILED, JobStatus.INTERRUPTED, JobStatus.CANCELLED):
            raise ImagineError("That job did not fail; 🔄 makes new images from its prompt.")
        return Recipe(
            parent.kind,
            parent.prompt_text,
            parent.spec,
            parent.parent_id,
            parent.tile_index,
            parent.edit,
            parent.source,
        )

    @staticmethod
    def _tile(parent: Job, tile: int) -> int:
        """The 0-based index of tile ``tile`` (1-based, as on the buttons) of a finished grid."""
        if parent.status is not JobStatus.DONE:
            raise ImagineError("That job has no images yet; wait for it to finish.")
        if not 1 <= tile <= len(parent.images):
            raise ImagineError(f"That grid has {len(parent.images)} images; there is no image {tile}.")
        if parent.held_back(tile - 1):  # as Midjourney: a moderated image can't be worked on, and says why
            which = "This image" if len(parent.images) == 1 else f"Image {tile}"
            raise ImagineError(
                f"{which} waits for a moderator's review (the safety checker flagged it): it can't be "
                "upscaled, varied or edited until a moderator releases it."
            )
        return tile - 1
