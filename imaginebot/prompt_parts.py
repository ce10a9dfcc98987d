"""Multi-prompts: a prompt in weighted parts, as Midjourney writes them.

    a castle:: in the clouds::2 fog::-0.5

``::`` ends a part; a number right after it (no space between) is that part's weight, 1 when none is
given; decimals and negative weights are allowed. Weights are normalised as Midjourney does (``hot:: dog``,
``hot::1 dog::1`` and ``hot::2 dog::2`` are the same prompt): each is divided by the sum of the positive
ones. The weights must add up to more than 0. A negative part pushes the picture away from it: ``fog::-0.5``
next to parts adding up to 1 does what ``--no fog`` does (``imaginebot.engine.planning`` says how the
engine combines them).

A prompt without ``::`` is one part: exactly the prompt as it always was. The prompt parser
(``imaginebot.params``) calls ``split`` on the prompt once its flags are taken out, and writes the parts
back with ``canonical``. Written by hand for the same reasons as the flag scanner: a student's near misses
get a sentence naming the part.
"""

from __future__ import annotations

import math
import re
from typing import Final

from imaginebot.errors import ParamError

Part = tuple[str, float]  # (text, weight as written)

MAX_PARTS: Final = 6  # each part is one more UNet row per image: six already cost 3.5 plain grids
WEIGHT_RANGE: Final = (-100.0, 100.0)  # normalised, only ratios matter: 100:1 is plenty
SEPARATOR: Final = "::"
# What starts a weight right after "::": a digit, a sign or a decimal point.
_WEIGHT_START = re.compile(r"[0-9+\-.]")
_TOKEN = re.compile(r"\S+")
EXAMPLE: Final = "a castle:: in the clouds::2 fog::-0.5"


def split(text: str) -> tuple[Part, ...]:
    """The parts of a prompt (its flags already taken out), with the weights as written. Raises ParamError
    for an empty part, a weight that is no number or out of range, too many parts, or weights that add up to
    0 or less."""
    segments = text.split(SEPARATOR)
    if len(segments) == 1:
        return ((_words(text), 1.0),)
    parts: list[Part] = []
    current = segments[0]
    for segment in segments[1:]:
        weight, rest = _leading_weight(segment, len(parts) + 1)
        parts.append((_checked_text(current, len(parts) + 1), 1.0 if weight is None else weight))
        current = rest
    if _words(current):  # the last part's "::" may be left out
        parts.append((_checked_text(current, len(parts) + 1), 1.0))
    if len(parts) > MAX_PARTS:
        raise ParamError(
            f"A prompt may have up to {MAX_PARTS} parts separated by '::'; this one has {len(parts)}."
        )
    _check_sum(parts)
    return tuple(parts)


def canonical(parts: tuple[Part, ...]) -> str:
    """The parts as prompt text that ``split`` reads back to the same parts: one part is its text alone
    (its weight, normalised, is 1); several are each written with their weight."""
    if len(parts) == 1:
        return parts[0][0]
    return " ".join(f"{text}{SEPARATOR}{_format_weight(weight)}" for text, weight in parts)


def normalised(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """Each weight divided by the sum of the positive ones (which ``split`` made sure is above 0)."""
    positive = math.fsum(weight for _, weight in parts if weight > 0)
    return tuple((text, weight / positive) for text, weight in parts)


def _words(text: str) -> str:
    return " ".join(text.split())


def _checked_text(text: str, number: int) -> str:
    words = _words(text)
    if not words:
        raise ParamError(
            f"Part {number} of the prompt is empty: write words between the '::' marks, like '{EXAMPLE}'."
        )
    if words.startswith(":") or words.endswith(":"):
        raise ParamError(
            f"Part {number} of the prompt, '{words}', touches '::' with another ':'. Parts are separated by "
            f"exactly two colons, with the weight right after them, like '{EXAMPLE}'."
        )
    return words


def _leading_weight(segment: str, number: int) -> tuple[float | None, str]:
    """The weight of part ``number`` at the start of the text after its "::", and the text after it."""
    if not segment or not _WEIGHT_START.match(segment):
        return None, segment  # "a:: b": no weight, the next part begins
    token = _TOKEN.match(segment)
    assert token is not None
    allowed = (
        f"a number from {_format_weight(WEIGHT_RANGE[0])} to {_format_weight(WEIGHT_RANGE[1])} right after "
        f"the '::', like ::2 or ::-0.5 (put a space after '::' to start the next part with a number)"
    )
    try:
        weight = float(token.group())
    except ValueError:
        raise ParamError(f"'::{token.group()}': the weight of part {number} must be {allowed}.") from None
    if not math.isfinite(weight) or not WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]:
        raise ParamError(f"'::{token.group()}': the weight of part {number} must be {allowed}.")
    if weight == 0:
        raise ParamError(
            f"'::{token.group()}': a weight of 0 leaves part {number} out; remove it, or give it a weight "
            "(a negative one keeps it out of the picture)."
        )
    return weight, segment[token.end() :]


def _check_sum(parts: list[Part]) -> None:
    total = math.fsum(weight for _, weight in parts)
    if total <= 0:
        weights = " + ".join(_format_weight(weight) for _, weight in parts)
        raise ParamError(
            f"The parts' weights add up to {_format_weight(total)} ({weights}); they must add up to more "
            "than 0. A negative weight keeps a part out of the picture: try fog::-0.5 next to parts at 1."
        )


def _format_weight(value: float) -> str:
    # repr() is the shortest text that reads back to the same float; drop a needless ".0".
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
