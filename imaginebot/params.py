"""The /imagine prompt language: turn the text of the ``prompt`` option into a typed request.

    a watercolor otter --ar 3:2 --no blur, text --steps 25 --seed 42
    a castle:: in the clouds::2 fog::-0.5 --chaos 40 --stop 80 --q .5

Flags may stand anywhere in the text, in any letter case, as ``--flag value`` or ``--flag=value``, with
quoted values, and with the em-dash ``—`` or en-dash ``–`` that phones type in place of ``--``. What is
left once the flags are taken out is the prompt, in weighted parts where it has ``::``
(``imaginebot.prompt_parts``). ``str(request)`` gives back canonical /imagine text that
parses to the same request (the 🔄 button and the message footer use it).

The scanner is written by hand: ``shlex`` would choke on the apostrophes of ordinary prose ("a cat's
hat"), and ``argparse`` neither reports near misses in a student's words nor keeps the free text between
flags.
"""

from __future__ import annotations

import difflib
import math
import random
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fractions import Fraction
from typing import Final

from imaginebot import prompt_parts
from imaginebot.engine.api import DEFAULT_SAMPLER, SAMPLERS, GenerateSpec
from imaginebot.engine.lora_files import MAX_LORA_WEIGHT, MIN_LORA_WEIGHT
from imaginebot.errors import ParamError

STEPS_RANGE: Final = (1, 150)
CFG_RANGE: Final = (0.0, 30.0)
SEED_RANGE: Final = (0, 2**32 - 1)
IMAGES_RANGE: Final = (1, 4)
MAX_ASPECT: Final = 4  # between 1:4 and 4:1
IMAGE_WEIGHT_RANGE: Final = (0.0, 3.0)  # --iw, as Midjourney's
DEFAULT_IMAGE_WEIGHT: Final = 1.0
LORA_WEIGHT_RANGE: Final = (MIN_LORA_WEIGHT, MAX_LORA_WEIGHT)  # --lora name:weight
DEFAULT_LORA_WEIGHT: Final = 1.0
MAX_LORAS: Final = 4  # LoRAs in one prompt
CHAOS_RANGE: Final = (0, 100)  # --chaos, as Midjourney's
STOP_RANGE: Final = (10, 100)  # --stop: the percentage of the steps that run
QUALITIES: Final = (0.25, 0.5, 1.0)  # --q: the fraction of the steps that run
REPEAT_RANGE: Final = (1, 10)  # --repeat: jobs of one prompt


class Speed(StrEnum):
    """--fast / --relax: how a job waits (relax: after every fast job, costing no quota)."""

    FAST = "fast"
    RELAX = "relax"


# What people type for the samplers, mapped to our names (diffusers' and A1111's spellings).
SAMPLER_ALIASES: Final[dict[str, str]] = {
    "dpmpp_2m": "dpm++2m",
    "dpmpp2m": "dpm++2m",
    "dpm++_2m": "dpm++2m",
    "dpm++ 2m": "dpm++2m",
    "dpmpp_2m_karras": "dpm++2m_karras",
    "dpm++2m karras": "dpm++2m_karras",
    "dpm++_2m_karras": "dpm++2m_karras",
    "euler_ancestral": "euler_a",
    "euler-a": "euler_a",
    "uni_pc": "unipc",
}


@dataclass(frozen=True)
class RequestDefaults:
    """What a request gets for each flag the user left out (server settings or the user's /settings)."""

    steps: int = 30
    cfg: float = 7.0
    sampler: str = DEFAULT_SAMPLER
    images: int = 4
    aspect: tuple[int, int] = (1, 1)
    model: str = ""  # the model when the prompt has no --model ("": the only one)


@dataclass(frozen=True)
class Choices:
    """What ``--model`` and ``--lora`` may name, and each model's own defaults (the user's /settings on
    top), which apply when the prompt picks that model. Without it, any name is taken as written."""

    defaults: Mapping[str, RequestDefaults]  # model name -> its defaults
    loras: Collection[str] = ()  # the LoRAs' names


