"""From /imagine's text to its jobs: permutations, --repeat, --relax/--fast, /prefer shortcuts and suffix.
Rules in tables, plus properties: no input raises anything but ParamError, and a text makes as many prompts
as the product of its braces' options."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from imaginebot.errors import ParamError
from imaginebot.params import ImagineRequest, RequestDefaults, Speed, is_flag_name, parse, without_flags
from imaginebot.permutations import MAX_DEPTH, permutations
from imaginebot.prefer import check_name, expand_shortcuts, with_suffix
from imaginebot.prompting import compose, speed_of, split_repeats

DEFAULTS = RequestDefaults(steps=30, cfg=7.0, sampler="euler_a", images=4, aspect=(1, 1))


def prompts(text: str) -> list[str]:
    return permutations(text).prompts()


# -- permutations ----------------------------------------------------------------------------------------

EXPANDED = [
    ("a bird", ["a bird"]),
    ("a {red, blue} bird", ["a red bird", "a blue bird"]),
    ("a {red,blue,  green } bird", ["a red bird", "a blue bird", "a green bird"]),
    (
        "a {red, blue} bird --ar {1:1, 2:3}",
        ["a red bird --ar 1:1", "a red bird --ar 2:3", "a blue bird --ar 1:1", "a blue bird --ar 2:3"],
    ),
    ("a {red, {dark, light} blue} bird", ["a red bird", "a dark blue bird", "a light blue bird"]),
    ("{a, b}{c, d}", ["ac", "ad", "bc", "bd"]),
    ("a {red\\, white, blue} flag", ["a red, white flag", "a blue flag"]),
    ("red, white and blue", ["red, white and blue"]),  # outside braces a comma is a comma
    ("a \\{literal\\} brace", ["a {literal} brace"]),
    ("a {cat} here", ["a cat here"]),  # one option
    ("a {big, } dog", ["a big dog", "a  dog"]),  # an empty option: nothing (spaces are the parser's)
    ("{--tile, --seed 3} x", ["--tile x", "--seed 3 x"]),
    ("a path C:\\temp", ["a path C:\\temp"]),  # a backslash before anything else stays
]


@pytest.mark.parametrize(("text", "expected"), EXPANDED)
def test_expansion(text: str, expected: list[str]) -> None:
    found = permutations(text)
    assert found.prompts() == expected and found.count == len(expected)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a {red, blue bird", "A { is never closed (at character 3)"),
        ("a red} bird", "A } closes no { (at character 6)"),
        ("a {red}} bird", "closes no {"),
        ("{" * (MAX_DEPTH + 1) + "x" + "}" * (MAX_DEPTH + 1), f"up to {MAX_DEPTH} braces deep"),
    ],
)
def test_bad_braces_are_named(text: str, fragment: str) -> None:
    with pytest.raises(
        ParamError, match=fragment.replace("{", r"\{").replace("(", r"\(").replace(")", r"\)")
    ):
        permutations(text)


# A brace tree drawn by hypothesis, with the number of prompts it must make.
LEAF = st.text(alphabet="abc xyz:-", max_size=4)


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> tuple[str, int]:
    pieces, count = [], 1
    for _ in range(draw(st.integers(0, 3))):
        if depth < 3 and draw(st.booleans()):
            options = [draw(trees(depth + 1)) for _ in range(draw(st.integers(1, 3)))]
            pieces.append("{" + ",".join(text for text, _ in options) + "}")
            count *= sum(n for _, n in options)
        else:
            pieces.append(draw(LEAF))
    return "".join(pieces), count


@given(trees())
def test_the_count_is_the_product_of_the_options(tree: tuple[str, int]) -> None:
    text, count = tree
    found = permutations(text)
    assert found.count == count
    made = found.prompts()
    assert len(made) == count and not any(c in "".join(made) for c in "{},")


@given(st.lists(st.sampled_from(["{", "}", ",", "\\", "\\,", " ", "a", "--ar", "1:1", "é"]), max_size=40))
@example(["{"] * 200 + ["}"] * 200)
def test_any_text_expands_or_is_a_param_error(parts: list[str]) -> None:
    text = "".join(parts)
    try:
        found = permutations(text)
    except ParamError as error:
        assert str(error)
        return
    if found.count <= 10_000:
        assert len(found.prompts()) == found.count


def test_counting_does_not_expand() -> None:
    assert permutations("{a,b}" * 40).count == 2**40  # counted in microseconds, never listed


# -- the new flags -------------------------------------------------------------------------------------


def test_repeat_relax_and_fast() -> None:
    rng = random.Random(0)
    request = parse("an owl --repeat 3 --relax --seed 9", DEFAULTS, rng=rng)
    assert (request.repeat, request.speed) == (3, Speed.RELAX)
    assert parse("an owl --r 10 —fast", DEFAULTS).repeat == 10
    assert parse("an owl --fast", DEFAULTS).speed is Speed.FAST
    assert parse("an owl", DEFAULTS, rng=rng).speed is None and parse("an owl", DEFAULTS).repeat == 1
    assert str(request).endswith("--seed 9 --sampler euler_a --images 4 --repeat 3 --relax")
    assert parse(str(request), DEFAULTS) == request
    # an edited prompt (Remix): a later --fast wins over --relax, as any flag's later value
    assert parse("an owl --relax --fast", DEFAULTS, later_wins=True).speed is Speed.FAST
    assert is_flag_name("r") and is_flag_name("RELAX") and not is_flag_name("mine")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("an owl --repeat 0", "--repeat must be a whole number from 1 to 10; you gave 0"),
        ("an owl --r 11", "--r must be a whole number from 1 to 10; you gave 11"),
        ("an owl --repeat", "--repeat needs a value: a whole number from 1 to 10"),
        ("an owl --relax --fast", "--relax and --fast contradict each other"),
        ("an owl --relax --relax", "--relax was given twice"),
        ("an owl --relx", "Did you mean --relax?"),
        ("an owl --repaet 2", "Did you mean --repeat?"),
    ],
)
def test_new_flags_refused_with_what_is_allowed(text: str, fragment: str) -> None:
    with pytest.raises(ParamError, match=fragment.replace("?", r"\?")):
        parse(text, DEFAULTS)


FLAGISH = st.sampled_from(
    ["--repeat", "--r", "--relax", "--fast", "—r", "{", "}", ",", "\\,", " ", "3", "11", "1:1", "x", "--ar"]
)


@given(st.lists(st.one_of(FLAGISH, st.text(max_size=4)), max_size=14).map("".join))
def test_any_text_with_the_new_flags_composes_and_parses_or_is_a_param_error(text: str) -> None:
    try:
        texts = compose(text, {"mine": "--relax {a, b}"}, "--fast", 10)
        requests = [parse(t, DEFAULTS, rng=random.Random(0)) for t in texts]
    except ParamError as error:
        assert str(error)
        return
    for request in requests:
        assert parse(str(request), DEFAULTS) == request


# -- --repeat --------------------------------------------------------------------------------------------


def test_repeat_makes_jobs_with_new_seeds() -> None:
    seeds = itertools.count(100)
    fresh = parse("an owl --repeat 3 --images 2", DEFAULTS, rng=random.Random(1))
    jobs = split_repeats([(fresh, False)], lambda: next(seeds), 10)
    assert [job.seed for job in jobs] == [fresh.seed, 100, 101]
    assert all(job.repeat == 1 and "--repeat" not in str(job) for job in jobs)
    given_seed = parse("an owl --repeat 3 --images 2 --seed 7", DEFAULTS)
    # a given seed: the copies take the seeds after the grid's, so the set is reproducible and tiles differ
    assert [job.tile_seeds() for job in split_repeats([(given_seed, True)], lambda: 0, 10)] == [
        (7, 8),
        (9, 10),
        (11, 12),
    ]
    with pytest.raises(ParamError, match=r"makes 12 jobs \(2 prompts from its \{ \} options with --repeat\)"):
        split_repeats([(given_seed.with_seed(1), True), (replace_repeat(given_seed, 9), True)], lambda: 0, 10)


def replace_repeat(request: ImagineRequest, repeat: int) -> ImagineRequest:
    return parse(str(request).replace("--repeat 3", f"--repeat {repeat}"), DEFAULTS)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(1, 10))
def test_jobs_are_the_sum_of_the_repeats_or_refused(repeats: list[int], limit: int) -> None:
    requests = [(parse(f"p{i} --repeat {r}", DEFAULTS), False) for i, r in enumerate(repeats)]
    try:
        jobs = split_repeats(requests, lambda: 1, limit)
    except ParamError as error:
        assert sum(repeats) > limit and f"at most {limit}" in str(error)
        return
    assert len(jobs) == sum(repeats) <= limit


# -- /prefer ---------------------------------------------------------------------------------------------


def test_shortcut_names() -> None:
    assert check_name(" --MyStyle ") == "mystyle" and check_name("—neon_2") == "neon_2"
    for flag in ("ar", "AR", "aspect", "no", "r", "repeat", "relax", "fast", "seed", "tile"):
        with pytest.raises(ParamError, match="already one of the bot's flags"):
            check_name(flag)
    for bad in ("", "2fast", "my style", "a-b", "x" * 33, "naïve"):
        with pytest.raises(ParamError, match="can't be a shortcut"):
            check_name(bad)


def test_shortcuts_expand_where_a_flag_could_stand() -> None:
    mine = {"mine": "--ar 3:2 watercolor", "neon": "neon lights"}
    assert expand_shortcuts("a fox --mine", mine) == "a fox --ar 3:2 watercolor"
    assert expand_shortcuts("a fox —MINE", mine) == "a fox --ar 3:2 watercolor"
    assert expand_shortcuts("{--mine, --neon} fox", mine) == "{--ar 3:2 watercolor, neon lights} fox"
    assert expand_shortcuts("a fox--mine --mined --ar 1:1", mine) == "a fox--mine --mined --ar 1:1"
    assert expand_shortcuts("x --other", {"other": "--mine"}) == "x --mine"  # once, not again


def test_the_suffix_loses_the_flags_the_prompt_gives() -> None:
    suffix = "highly detailed --ar 3:2 --steps 20 --no blur"
    assert with_suffix("a fox", suffix) == "a fox highly detailed --ar 3:2 --steps 20 --no blur"
    assert with_suffix("a fox --AR 1:1 --no text", suffix) == (
        "a fox --AR 1:1 --no text highly detailed --steps 20 --no blur"  # --no adds up
    )
    assert with_suffix("a fox", "  ") == "a fox"
    assert without_flags("a --tile b --seed 3 c", {"tile", "seed"}) == "a b c"


def test_compose_counts_every_prompt_with_every_suffix() -> None:
    texts = compose("a {red, blue} --mine", {"mine": "{fox, owl}"}, "--ar {1:1, 2:1}", 10)
    assert len(texts) == 8 and texts[0] == "a red fox --ar 1:1" and texts[-1] == "a blue owl --ar 2:1"
    with pytest.raises(ParamError, match=r"makes 16 jobs .*at most 10"):
        compose("{a,b}{c,d}{e,f}{g,h}", {}, "", 10)
    assert len(compose("{a,b}", {}, "{c,d}", 4)) == 4


def test_speed_of_a_canonical_prompt() -> None:
    assert speed_of("an owl --seed 1 --relax") is Speed.RELAX
    assert speed_of("an owl --fast") is Speed.FAST and speed_of("an owl") is None
