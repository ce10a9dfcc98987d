"""Multi-prompts (``::`` weights), --chaos, --stop and --q in the prompt language: rules in tables, and the
properties the parser keeps (canonical text reads back to itself; no input raises anything but ParamError)."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from imaginebot import prompt_parts
from imaginebot.engine.api import SAMPLERS
from imaginebot.errors import ParamError
from imaginebot.params import ImagineRequest, RequestDefaults, parse

DEFAULTS = RequestDefaults(steps=30, cfg=7.0, sampler="euler_a", images=4, aspect=(1, 1))


def p(text: str) -> ImagineRequest:
    return parse(text, DEFAULTS, rng=random.Random(0))


# (typed prompt, its parts with the weights as written)
PARTS = [
    ("a castle", (("a castle", 1.0),)),
    ("a castle:: in the clouds", (("a castle", 1.0), ("in the clouds", 1.0))),
    ("a castle:: in the clouds::2 fog::-0.5", (("a castle", 1.0), ("in the clouds", 2.0), ("fog", -0.5))),
    ("hot::1.5 dog::.5", (("hot", 1.5), ("dog", 0.5))),
    ("hot::+2 dog", (("hot", 2.0), ("dog", 1.0))),
    ("hot  ::  dog::", (("hot", 1.0), ("dog", 1.0))),  # a last "::" is allowed
    ("space:: 2 ships", (("space", 1.0), ("2 ships", 1.0))),  # a space after "::": no weight
    ("a castle::", (("a castle", 1.0),)),
    ("a ratio of 3:2 :: fog::-0.25", (("a ratio of 3:2", 1.0), ("fog", -0.25))),
    ("a:: b --ar 3:2 --seed 3 c::2", (("a", 1.0), ("b c", 2.0))),  # flags anywhere, as always
]


@pytest.mark.parametrize(("text", "parts"), PARTS)
def test_parts_and_their_weights(text: str, parts: tuple[tuple[str, float], ...]) -> None:
    request = p(text)
    assert request.parts == parts
    assert p(str(request)) == request


def test_the_canonical_prompt_writes_every_weight() -> None:
    request = p("a castle:: in the clouds::2 fog::-0.5 --seed 9 --chaos 40 --stop 80 --q .5")
    assert str(request) == (
        "a castle::1 in the clouds::2 fog::-0.5 --ar 1:1 --steps 30 --cfg 7 --seed 9 --sampler euler_a "
        "--images 4 --chaos 40 --stop 80 --q 0.5"
    )
    # one part: its weight, normalised, is 1
    assert str(p("a castle::3 --seed 1")).startswith("a castle --ar")


def test_weights_are_normalised_as_midjourney_does() -> None:
    def spec_parts(text: str) -> tuple[tuple[str, float], ...]:
        return p(text).to_spec(64).parts

    assert spec_parts("hot:: dog") == spec_parts("hot::2 dog::2") == (("hot", 0.5), ("dog", 0.5))
    assert spec_parts("a::2 b::6 fog::-2") == (("a", 0.25), ("b", 0.75), ("fog", -0.25))
    assert spec_parts("a::1 fog::-0.5") == (("a", 1.0), ("fog", -0.5))  # what --no fog does
    one = p("a castle::3 --no fog").to_spec(64)
    assert (one.prompt, one.parts, one.negative_prompt) == ("a castle", (), "fog")  # runs as it always did


def test_chaos_stop_and_quality() -> None:
    request = p("an otter --chaos 40 --stop 50 --q .25 --steps 30")
    assert (request.chaos, request.stop, request.quality) == (40, 50, 0.25)
    spec = request.to_spec(64)
    assert (spec.chaos, spec.stop, spec.num_inference_steps) == (40, 50, 8)  # 30 × .25, rounded up
    assert p("an otter --c 5 --quality 0.5 --steps 3").to_spec(64).num_inference_steps == 2
    assert p("an otter --q 0.25 --steps 1").to_spec(64).num_inference_steps == 1
    plain = p("an otter").to_spec(64)
    assert (plain.chaos, plain.stop, plain.num_inference_steps) == (0, 100, 30)
    assert "--chaos" not in str(p("an otter")) and "--stop" not in str(p("an otter"))
    assert p("an otter --q 1 --stop 100 --chaos 0") == p("an otter")


INVALID = [
    ("a castle::2x b", ["weight of part 1", "number from -100 to 100", "::2 or ::-0.5"]),
    ("a castle::-fog", ["'::-fog'", "weight of part 1"]),
    ("a castle::101 b", ["'::101'", "-100 to 100"]),
    ("a castle::.e b", ["'::.e'", "weight of part 1"]),
    ("a castle:: b::0", ["weight of 0 leaves part 2 out"]),
    ("fog::-1", ["add up to -1", "more than 0"]),
    ("a::1 fog::-1", ["add up to 0 (1 + -1)", "more than 0", "fog::-0.5"]),
    ("::2 a castle", ["Part 1 of the prompt is empty"]),
    ("a castle:: ::2 b", ["Part 2 of the prompt is empty"]),
    ("a castle::: b", ["Part 2", "': b'", "exactly two colons"]),
    ("a:: b:: c:: d:: e:: f:: g", ["up to 6 parts", "has 7"]),
    ("a castle --no fog::-0.5", ["--no takes plain words", "fog::-0.5"]),
    ("an otter --chaos 101", ["--chaos", "0 to 100", "101"]),
    ("an otter --c -1", ["--c", "0 to 100"]),
    ("an otter --chaos", ["--chaos needs a value", "0 to 100"]),
    ("an otter --stop 5", ["--stop", "10 to 100", "5"]),
    ("an otter --stop 50.5", ["--stop", "whole number"]),
    ("an otter --q 2", ["--q must be one of .25, .5 or 1", "'2'"]),
    ("an otter --quality high", ["--quality", ".25, .5 or 1", "'high'"]),
    ("an otter --q .5 --quality 1", ["--quality was given twice", "--q"]),
    ("an otter --chaso 5", ["Unknown flag --chaso", "Did you mean --chaos?"]),
    ("an otter --chaos::", ["'--chaos' next to '::' looks like a flag"]),  # found by the property below
    ("an otter —stop::2", ["'—stop' next to '::'"]),
    ("an otter --stpo 50", ["Unknown flag --stpo", "Did you mean --stop?"]),
]


@pytest.mark.parametrize(("text", "fragments"), INVALID)
def test_invalid(text: str, fragments: list[str]) -> None:
    with pytest.raises(ParamError) as caught:
        p(text)
    for fragment in fragments:
        assert fragment in str(caught.value)


# --------------------------------------------------------------------------------------------------------
# Properties

WORD = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="-—–,:"
    ),
    min_size=1,
    max_size=8,
)
TEXT = st.lists(WORD, min_size=1, max_size=4).map(" ".join)
WEIGHT = st.one_of(
    st.sampled_from([1.0, 2.0, 0.5, -0.5, 1.5, -1.0, 0.25]),
    st.floats(-100, 100, allow_nan=False).filter(lambda w: w != 0),
)


@st.composite
def requests(draw: st.DrawFn) -> ImagineRequest:
    parts = tuple(draw(st.lists(st.tuples(TEXT, WEIGHT), min_size=1, max_size=prompt_parts.MAX_PARTS)))
    assume(sum(weight for _, weight in parts) > 0)
    if len(parts) == 1:
        parts = ((parts[0][0], 1.0),)
    negative = tuple(dict.fromkeys(draw(st.lists(TEXT, max_size=2))))
    request = ImagineRequest(
        prompt=prompt_parts.canonical(parts),
        seed=draw(st.integers(0, 2**32 - 1)),
        steps=draw(st.integers(1, 150)),
        cfg=draw(st.floats(0, 30, allow_nan=False)),
        negative=negative,
        sampler=draw(st.sampled_from(SAMPLERS)),
        images=draw(st.integers(1, 4)),
        chaos=draw(st.integers(0, 100)),
        stop=draw(st.integers(10, 100)),
        quality=draw(st.sampled_from([0.25, 0.5, 1.0])),
    )
    # Only what parse can give back is canonical: the text's words as the scanner leaves them.
    try:
        again = parse(str(request), DEFAULTS)
    except ParamError:
        assume(False)
    assume(again.parts == parts and again.negative == negative)
    return request


@given(requests())
def test_canonical_text_parses_back_to_itself(request: ImagineRequest) -> None:
    again = parse(str(request), DEFAULTS)
    assert again == request
    assert str(again) == str(request)


FRAGMENTS = st.sampled_from(
    [
        *("::", ":::", "::2", "::-0.5", "::.5", "::-", "::1e3", "::0", "::-100", "::1e-400", " :: ", ":"),
        *("--chaos", "--c", "--stop", "--q", "--quality", "--no", "--seed", "—stop", "=", " ", "10", "-1"),
        *(".25", "101", '"', "fog", "a castle"),
    ]
)


@given(st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=12).map("".join))
@example("a:: b::1e308 c::-1e308")
@example("a::1e-320 b")
@example("a::" + "9" * 400 + " b")
@example(":: :: ::")
@example("--chaos::")
def test_any_text_gives_a_request_or_a_param_error(text: str) -> None:
    try:
        request = parse(text, DEFAULTS, rng=random.Random(0))
    except ParamError as error:
        assert str(error)
        return
    assert request.parts and all(text for text, _ in request.parts)
    assert parse(str(request), DEFAULTS) == request
    assert sum(weight for _, weight in request.to_spec(64).parts if weight > 0) in (0, pytest.approx(1.0))
