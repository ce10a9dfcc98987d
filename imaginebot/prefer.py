"""/prefer: a student's own ``--name`` shortcuts and the suffix added to every prompt (Midjourney's custom
options, ``/prefer option set`` and ``/prefer suffix``).

    /prefer option set mine --ar 3:2 --steps 25 watercolor      then      /imagine a fox --mine

A shortcut stands for its saved text wherever it is typed, inside permutations too (``{--mine, --other}``);
its name may not be one of the bot's flags or their aliases. The suffix goes at the end of every /imagine,
less the flags the prompt gives itself: what the student types wins over what they saved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from imaginebot.errors import ParamError
from imaginebot.params import given_flags, is_flag_name, without_flags

MAX_OPTIONS: Final = 25  # shortcuts per student
MAX_VALUE_CHARS: Final = 500  # of a shortcut's text, and of the suffix
NAME_CHARS: Final = 32
_NAME: Final = re.compile(rf"[a-z][a-z0-9_]{{0,{NAME_CHARS - 1}}}")
NAME_RULE: Final = (
    f"a shortcut's name is 1 to {NAME_CHARS} letters, digits or _, starting with a letter, like mystyle"
)
# A shortcut where a flag could stand: after a space, a "{" or a "," (inside permutations); "--" or the dashes
# phones type. (The flag scanner in params only looks after spaces; braces are expanded after shortcuts.)
_SHORTCUT: Final = re.compile(r"(?<![^\s{,])(?:--|[—–])[-—–]*(?P<name>[A-Za-z][A-Za-z0-9_]*)(?=[\s,{}]|$)")
# Flags the prompt and the suffix may both give: they add up rather than clash.
_ADDING_UP: Final = frozenset({"no", "lora"})


def check_name(name: str) -> str:
    """A shortcut's name as stored (lower case, no leading dashes), or ParamError saying what is allowed."""
    cleaned = name.strip().lstrip("-—–").lower()
    if not _NAME.fullmatch(cleaned):
        raise ParamError(f"'{name.strip()}' can't be a shortcut: {NAME_RULE}.")
    if is_flag_name(cleaned):
        raise ParamError(
            f"--{cleaned} is already one of the bot's flags; give your shortcut another name "
            "(the README's prompt-language table lists the flags)."
        )
    return cleaned


def check_value(what: str, value: str) -> str:
    """A shortcut's text or the suffix, trimmed; ParamError when it is too long."""
    value = " ".join(value.split())
    if len(value) > MAX_VALUE_CHARS:
        raise ParamError(f"{what} may be up to {MAX_VALUE_CHARS} characters; this one has {len(value)}.")
    return value


def expand_shortcuts(text: str, options: Mapping[str, str]) -> str:
    """``text`` with each of the user's ``--name`` shortcuts replaced by its text (once: a shortcut's text is
    not searched for more shortcuts). A name that has become a flag since it was saved is the flag."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("name").lower()
        if name in options and not is_flag_name(name):
            return options[name]
        return match.group(0)

    return _SHORTCUT.sub(replace, text) if options else text


def with_suffix(prompt: str, suffix: str) -> str:
    """``prompt`` with the suffix at its end, less the flags the prompt gives itself (``--no`` and
    ``--lora`` add up). ParamError for an unknown flag in either."""
    if not suffix.strip():
        return prompt
    own = given_flags(prompt) - _ADDING_UP
    return f"{prompt} {without_flags(suffix, own)}".strip()
