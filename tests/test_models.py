"""Several models: the catalog (IMAGINEBOT_MODELS, each model's defaults), a device's ModelSet, and the
executor sending each job to a worker that holds its model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakes import FakeEngine

from imaginebot.catalog import Catalog, ModelEntry, ModelInfo, parse_models
from imaginebot.config import EMBEDDED_MODEL, load_settings
from imaginebot.engine.api import GenerateSpec
from imaginebot.engine.models import ModelSet, load_models, model_fits, weights_bytes
from imaginebot.engine.planning import Planner
from imaginebot.errors import ConfigError, ParamError
from imaginebot.executor import Done, Executor, JobRequest
from imaginebot.params import RequestDefaults, parse
from imaginebot.store_models import JobKind

SD = Planner(native_size=512, vae_scale_factor=8, guidance_embedded=False)
LCM = Planner(native_size=512, vae_scale_factor=8, guidance_embedded=True)


def spec(model: str, prompt: str = "a fox") -> GenerateSpec:
    return GenerateSpec(prompt, width=8, height=8, num_inference_steps=2, seeds=(1,), model=model)


# -- IMAGINEBOT_MODELS ---------------------------------------------------------------------------------


def test_models_are_name_path_entries_with_their_own_defaults() -> None:
    entries = parse_models(
        "SD15=/models/v1-5.safetensors, turbo=/models/sd_turbo.safetensors steps=2 cfg=0\n"
        "xl='/models/my models/sdxl.safetensors' sampler=dpm++2m"
    )
    assert [e.name for e in entries] == ["sd15", "turbo", "xl"]
    assert entries[2].path == "/models/my models/sdxl.safetensors"
    assert entries[1].options == {"steps": 2, "cfg": 0.0} and entries[2].options == {"sampler": "dpm++2m"}
    assert entries[1].turbo and not entries[0].turbo
    assert entries[1].scheduler_overrides == {"timestep_spacing": "trailing"}
    assert entries[1].native_size(768) == 512 and entries[0].native_size(768) == 768  # a Turbo is 512 px
    assert parse_models("xl=/m/xl.safetensors size=768")[0].native_size(1024) == 768


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("sd15", "must be name=path"),
        ("a=/x, a=/y", "given twice"),
        ("Bad!name=/x", "must be 1-32 lower-case"),
        ("a=/x steps=500", "steps must be a whole number from 1 to 150, not '500'"),
        ("a=/x sampler=fast", "sampler must be one of"),
        ("a=/x width=512", "'width=512' is not an option; options are steps=, cfg=, sampler=, size="),
        ("a=/x size=500", "size must be the native side in pixels, a multiple of 64"),
        (" , ", "names no model"),
    ],
)
def test_a_wrong_models_setting_says_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_models(text)
    with pytest.raises(ConfigError, match="IMAGINEBOT_MODELS"):
        load_settings(models=text)


def test_model_and_models_are_not_set_together() -> None:
    with pytest.raises(ConfigError, match="set IMAGINEBOT_MODEL or IMAGINEBOT_MODELS, not both"):
        load_settings(model="/m/a.safetensors", models="a=/m/a.safetensors")


def test_each_model_brings_its_own_defaults_unless_the_operator_set_them() -> None:
    settings = load_settings(
        models=f"shapes={EMBEDDED_MODEL}, sd=/m/sd.safetensors, turbo=/m/sd_turbo.safetensors,"
        " lcm=/m/lcm, mine=/m/x.safetensors steps=12 cfg=3.5",
        default_cfg=6.0,  # the operator's own: no model's kind changes it
    )
    catalog = settings.catalog({"shapes": SD, "sd": SD, "turbo": SD, "lcm": LCM, "mine": SD})
    got = {m.name: (m.defaults.steps, m.defaults.cfg, m.defaults.sampler) for m in catalog.models}
    assert got == {
        "shapes": (20, 6.0, "euler_a"),  # the embedded model's steps, the operator's cfg
        "sd": (30, 6.0, "euler_a"),
        "turbo": (1, 6.0, "euler_a"),
        "lcm": (4, 6.0, "lcm"),  # its own sampler and steps
        "mine": (12, 3.5, "euler_a"),  # its entry wins over everything
    }
    assert all(m.defaults.model == m.name for m in catalog.models)
    assert catalog.default.name == "shapes"
    turbo = load_settings(models="turbo=/m/sd_turbo.safetensors").catalog({"turbo": SD}).default
    assert (turbo.defaults.steps, turbo.defaults.cfg) == (1, 0.0)


def test_one_model_needs_no_name_in_prompts() -> None:
    catalog = load_settings().catalog({EMBEDDED_MODEL.name: SD})
    assert catalog.names == ("shapes-64",) and catalog.default.defaults.model == ""
    assert load_settings(model="/models/Dream Shaper 8.safetensors").model_entries[0].name == "dream-shaper-8"


# -- --model and --lora in a prompt ----------------------------------------------------------------------

CHOICES_CATALOG = Catalog(
    (
        ModelInfo("sd15", "", 512, RequestDefaults(steps=30, cfg=7.0, model="sd15")),
        ModelInfo("turbo", "", 512, RequestDefaults(steps=1, cfg=0.0, model="turbo")),
    )
)


def test_model_flag_brings_that_models_defaults_and_round_trips() -> None:
    choices = CHOICES_CATALOG.choices()
    plain = parse("a fox", CHOICES_CATALOG.default.defaults, choices=choices)
    assert (plain.model, plain.steps) == ("sd15", 30)
    turbo = parse("a fox --model TURBO --steps 2", CHOICES_CATALOG.default.defaults, choices=choices)
    assert (turbo.model, turbo.steps, turbo.cfg) == ("turbo", 2, 0.0)
    assert "--model turbo" in str(turbo)
    assert parse(str(turbo), choices=choices) == turbo
    assert turbo.to_spec(512).model == "turbo"


def test_an_unknown_model_gets_did_you_mean() -> None:
    with pytest.raises(
        ParamError, match=r"--model 'turbp' is not a model.*sd15, turbo.*Did you mean turbo\?"
    ):
        parse("a fox --model turbp", choices=CHOICES_CATALOG.choices())
    with pytest.raises(ParamError, match="given twice"):
        parse("a fox --model sd15 --model turbo", choices=CHOICES_CATALOG.choices())


def test_loras_with_weights(tmp_path: Path) -> None:
    for name in ("pixel_art", "Watercolor"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    catalog = Catalog(CHOICES_CATALOG.models, lora_dir=tmp_path)
    request = parse("a fox --lora pixel_art:0.8 --lora watercolor", choices=catalog.choices())
    assert request.loras == (("pixel_art", 0.8), ("Watercolor", 1.0))
    assert str(request).endswith("--lora pixel_art:0.8 --lora Watercolor:1")
    assert parse(str(request), choices=catalog.choices()).loras == request.loras
    assert request.to_spec(512).loras == request.loras
    for text, fragment in [
        ("--lora pixelart:1", r"'pixelart' is not a LoRA this bot has.*Did you mean pixel_art\?"),
        ("--lora pixel_art:2.5", "must be a number from 0 to 2; you gave 2.5"),
        ("--lora pixel_art:1 --lora PIXEL_ART:0.5", "given twice"),
        ("--lora :1", "needs a name"),
    ]:
        with pytest.raises(ParamError, match=fragment):
            parse(f"a fox {text}", choices=catalog.choices())
    with pytest.raises(ParamError, match="this bot has no LoRAs"):
        parse("a fox --lora pixel_art", choices=CHOICES_CATALOG.choices())


# -- a device's models -----------------------------------------------------------------------------------


def test_a_model_set_sends_each_job_to_its_models_engine_and_keeps_groups_apart() -> None:
    one, two = FakeEngine(), FakeEngine()
    models = ModelSet({"a": one, "b": two})
    plan_a, plan_b = models.plan(spec("a")), models.plan(spec("b"))
    assert plan_a.group != plan_b.group and models.plan(spec("")).group == plan_a.group
    state = models.prepare(spec("b"))
    while not state.done:
        models.step([state])
    result = models.finish(state)
    assert len(result.images) == 1 and not one.calls and two.calls
    with pytest.raises(ParamError, match="'c' is not loaded on this worker"):
        models.prepare(spec("c"))


def test_a_device_loads_the_models_that_fit_and_leaves_the_rest(tmp_path: Path) -> None:
    for name, size in (("a", 40), ("b", 40), ("c", 10)):
        (tmp_path / f"{name}.safetensors").write_bytes(b"\0" * size)
    free = [100]  # bytes free, of 100

    def load(path: str, **options: object) -> FakeEngine:
        free[0] -= Path(path).stat().st_size
        return FakeEngine()

    entries = [ModelEntry(n, str(tmp_path / f"{n}.safetensors")) for n in ("a", "b", "c")]
    models = load_models(entries, memory=lambda: (free[0], 100), load=load)
    # a (the default) always; then 60 are free, less 25 kept for the batches: b (40) is left out, c fits
    assert models.names == ("a", "c")
    assert model_fits(10, 60, 100) and not model_fits(40, 60, 100)
    assert weights_bytes(tmp_path / "a.safetensors") == 40 and weights_bytes(tmp_path / "nowhere") == 0
    assert weights_bytes(EMBEDDED_MODEL) > 0


# -- the executor routes by model ----------------------------------------------------------------------


async def test_jobs_go_to_a_worker_that_holds_their_model() -> None:
    engines = {"a": FakeEngine(), "b": FakeEngine()}
    executor = Executor([ModelSet({"a": engines["a"]}), ModelSet({"b": engines["b"]})])
    async with executor:
        handles = [
            executor.submit(JobRequest(i, user_id=i, kind=JobKind.IMAGINE, spec=spec(model, f"job {i}")))
            for i, model in enumerate(["b", "b", "a", "b", "a"], start=1)
        ]
        results = await asyncio.gather(*(handle.wait() for handle in handles))
        assert all(isinstance(r, Done) for r in results)
        assert [p for _, p in engines["a"].calls] == ["job 3", "job 5"]
        assert [p for _, p in engines["b"].calls] == ["job 1", "job 2", "job 4"]
        with pytest.raises(
            ParamError, match=r"No GPU of this bot has the model 'c' loaded \(they hold a, b\)"
        ):
            executor.submit(JobRequest(9, 9, JobKind.IMAGINE, spec("c")))


async def test_a_job_of_another_model_does_not_hold_up_a_free_worker() -> None:
    slow, fast = FakeEngine(steps_per_permit=True), FakeEngine()
    executor = Executor([ModelSet({"a": slow}), ModelSet({"b": fast})])
    async with executor:
        first = executor.submit(JobRequest(1, 1, JobKind.IMAGINE, spec("a", "first a")))
        second = executor.submit(JobRequest(2, 1, JobKind.IMAGINE, spec("a", "second a")))  # waits for a
        other = executor.submit(JobRequest(3, 2, JobKind.IMAGINE, spec("b", "b")))
        assert isinstance(await other.wait(), Done)  # while both a jobs are still at their first step
        assert slow.permits is not None
        for _ in range(8):
            slow.permits.release()
        assert isinstance(await first.wait(), Done) and isinstance(await second.wait(), Done)


def test_the_bots_planner_groups_as_the_workers_model_set() -> None:
    from imaginebot.engine.models import ModelPlanner

    engines = {"a": FakeEngine(), "b": FakeEngine()}
    planner = ModelPlanner({"a": engines["a"], "b": engines["b"]})  # type: ignore[dict-item]
    for model in ("", "a", "b"):
        assert planner.plan(spec(model)) == ModelSet(engines).plan(spec(model))  # type: ignore[arg-type]
    with pytest.raises(ParamError, match="'c' is not one of this bot's"):
        planner.plan(spec("c"))


def test_a_turbo_model_gets_a_trailing_schedule(tmp_path: Path) -> None:
    """One step of SD-Turbo must start from pure noise: its schedule ends at the last timestep."""
    loaded: list[FakeEngine] = []

    def load(path: str, **options: object) -> FakeEngine:
        engine = FakeEngine()
        engine.scheduler_config = {"timestep_spacing": "leading"}  # type: ignore[attr-defined]
        loaded.append(engine)
        return engine

    entries = [ModelEntry("sd", "/m/sd.safetensors"), ModelEntry("fast", "/m/sd_turbo.safetensors")]
    load_models(entries, memory=lambda: (10**12, 10**12), load=load)
    spacing = [engine.scheduler_config["timestep_spacing"] for engine in loaded]  # type: ignore[attr-defined]
    assert spacing == ["leading", "trailing"]