@dataclass(frozen=True)
class ImagineRequest:
    """One /imagine, fully resolved: every value is concrete, the seed included."""

    prompt: str
    seed: int
    steps: int = 30
    cfg: float = 7.0
    negative: tuple[str, ...] = ()
    aspect: tuple[int, int] = (1, 1)
    sampler: str = DEFAULT_SAMPLER
    images: int = 4
    tile: bool = False  # --tile: a seamless pattern
    image_weight: float | None = None  # --iw: how much an image prompt counts (None: not given)
    model: str = ""  # --model: which of the bot's models draws it ("": the only one)
    loras: tuple[tuple[str, float], ...] = ()  # --lora name:weight, in the order given
    chaos: int = 0  # --chaos: how far apart the grid's images are (0: as they always were)
    stop: int = 100  # --stop: the percentage of the steps that run
    quality: float = 1.0  # --q: the fraction of --steps in the schedule
    repeat: int = 1  # --repeat: this many jobs, each with its own seed (the job service splits them)
    speed: Speed | None = None  # --fast / --relax (None: the user's /settings)

    @property
    def negative_prompt(self) -> str:
        return ", ".join(self.negative)

    @property
    def parts(self) -> tuple[prompt_parts.Part, ...]:
        """The prompt's weighted parts (one for a prompt without ``::``), weights as written."""
        return prompt_parts.split(self.prompt)

    @property
    def scheduled_steps(self) -> int:
        """The steps of the schedule: --steps times --q, at least one."""
        return max(1, math.ceil(self.steps * self.quality))

    def tile_seeds(self) -> tuple[int, ...]:
        """Tile *i* of seed *s* is made from seed ``s + i`` alone, so it can be re-made by itself."""
        return tuple((self.seed + i) % (SEED_RANGE[1] + 1) for i in range(self.images))

    def size(self, native_side: int) -> tuple[int, int]:
        """Width and height for this aspect ratio at about the model's native pixel count."""
        return size_for_aspect(self.aspect, native_side)

    def to_spec(self, native_side: int, *, image_prompt: bool = False) -> GenerateSpec:
        """What the engine runs for this request: the one place a request becomes an engine spec.
        ``image_prompt``: the pictures start from an image, as much as --iw says."""
        width, height = self.size(native_side)
        parts = self.parts
        return GenerateSpec(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            # a multi-prompt: its parts, normalised; one part is the prompt itself, run as it always was
            parts=prompt_parts.normalised(parts) if len(parts) > 1 else (),
            width=width,
            height=height,
            num_inference_steps=self.scheduled_steps,
            guidance_scale=self.cfg,
            sampler=self.sampler,
            seeds=self.tile_seeds(),
            tile=self.tile,
            strength=self.image_strength() if image_prompt else None,
            model=self.model,
            loras=self.loras,
            chaos=self.chaos,
            stop=self.stop,
        )

    def image_strength(self) -> float:
        """An image prompt's img2img strength from --iw: 0 draws almost anew, 3 keeps the picture closely."""
        weight = DEFAULT_IMAGE_WEIGHT if self.image_weight is None else self.image_weight
        return 1.0 - 0.8 * weight / IMAGE_WEIGHT_RANGE[1]

    def with_seed(self, seed: int) -> ImagineRequest:
        return replace(self, seed=seed)

    def __str__(self) -> str:
        parts = [self.prompt]
        if self.negative:
            parts.append("--no " + ", ".join(self.negative))
        parts += [
            f"--ar {self.aspect[0]}:{self.aspect[1]}",
            f"--steps {self.steps}",
            f"--cfg {_format_float(self.cfg)}",
            f"--seed {self.seed}",
            f"--sampler {self.sampler}",
            f"--images {self.images}",
        ]
        if self.tile:
            parts.append("--tile")
        if self.image_weight is not None:
            parts.append(f"--iw {_format_float(self.image_weight)}")
        if self.model:
            parts.append(f"--model {self.model}")
        parts += [f"--lora {name}:{_format_float(weight)}" for name, weight in self.loras]
        if self.chaos:
            parts.append(f"--chaos {self.chaos}")
        if self.stop != STOP_RANGE[1]:
            parts.append(f"--stop {self.stop}")
        if self.quality != 1.0:
            parts.append(f"--q {_format_float(self.quality)}")
        if self.repeat > 1:
            parts.append(f"--repeat {self.repeat}")
        if self.speed is not None:
            parts.append(f"--{self.speed}")
        return " ".join(parts)


