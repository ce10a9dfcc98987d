"""Midjourney's permutation prompts: ``a {red, blue} bird --ar {1:1, 2:3}`` is four prompts, each its own job.

Options are separated by commas inside braces; braces nest (``a {red, {dark, light} blue} bird`` is three
prompts) and may stand anywhere, flags' values included. ``\\,`` is a comma that separates nothing, and
``\\{`` and ``\\}`` are braces that group nothing. Expansion happens on the text, before a request exists:
each prompt it makes is then parsed as if the user had typed it.

Written by hand rather than with ``braceexpand`` (bash's rules): Midjourney trims the spaces around each
option (``{red, blue}`` gives "blue", not " blue"), takes ``{red}`` as one option and knows no ``{1..3}``
ranges; and the number of prompts must be known before any is made, so that ``{a,b}`` twenty times over is
refused at once instead of being expanded to a million prompts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from imaginebot.errors import ParamError

MAX_DEPTH: Final = 5  # braces inside braces inside…: more is a typo, and a bound keeps recursion safe
_ESCAPES: Final = {",": ",", "{": "{", "}": "}"}


@dataclass(frozen=True)
class _Group:
    """``{a, b, c}``: one of its options, each a sequence of pieces."""

    options: tuple[tuple[_Piece, ...], ...]


_Piece = str | _Group


@dataclass(frozen=True)
class Permutations:
    """A text's permutations: how many prompts it makes (``count``), and the prompts (``prompts()``)."""

    pieces: tuple[_Piece, ...]

    @property
    def count(self) -> int:
        return _count(self.pieces)

    def prompts(self) -> list[str]:
        """Every prompt, the first brace's options varying slowest (as Midjourney lists them)."""
        return list(_expand(self.pieces))


def permutations(text: str) -> Permutations:
    """Read ``text``'s braces; ParamError for a brace left open or closed twice, or nested too deep."""
    pieces, end = _sequence(text, 0, depth=0)
    if end < len(text):  # only a "}" stops the top level
        raise ParamError(
            f"A }} closes no {{ (at character {end + 1}): permutations are written {{red, blue}}. "
            "Write \\} for a brace of your own."
        )
    return Permutations(pieces)


def _sequence(text: str, pos: int, depth: int) -> tuple[tuple[_Piece, ...], int]:
    """Pieces from ``pos`` up to a ``}`` (or a ``,`` inside braces) or the end; the position it stopped at."""
    pieces: list[_Piece] = []
    literal: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in _ESCAPES:
            literal.append(_ESCAPES[text[pos + 1]])
            pos += 2
            continue
        if char == "}" or (char == "," and depth > 0):
            break
        if char == "{":
            if depth + 1 > MAX_DEPTH:
                raise ParamError(
                    f"Permutations nest up to {MAX_DEPTH} braces deep; this prompt goes deeper "
                    f"(at character {pos + 1})."
                )
            if literal:
                pieces.append("".join(literal))
                literal = []
            group, pos = _group(text, pos, depth + 1)
            pieces.append(group)
            continue
        literal.append(char)
        pos += 1
    if literal:
        pieces.append("".join(literal))
    return tuple(pieces), pos


def _group(text: str, start: int, depth: int) -> tuple[_Group, int]:
    options: list[tuple[_Piece, ...]] = []
    pos = start + 1
    while True:
        option, pos = _sequence(text, pos, depth)
        options.append(_trimmed(option))
        if pos >= len(text):
            raise ParamError(
                f"A {{ is never closed (at character {start + 1}): permutations are written "
                "{red, blue}. Write \\{ for a brace of your own."
            )
        if text[pos] == "}":
            return _Group(tuple(options)), pos + 1
        pos += 1  # a comma: the next option


def _trimmed(option: tuple[_Piece, ...]) -> tuple[_Piece, ...]:
    """An option without the spaces around it (``{red, blue}``: "blue")."""
    pieces = list(option)
    if pieces and isinstance(pieces[0], str):
        pieces[0] = pieces[0].lstrip()
    if pieces and isinstance(pieces[-1], str):
        pieces[-1] = pieces[-1].rstrip()
    return tuple(piece for piece in pieces if piece != "")


def _count(pieces: tuple[_Piece, ...]) -> int:
    return math.prod(
        sum(_count(option) for option in piece.options) for piece in pieces if isinstance(piece, _Group)
    )


def _expand(pieces: tuple[_Piece, ...]) -> Iterator[str]:
    choices = [
        [piece] if isinstance(piece, str) else [text for option in piece.options for text in _expand(option)]
        for piece in pieces
    ]
    for combination in itertools.product(*choices):
        yield "".join(combination)
