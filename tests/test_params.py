"""The /imagine prompt language: every rule in a table, plus round-trip and robustness properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from imaginebot.engine.api import SAMPLERS
from imaginebot.errors import ParamError
from imaginebot.params import ImagineRequest, RequestDefaults, aspect_of, given_flags, parse, size_for_aspect

DEFAULTS = RequestDefaults(steps=30, cfg=7.0, sampler="euler_a", images=4, aspect=(1, 1))


def p(text: str, defaults: RequestDefaults = DEFAULTS) -> ImagineRequest:
    return parse(text, defaults, rng=random.Random(0))


# (text, expected fields) — fields not named keep their defaults.
VALID = [
    ("an otter", {"prompt": "an otter"}),
    ("an otter --steps 20", {"steps": 20}),
    ("an otter --steps=20", {"steps": 20}),
    ("an otter --STEPS 20", {"steps": 20}),
    ("an otter --Steps=1", {"steps": 1}),
    ("an otter --steps 150", {"steps": 150}),
    ("--steps 20 an otter", {"prompt": "an otter", "steps": 20}),
    ("an --steps 20 otter", {"prompt": "an otter", "steps": 20}),
    ("an otter --cfg 7.5", {"cfg": 7.5}),
    ("an otter --guidance 12", {"cfg": 12.0}),
    ("an otter --cfg 0", {"cfg": 0.0}),
    ("an otter --cfg 30", {"cfg": 30.0}),
    ("an otter --seed 0", {"seed": 0}),
    ("an otter --seed 4294967295", {"seed": 4294967295}),
    ("an otter --no blur", {"negative": ("blur",)}),
    ("an otter --no blur, text", {"negative": ("blur", "text")}),
    ("an otter --no blur --no text", {"negative": ("blur", "text")}),
    ("an otter --no blur, text --no blur", {"negative": ("blur", "text")}),
    ("an otter --no  dark  water , ugly hands", {"negative": ("dark water", "ugly hands")}),
    ('an otter --no "blur, text" --steps 9', {"negative": ("blur", "text"), "steps": 9}),
    ("an otter --no=“blur”", {"negative": ("blur",)}),
    ("an otter --ar 3:2", {"aspect": (3, 2)}),
    ("an otter --aspect 16:9", {"aspect": (16, 9)}),
    ("an otter --ar 4:1", {"aspect": (4, 1)}),
    ("an otter --ar 1:4", {"aspect": (1, 4)}),
    ("an otter --ar 2:2", {"aspect": (1, 1)}),
    ("an otter --ar 6:4", {"aspect": (3, 2)}),
    ("an otter --sampler ddim", {"sampler": "ddim"}),
    ("an otter --sampler DPM++2M_Karras", {"sampler": "dpm++2m_karras"}),
    ("an otter --sampler dpmpp_2m", {"sampler": "dpm++2m"}),
    ("an otter --sampler 'unipc'", {"sampler": "unipc"}),
    ("an otter --n 1", {"images": 1}),
    ("an otter --images 3", {"images": 3}),
    # phones: em-dash and en-dash in place of "--"
    ("an otter —steps 20", {"steps": 20}),
    ("an otter –steps 20", {"steps": 20}),
    ("an otter —no blur —ar 3:2", {"negative": ("blur",), "aspect": (3, 2)}),
    ("an otter ——seed=5", {"seed": 5}),
    # prose survives: apostrophes, lone dashes, hyphens, inner double dashes
    ("a cat's hat --seed 1", {"prompt": "a cat's hat", "seed": 1}),
    ("rock — paper -- scissors", {"prompt": "rock — paper -- scissors"}),
    ("a well-known sea--blue bird", {"prompt": "a well-known sea--blue bird"}),
    ("  lots   of\tspace  ", {"prompt": "lots of space"}),
    (
        "watercolor otter --ar 3:2 --no blur --steps 25 --cfg 6.5 --seed 42 --sampler euler --n 2",
        {
            "prompt": "watercolor otter",
            "aspect": (3, 2),
            "negative": ("blur",),
            "steps": 25,
            "cfg": 6.5,
            "seed": 42,
            "sampler": "euler",
            "images": 2,
        },
    ),
]


@pytest.mark.parametrize(("text", "fields"), VALID)
def test_valid(text: str, fields: dict[str, object]) -> None:
    request = p(text)
    expected = {
        "prompt": "an otter",
        "steps": 30,
        "cfg": 7.0,
        "negative": (),
        "aspect": (1, 1),
        "sampler": "euler_a",
        "images": 4,
    } | fields
    for name, value in expected.items():
        assert getattr(request, name) == value, name
    assert parse(str(request), DEFAULTS) == request


# (text, fragments the message must contain)
INVALID = [
    ("an otter --stpes 20", ["--stpes", "Did you mean --steps?"]),
    ("an otter --sed 20", ["Unknown flag --sed", "--seed"]),
    ("an otter --qualty 2", ["Unknown flag --qualty", "Did you mean --quality?"]),
    ("an otter —stepz 20", ["Unknown flag --stepz", "Did you mean --steps?"]),
    ("an otter --steps", ["--steps needs a value", "1 to 150"]),
    ("an otter --steps --cfg 3", ["--steps needs a value"]),
    ("an otter --steps=", ["--steps needs a value"]),
    ("an otter --steps abc", ["--steps", "whole number from 1 to 150", "'abc'"]),
    ("an otter --steps 2.5", ["--steps", "whole number"]),
    ("an otter --steps 0", ["--steps", "1 to 150", "0"]),
    ("an otter --steps 151", ["--steps", "1 to 150", "151"]),
    ("an otter --cfg -1", ["--cfg", "0 to 30"]),
    ("an otter --cfg 30.5", ["--cfg", "0 to 30"]),
    ("an otter --cfg nan", ["--cfg", "0 to 30"]),
    ("an otter --cfg inf", ["--cfg", "0 to 30"]),
    ("an otter --guidance high", ["--guidance", "0 to 30", "'high'"]),
    ("an otter --seed -1", ["--seed", "0 to 4294967295"]),
    ("an otter --seed 4294967296", ["--seed", "0 to 4294967295"]),
    ("an otter --ar 16x9", ["--ar", "3:2", "'16x9'"]),
    ("an otter --ar 5:1", ["--ar", "1:4 and 4:1", "5:1"]),
    ("an otter --aspect 1:5", ["--aspect", "1:4 and 4:1"]),
    ("an otter --ar 0:1", ["--ar", "1:4 and 4:1"]),
    ("an otter --ar 1.5:1", ["--ar", "whole numbers"]),
    ("an otter --sampler eulr", ["--sampler", "euler", "ddim, euler, euler_a"]),
    ("an otter --sampler foo", ["--sampler 'foo'", "Choose one of"]),
    ("an otter --n 5", ["--n", "1 to 4"]),
    ("an otter --images 0", ["--images", "1 to 4"]),
    ("an otter --no", ["--no needs a value"]),
    ("an otter --seed 1 --seed 2", ["--seed", "twice"]),
    ("an otter --cfg 1 --guidance 2", ["--guidance", "twice", "--cfg"]),
    ("--steps 20", ["prompt is empty"]),
    ("", ["prompt is empty"]),
    ("   ", ["prompt is empty"]),
    ("--no blur, text", ["prompt is empty"]),
]


@pytest.mark.parametrize(("text", "fragments"), INVALID)
def test_invalid(text: str, fragments: list[str]) -> None:
    with pytest.raises(ParamError) as caught:
        p(text)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_seed_absent_is_random_and_part_of_the_request() -> None:
    first = parse("an otter", DEFAULTS, rng=random.Random(1))
    second = parse("an otter", DEFAULTS, rng=random.Random(2))
    assert first.seed != second.seed
    assert 0 <= first.seed <= 4294967295
    assert f"--seed {first.seed}" in str(first)
    # without an rng the system's randomness is used, still in range
    assert 0 <= parse("an otter").seed <= 4294967295


def test_defaults_fill_what_is_missing() -> None:
    defaults = RequestDefaults(steps=12, cfg=3.5, sampler="ddim", images=2, aspect=(3, 2))
    request = p("an otter --steps 40", defaults)
    assert (request.steps, request.cfg, request.sampler, request.images, request.aspect) == (
        40,
        3.5,
        "ddim",
        2,
        (3, 2),
    )


def test_canonical_text() -> None:
    request = p("an otter —no blur, text –ar 6:4 --seed 7 --cfg 6.50")
    assert str(request) == (
        "an otter --no blur, text --ar 3:2 --steps 30 --cfg 6.5 --seed 7 --sampler euler_a --images 4"
    )


def test_negative_prompt_and_tile_seeds() -> None:
    request = p("an otter --no blur, text --seed 4294967294 --n 3")
    assert request.negative_prompt == "blur, text"
    assert request.tile_seeds() == (4294967294, 4294967295, 0)


@pytest.mark.parametrize(
    ("aspect", "native", "size"),
    [
        ((1, 1), 512, (512, 512)),
        ((16, 9), 512, (704, 384)),
        ((3, 2), 512, (640, 448)),
        ((4, 1), 512, (1024, 256)),
        ((1, 4), 512, (256, 1024)),
        ((1, 1), 1024, (1024, 1024)),
        ((16, 9), 1024, (1344, 768)),
        ((1, 1), 64, (64, 64)),
        ((4, 1), 64, (128, 32)),
    ],
)
def test_size_for_aspect(aspect: tuple[int, int], native: int, size: tuple[int, int]) -> None:
    assert size_for_aspect(aspect, native) == size


@given(
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    native=st.sampled_from([64, 256, 512, 768, 1024]),
)
def test_size_keeps_about_the_native_pixel_count(width: int, height: int, native: int) -> None:
    assume(width <= 4 * height and height <= 4 * width)
    w, h = size_for_aspect((width, height), native)
    multiple = max(8, min(64, native // 8))
    assert w % multiple == 0 and h % multiple == 0
    assert 0.6 < (w * h) / native**2 < 1.45
    assert abs((w / h) / (width / height) - 1) < 0.35


# --------------------------------------------------------------------------------------------------------
# Properties

WORD = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="-—–,"
    ),
    min_size=1,
    max_size=8,
)
PROMPT = st.lists(WORD, min_size=1, max_size=6).map(" ".join)
TERM = st.lists(WORD, min_size=1, max_size=3).map(" ".join)


@st.composite
def requests(draw: st.DrawFn) -> ImagineRequest:
    prompt = draw(PROMPT)
    terms = tuple(dict.fromkeys(draw(st.lists(TERM, max_size=3))))
    width = draw(st.integers(1, 64))
    height = draw(st.integers(max(1, -(-width // 4)), width * 4))
    request = ImagineRequest(
        prompt=prompt,
        seed=draw(st.integers(0, 2**32 - 1)),
        steps=draw(st.integers(1, 150)),
        cfg=draw(st.floats(0, 30, allow_nan=False)),
        negative=terms,
        aspect=(width, height),
        sampler=draw(st.sampled_from(SAMPLERS)),
        images=draw(st.integers(1, 4)),
    )
    # Only canonical requests (what parse can give back) are "requests": quotes at a term's ends are
    # taken off by the parser, and an aspect is kept in lowest terms.
    try:
        canonical = parse(str(request), DEFAULTS)
    except ParamError:
        assume(False)
    assume(canonical.prompt == prompt and canonical.negative == terms)
    from math import gcd

    divisor = gcd(width, height)
    return ImagineRequest(**{**request.__dict__, "aspect": (width // divisor, height // divisor)})


@given(requests())
def test_round_trip(request: ImagineRequest) -> None:
    assert parse(str(request), DEFAULTS) == request


FLAGISH = st.sampled_from(
    [
        *("--", "—", "–", "---", "--steps", "--cfg", "--seed", "--no", "--ar", "--aspect", "--sampler"),
        *("--n", "--images", "--guidance", "=", ":", ",", '"', "'", "“", "”", " ", "\t", "\n", "16:9", "-1"),
    ]
)


@given(st.lists(st.one_of(FLAGISH, st.text(max_size=6)), max_size=12).map("".join))
@example("an otter --steps 1e400")
@example("an otter --seed " + "9" * 5000)
@example('an otter --no "')
@example("an otter --ar 99999999999:1")
def test_any_text_gives_a_request_or_a_param_error(text: str) -> None:
    try:
        request = parse(text, DEFAULTS, rng=random.Random(0))
    except ParamError as error:
        assert str(error)
        return
    assert request.prompt
    assert parse(str(request), DEFAULTS) == request


def test_tile_is_a_switch_and_iw_a_weight() -> None:
    request = parse("a leaf pattern --tile --seed 3")
    assert request.tile and request.prompt == "a leaf pattern" and request.to_spec(512).tile
    assert parse("--tile a leaf").prompt == "a leaf"  # a switch takes no value
    assert parse(str(request)) == request
    weighted = parse("a sunset --iw 2 --seed 1")
    assert weighted.image_weight == 2.0 and parse(str(weighted)) == weighted
    assert weighted.image_strength() < parse("a sunset --seed 1").image_strength() < 1.0
    assert parse("x --iw 0 --seed 1").image_strength() == 1.0
    assert weighted.to_spec(512, image_prompt=True).strength == weighted.image_strength()
    assert weighted.to_spec(512).strength is None  # no image: the engine's choice
    with pytest.raises(ParamError, match=r"--iw must be a number from 0 to 3"):
        parse("a sunset --iw 4")
    with pytest.raises(ParamError, match="twice"):
        parse("a sunset --tile --tile")


def test_an_edited_prompt_takes_a_flags_later_value() -> None:
    """Remix and Custom Zoom fill the prompt in with every flag: what the user appends wins."""
    text = "an otter --ar 1:1 --steps 30 --no fog --seed 3 --tile --ar 16:9 --steps 12 --no rain --tile"
    edited = parse(text, later_wins=True)
    assert (edited.aspect, edited.steps, edited.seed, edited.tile) == ((16, 9), 12, 3, True)
    assert edited.negative == ("fog", "rain")
    assert parse("an otter --lora a:1 --lora b --lora A:0.5", later_wins=True).loras == (
        ("b", 1.0),
        ("A", 0.5),
    )
    with pytest.raises(ParamError, match="twice"):
        parse(text)  # a typed /imagine still says it


def test_a_pictures_aspect_in_small_terms_within_the_limits() -> None:
    assert aspect_of(1920, 1080) == (16, 9) and aspect_of(1000, 667) == (3, 2) and aspect_of(40, 30) == (4, 3)
    assert aspect_of(64, 64) == (1, 1) and aspect_of(1000, 100) == (4, 1) and aspect_of(10, 100) == (1, 4)
    assert given_flags("a fox --AR 3:2 —steps 4 --tile") == {"aspect", "steps", "tile"}