def _format_float(value: float) -> str:
    # repr() is the shortest text that reads back to the same float; drop a needless ".0".
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


ASPECT_ALLOWED: Final = f"two whole numbers like 3:2, between 1:{MAX_ASPECT} and {MAX_ASPECT}:1"


def parse_aspect(value: str) -> tuple[int, int]:
    """``"W:H"`` → the ratio in lowest terms. The one check of an aspect ratio (``--ar``, the settings, the
    users' saved defaults); raises ValueError saying what is wrong and what is allowed."""
    match = re.fullmatch(r"(\d{1,6})\s*:\s*(\d{1,6})", value.strip())
    if match is None:
        raise ValueError(f"must be {ASPECT_ALLOWED}, not '{value}'.")
    width, height = int(match.group(1)), int(match.group(2))
    if width == 0 or height == 0 or width > MAX_ASPECT * height or height > MAX_ASPECT * width:
        raise ValueError(f"must be {ASPECT_ALLOWED}; {width}:{height} is outside that.")
    divisor = math.gcd(width, height)
    return width // divisor, height // divisor


def aspect_of(width: int, height: int) -> tuple[int, int]:
    """A picture's aspect ratio in small terms (1920×1080 → 16:9), within 1:4 and 4:1: what an image prompt
    keeps when the prompt gives no --ar, as Midjourney does."""
    ratio = Fraction(width, height).limit_denominator(16)
    ratio = min(max(ratio, Fraction(1, MAX_ASPECT)), Fraction(MAX_ASPECT))
    return ratio.numerator, ratio.denominator


def given_flags(text: str) -> frozenset[str]:
    """The flags a prompt gives (their canonical names); ParamError as ``parse`` for an unknown one."""
    return frozenset(flag.name for flag in _scan(text).flags)


def normalise_words(text: str) -> str:
    """Text as banned words are compared: case-folded (so "Straße" and "STRASSE" match) with single spaces.
    The one normaliser for the banned words, when they are stored and when prompts are checked."""
    return " ".join(text.casefold().split())


