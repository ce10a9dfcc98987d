"""From the text of /imagine to the requests of its jobs, before anything is queued.

    /imagine a {red, blue} bird --mine --repeat 2      (with /prefer option set mine --ar 3:2)

1. the student's ``--name`` shortcuts are replaced by their text (``prefer``);
2. the braces are expanded (``permutations``): here two prompts, each its own job; the student's /prefer
   suffix is expanded too and added to each (less the flags the prompt gives itself);
3. each prompt is parsed (``params``), and ``--repeat N`` makes N jobs of it, each with its own seed.

How many jobs that makes is known before any is made, and bounded (IMAGINEBOT_MAX_PERMUTATIONS). An image
prompt's picture is read here too.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from PIL import Image

from imaginebot.errors import ParamError
from imaginebot.params import SEED_RANGE, ImagineRequest, Speed, given_flags
from imaginebot.permutations import permutations
from imaginebot.prefer import expand_shortcuts, with_suffix

IMAGE_PROMPT_MAX_BYTES = 10 * 2**20  # Discord's own upload limit for most servers
IMAGE_PROMPT_MAX_PIXELS = 4096 * 4096


def check_image_prompt(size_bytes: int) -> None:
    """Refuse an image prompt too large to download (ParamError)."""
    if size_bytes > IMAGE_PROMPT_MAX_BYTES:
        raise ParamError(
            f"The image is {size_bytes / 2**20:.1f} MiB; an image prompt may be up to "
            f"{IMAGE_PROMPT_MAX_BYTES // 2**20} MiB."
        )


def read_image_prompt(data: bytes) -> Image.Image:
    """An image prompt's picture, or ParamError saying what is wrong with the file."""
    check_image_prompt(len(data))
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > IMAGE_PROMPT_MAX_PIXELS:
                raise ParamError(
                    f"The image is {image.width}×{image.height}; an image prompt may have up to "
                    f"{IMAGE_PROMPT_MAX_PIXELS:,} pixels (4096×4096)."
                )
            image.load()
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as error:
        raise ParamError("That file is not an image the bot can read: attach a PNG, JPEG or WebP.") from error


@dataclass(frozen=True)
class Prepared:
    """The jobs one /imagine makes: one request each (``repeat`` 1, its own seed), and the picture they start
    from. ``prompts``: how many prompts the braces made, before ``--repeat``."""

    requests: tuple[ImagineRequest, ...]
    prompts: int = 1
    picture: Image.Image | None = field(default=None, compare=False, repr=False)

    @property
    def images(self) -> int:
        return sum(request.images for request in self.requests)


def too_many(jobs: int, prompts: int, limit: int) -> ParamError:
    """The refusal of a prompt that makes more jobs than allowed at once."""
    how = f"{prompts} prompts from its {{ }} options" if prompts > 1 else "one prompt"
    if jobs > prompts:
        how += " with --repeat"
    return ParamError(
        f"This prompt makes {jobs} jobs ({how}); this bot makes at most {limit} from one /imagine. "
        "Use fewer options in { } or a smaller --repeat."
    )


def compose(text: str, shortcuts: Mapping[str, str], suffix: str, limit: int) -> list[str]:
    """The prompts one /imagine text makes: shortcuts expanded, then the prompt's and the suffix's braces
    (every prompt with every suffix). ParamError for bad braces, or for more than ``limit`` prompts (counted
    before any is made)."""
    prompt = permutations(expand_shortcuts(text, shortcuts))
    tail = permutations(expand_shortcuts(suffix, shortcuts))
    count = prompt.count * tail.count
    if count > limit:
        raise too_many(count, count, limit)
    return [with_suffix(p, s) for p in prompt.prompts() for s in tail.prompts()]


def split_repeats(
    requests: Sequence[tuple[ImagineRequest, bool]], seeds: Callable[[], int], limit: int
) -> list[ImagineRequest]:
    """One request per job: each ``--repeat N`` request N times, with new seeds. ``requests``: each with
    whether its seed was given: then the copies take the seeds after the grid's (seed + k × images), so the
    whole set is reproducible; otherwise each copy gets a fresh random seed."""
    jobs = sum(request.repeat for request, _ in requests)
    if jobs > limit:
        raise too_many(jobs, len(requests), limit)
    out: list[ImagineRequest] = []
    for request, seed_given in requests:
        for k in range(request.repeat):
            if k == 0:
                seed = request.seed
            elif seed_given:
                seed = (request.seed + k * request.images) % (SEED_RANGE[1] + 1)
            else:
                seed = seeds()
            out.append(replace(request, repeat=1, seed=seed))
    return out


def speed_of(prompt_text: str) -> Speed | None:
    """--relax or --fast in a canonical prompt (None: neither)."""
    flags = given_flags(prompt_text)
    if Speed.RELAX in flags:
        return Speed.RELAX
    return Speed.FAST if Speed.FAST in flags else None