def size_for_aspect(aspect: tuple[int, int], native_side: int) -> tuple[int, int]:
    """Map W:H to a width and height with about ``native_side**2`` pixels.

    Sides are multiples of 64 for real checkpoints; a model smaller than 512 px (the embedded one is 64 px)
    uses a proportionally smaller step, never under 8 (the VAE's usual downsampling).
    """
    multiple = max(8, min(64, native_side // 8))
    area = native_side * native_side
    width = math.sqrt(area * aspect[0] / aspect[1])
    height = area / width

    def snap(side: float) -> int:
        return max(multiple, round(side / multiple) * multiple)

    return snap(width), snap(height)


# ---------------------------------------------------------------------------------------------------------
# Scanning

# A flag starts a word: "--", or the em-dash/en-dash phones put in its place, then a name.
_FLAG = re.compile(r"(?<!\S)(?:--|[—–])[-—–]*(?P<name>[A-Za-z][A-Za-z0-9_+]*)(?=\s|=|$)")
_QUOTES: Final = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»"}
_QUOTE_CHARS: Final = "\"'“”‘’«»"


@dataclass
class _Flag:
    name: str  # canonical
    typed: str  # as the user wrote it, for messages
    value: str | None


@dataclass
class _Scan:
    prompt: str
    flags: list[_Flag] = field(default_factory=list)


def _canonical_flag(name: str) -> str | None:
    return _FLAG_ALIASES.get(name.lower())


def _read_quoted(text: str, start: int) -> tuple[str, int] | None:
    """A quoted value at ``start`` (any of the usual straight or curly quotes), or None."""
    if start >= len(text) or text[start] not in _QUOTES:
        return None
    close = text.find(_QUOTES[text[start]], start + 1)
    if close == -1:
        return None
    return text[start + 1 : close], close + 1


def _scan(text: str) -> _Scan:
    pieces: list[str] = []
    flags: list[_Flag] = []
    pos = 0
    while True:
        match = _FLAG.search(text, pos)
        if match is None:
            pieces.append(text[pos:])
            break
        pieces.append(text[pos : match.start()])
        typed = "--" + match.group("name")
        canonical = _canonical_flag(match.group("name"))
        if canonical is None:
            raise ParamError(_unknown_flag_message(typed))
        value, pos = (
            (None, match.end()) if canonical in _SWITCHES else _read_value(text, match.end(), canonical)
        )
        flags.append(_Flag(canonical, typed, value))
    return _Scan(" ".join(" ".join(pieces).split()), flags)


def _read_value(text: str, pos: int, canonical: str) -> tuple[str | None, int]:
    """The value after a flag and the position after it. ``--no`` runs up to the next flag."""
    if pos < len(text) and text[pos] == "=":
        pos += 1
    else:
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if pos >= len(text) or _FLAG.match(text, pos):
        return None, pos
    quoted = _read_quoted(text, pos)
    if quoted is not None:
        return quoted
    if canonical == "no":
        following = _FLAG.search(text, pos)
        end = following.start() if following else len(text)
        return text[pos:end], end
    end = pos
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[pos:end], end


# ---------------------------------------------------------------------------------------------------------
# Values


def _int_in(flag: _Flag, value: str, low: int, high: int) -> int:
    allowed = f"a whole number from {low} to {high}"
    try:
        number = int(value)
    except ValueError:
        raise ParamError(f"{flag.typed} must be {allowed}, not '{value}'.") from None
    if not low <= number <= high:
        raise ParamError(f"{flag.typed} must be {allowed}; you gave {number}.")
    return number


def _float_in(flag: _Flag, value: str, low: float, high: float) -> float:
    allowed = f"a number from {_format_float(low)} to {_format_float(high)}"
    try:
        number = float(value)
    except ValueError:
        raise ParamError(f"{flag.typed} must be {allowed}, not '{value}'.") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ParamError(f"{flag.typed} must be {allowed}; you gave {value}.")
    return number


def _aspect(flag: _Flag, value: str) -> tuple[int, int]:
    try:
        return parse_aspect(value)
    except ValueError as error:
        raise ParamError(f"{flag.typed} {error}") from None


def _sampler(flag: _Flag, value: str) -> str:
    name = SAMPLER_ALIASES.get(value.lower(), value.lower())
    if name in SAMPLERS:
        return name
    message = f"{flag.typed} '{value}' is not a sampler we have. Choose one of: {', '.join(SAMPLERS)}."
    close = difflib.get_close_matches(value.lower(), [*SAMPLERS, *SAMPLER_ALIASES], n=1, cutoff=0.6)
    if close:
        message += f" Did you mean {SAMPLER_ALIASES.get(close[0], close[0])}?"
    raise ParamError(message)


def pick_name(label: str, value: str, names: Collection[str], what: str, listing: str) -> str:
    """``value`` as one of ``names`` (any letter case), or ParamError with the names and a near miss.
    ``label``: what the user typed it into (``--model``); ``what``: "model", "LoRA"."""
    by_folded = {name.casefold(): name for name in names}
    if value.casefold() in by_folded:
        return by_folded[value.casefold()]
    if not names:
        raise ParamError(f"{label} '{value}': this bot has no {what}s. {listing}")
    message = f"{label} '{value}' is not a {what} this bot has. Choose one of: {', '.join(names)}."
    close = difflib.get_close_matches(value.casefold(), list(by_folded), n=1, cutoff=0.6)
    if close:
        message += f" Did you mean {by_folded[close[0]]}?"
    raise ParamError(f"{message} {listing}")


MODELS_LISTED: Final = "/models lists them with their defaults."


def _lora(flag: _Flag, value: str, names: Collection[str] | None) -> tuple[str, float]:
    name, colon, weight_text = value.rpartition(":")
    if not colon:
        name, weight_text = value, ""
    if not name.strip():
        raise ParamError(f"{flag.typed} needs a name: {_EXPECTS['lora']}.")
    weight = _float_in(flag, weight_text, *LORA_WEIGHT_RANGE) if weight_text else DEFAULT_LORA_WEIGHT
    if names is not None:
        name = pick_name(flag.typed, name.strip(), sorted(names), "LoRA", "/models lists them.")
    return name.strip(), weight


def _quality(flag: _Flag, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if number not in QUALITIES:
        raise ParamError(f"{flag.typed} must be {_EXPECTS['quality']}, not '{value}'.")
    return number


def _negative_terms(value: str) -> list[str]:
    terms = (term.strip().strip(_QUOTE_CHARS).strip() for term in value.split(","))
    return [" ".join(term.split()) for term in terms if term.strip(_QUOTE_CHARS).strip()]


# Every spelling we accept -> the canonical flag.
_FLAG_ALIASES: Final[dict[str, str]] = {
    "steps": "steps",
    "cfg": "cfg",
    "guidance": "cfg",
    "seed": "seed",
    "no": "no",
    "ar": "aspect",
    "aspect": "aspect",
    "sampler": "sampler",
    "n": "images",
    "images": "images",
    "tile": "tile",
    "iw": "iw",
    "model": "model",
    "lora": "lora",
    "chaos": "chaos",
    "c": "chaos",
    "stop": "stop",
    "q": "quality",
    "quality": "quality",
    "repeat": "repeat",
    "r": "repeat",
    "fast": "fast",
    "relax": "relax",
}
# Flags that take no value.
_SWITCHES: Final = frozenset({"tile", "fast", "relax"})

_EXPECTS: Final[dict[str, str]] = {
    "steps": f"a whole number from {STEPS_RANGE[0]} to {STEPS_RANGE[1]}",
    "cfg": f"a number from {CFG_RANGE[0]:g} to {CFG_RANGE[1]:g}",
    "seed": f"a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}",
    "no": "what to keep out of the picture, like --no text, blur",
    "aspect": "a ratio like 3:2",
    "sampler": "one of " + ", ".join(SAMPLERS),
    "images": f"a whole number from {IMAGES_RANGE[0]} to {IMAGES_RANGE[1]}",
    "iw": f"a number from {IMAGE_WEIGHT_RANGE[0]:g} to {IMAGE_WEIGHT_RANGE[1]:g}",
    "model": "the name of one of the bot's models (/models lists them)",
    "lora": f"a LoRA's name and a weight from {LORA_WEIGHT_RANGE[0]:g} to {LORA_WEIGHT_RANGE[1]:g}, "
    "like --lora pixel_art:0.8",
    "chaos": f"a whole number from {CHAOS_RANGE[0]} to {CHAOS_RANGE[1]}",
    "stop": f"a whole number from {STOP_RANGE[0]} to {STOP_RANGE[1]} (a percentage of the steps)",
    "quality": "one of .25, .5 or 1 (the fraction of the steps to run)",
    "repeat": f"a whole number from {REPEAT_RANGE[0]} to {REPEAT_RANGE[1]}",
}


def is_flag_name(name: str) -> bool:
    """Whether ``--name`` is one of our flags (any spelling): a /prefer shortcut may not take its name."""
    return name.lower() in _FLAG_ALIASES


def without_flags(text: str, names: Collection[str]) -> str:
    """``text`` less the flags ``names`` (canonical) and their values: a /prefer suffix loses the flags its
    prompt gives itself. ParamError as ``parse`` for an unknown flag."""
    pieces: list[str] = []
    pos = 0
    while (match := _FLAG.search(text, pos)) is not None:
        canonical = _canonical_flag(match.group("name"))
        if canonical is None:
            raise ParamError(_unknown_flag_message("--" + match.group("name")))
        end = match.end() if canonical in _SWITCHES else _read_value(text, match.end(), canonical)[1]
        pieces.append(text[pos : match.start()] if canonical in names else text[pos:end])
        pos = end
    pieces.append(text[pos:])
    return " ".join(" ".join(pieces).split())


def _unknown_flag_message(typed: str) -> str:
    known = sorted({"--" + name for name in _FLAG_ALIASES})
    message = f"Unknown flag {typed}. Flags are: {', '.join(known)}."
    close = difflib.get_close_matches(typed.lower(), known, n=1, cutoff=0.6)
    if close:
        message += f" Did you mean {close[0]}?"
    return message


def parse(
    text: str,
    defaults: RequestDefaults | None = None,
    *,
    rng: random.Random | None = None,
    choices: Choices | None = None,
    later_wins: bool = False,
) -> ImagineRequest:
    """Parse the text of /imagine's ``prompt`` option. Raises ParamError (only) for bad input.

    ``choices``: the models and LoRAs the prompt may name; a prompt's ``--model`` brings that model's
    defaults in place of ``defaults`` (whose ``model`` is the one used without ``--model``).
    ``later_wins``: a flag given twice takes its later value, as Midjourney does when a prompt is edited
    (Remix, Custom Zoom: the text comes with every flag filled in, and the user appends theirs)."""
    defaults = defaults or RequestDefaults()
    scan = _scan(text)
    if later_wins:
        scan = _Scan(scan.prompt, _latest(scan.flags))
    model = _model(scan, defaults.model, choices)
    if choices is not None and model in choices.defaults:
        defaults = choices.defaults[model]
    request = ImagineRequest(
        prompt=scan.prompt,
        seed=-1,
        steps=defaults.steps,
        cfg=defaults.cfg,
        aspect=defaults.aspect,
        sampler=defaults.sampler,
        images=defaults.images,
        model=model,
    )
    given: dict[str, str] = {}
    negative: list[str] = []
    loras: list[tuple[str, float]] = []
    for flag in scan.flags:
        if flag.name in _SWITCHES:
            if flag.name in given:
                raise ParamError(f"{flag.typed} was given twice; once is enough.")
            given[flag.name] = flag.typed
            if flag.name == "tile":
                request = replace(request, tile=True)
            elif request.speed is not None:
                raise ParamError(f"{given[request.speed]} and {flag.typed} contradict each other; give one.")
            else:
                request = replace(request, speed=Speed(flag.name))
            continue
        if flag.value is None or not flag.value.strip():
            raise ParamError(f"{flag.typed} needs a value: {_EXPECTS[flag.name]}.")
        value = flag.value.strip()
        if flag.name == "no":
            if prompt_parts.SEPARATOR in value:
                raise ParamError(
                    f"{flag.typed} takes plain words, like --no fog, rain. To weigh what to keep out, make "
                    "it a part of the prompt with a negative weight: a castle:: fog::-0.5."
                )
            negative += [term for term in _negative_terms(value) if term not in negative]
            continue
        if flag.name == "lora":
            loras.append(_lora(flag, value, None if choices is None else choices.loras))
            continue
        if flag.name in given:
            raise ParamError(f"{flag.typed} was given twice (as {given[flag.name]} before); give it once.")
        given[flag.name] = flag.typed
        match flag.name:
            case "steps":
                request = replace(request, steps=_int_in(flag, value, *STEPS_RANGE))
            case "cfg":
                request = replace(request, cfg=_float_in(flag, value, *CFG_RANGE))
            case "seed":
                request = replace(request, seed=_int_in(flag, value, *SEED_RANGE))
            case "aspect":
                request = replace(request, aspect=_aspect(flag, value))
            case "sampler":
                request = replace(request, sampler=_sampler(flag, value))
            case "images":
                request = replace(request, images=_int_in(flag, value, *IMAGES_RANGE))
            case "iw":
                request = replace(request, image_weight=_float_in(flag, value, *IMAGE_WEIGHT_RANGE))
            case "chaos":
                request = replace(request, chaos=_int_in(flag, value, *CHAOS_RANGE))
            case "stop":
                request = replace(request, stop=_int_in(flag, value, *STOP_RANGE))
            case "quality":
                request = replace(request, quality=_quality(flag, value))
            case "repeat":
                request = replace(request, repeat=_int_in(flag, value, *REPEAT_RANGE))
    if not scan.prompt:
        raise ParamError("The prompt is empty: describe the picture before or after the flags.")
    request = replace(request, prompt=_prompt_of_parts(scan.prompt))
    if "seed" not in given:
        request = replace(request, seed=(rng or random.SystemRandom()).randint(*SEED_RANGE))
    return replace(request, negative=tuple(negative), cfg=float(request.cfg), loras=_checked_loras(loras))


def _prompt_of_parts(prompt: str) -> str:
    """The prompt's weighted parts, written back canonically. A word glued to '::' is no flag ("--chaos::"),
    but one part is written without its '::', and the word would read as a flag in the footer."""
    canonical = prompt_parts.canonical(prompt_parts.split(prompt))
    flag = _FLAG.search(canonical)
    if flag is not None:
        raise ParamError(
            f"'{flag.group()}' next to '::' looks like a flag. Flags go after a space, outside the parts: "
            f"{prompt_parts.EXAMPLE} --chaos 20."
        )
    return canonical


def _latest(flags: list[_Flag]) -> list[_Flag]:
    """Each flag's last value (each LoRA's last weight; every --no term counts)."""

    def key(flag: _Flag) -> object:
        if flag.name == "lora" and flag.value:
            return ("lora", flag.value.rpartition(":")[0].strip().casefold() or flag.value.casefold())
        if flag.name in (Speed.FAST, Speed.RELAX):
            return "speed"  # --fast after --relax: the later one wins, as for any flag
        return flag.name if flag.name != "no" else id(flag)

    last = {key(flag): flag for flag in flags}
    return [flag for flag in flags if last[key(flag)] is flag]


def _model(scan: _Scan, default: str, choices: Choices | None) -> str:
    """The model a prompt asks for (read first: the other flags' defaults are that model's)."""
    flags = [flag for flag in scan.flags if flag.name == "model"]
    if not flags:
        return default
    if len(flags) > 1:
        raise ParamError(f"{flags[1].typed} was given twice (as {flags[0].typed} before); give it once.")
    flag = flags[0]
    if flag.value is None or not flag.value.strip():
        raise ParamError(f"{flag.typed} needs a value: {_EXPECTS['model']}.")
    value = flag.value.strip()
    if choices is None:
        return value
    return pick_name(flag.typed, value, list(choices.defaults), "model", MODELS_LISTED)


def _checked_loras(loras: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    names = [name.casefold() for name, _ in loras]
    twice = next((name for name, _ in loras if names.count(name.casefold()) > 1), None)
    if twice is not None:
        raise ParamError(f"--lora {twice} was given twice; give each LoRA once, with one weight.")
    if len(loras) > MAX_LORAS:
        raise ParamError(f"A prompt may use up to {MAX_LORAS} LoRAs; this one has {len(loras)}.")
    return tuple(loras)
