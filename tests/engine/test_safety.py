"""The safety checker: a random-weight StableDiffusionSafetyChecker saved by the test and loaded by the bot's
own code, flagging or not as its thresholds say; on the worker, the images of the jobs that end at one step
are checked in one batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes import FakeEngine
from PIL import Image
from safetycheckers import save_checker

from imaginebot.batcher import Batcher, BatchJob, Dispatch
from imaginebot.catalog import ModelEntry
from imaginebot.engine import DiffusionEngine, GenerateSpec
from imaginebot.engine.models import load_models, safety_of
from imaginebot.engine.safety import SafetyChecker, load_safety_checker
from imaginebot.errors import ModelNotFound
from imaginebot.store_models import JobKind
from imaginebot.work import Done, Event, JobRequest, UnetCall

PICTURES = [
    Image.new("RGB", (64, 64), (200, 30, 30)),
    Image.radial_gradient("L").convert("RGB"),
    Image.linear_gradient("L").convert("RGB").resize((48, 80)),  # any size: the processor crops
]


@pytest.mark.parametrize("pipeline_layout", [False, True])
@pytest.mark.parametrize("flags", [True, False])
def test_a_checker_flags_as_its_thresholds_say(tmp_path: Path, flags: bool, pipeline_layout: bool) -> None:
    folder = save_checker(tmp_path / "checker", flags=flags, pipeline_layout=pipeline_layout)
    checker = load_safety_checker(folder, device="cpu")
    assert checker.check(PICTURES) == [flags] * len(PICTURES)
    assert checker.check([]) == []
    # the images are only looked at: no black image in their place (diffusers' own forward would)
    assert PICTURES[0].getpixel((0, 0)) == (200, 30, 30)


def test_a_folder_that_is_no_checker_says_what_is_missing(tmp_path: Path) -> None:
    folder = save_checker(tmp_path / "checker", flags=True)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelNotFound, match=r"no preprocessor_config\.json in .*checker"):
        load_safety_checker(folder, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match=r"IMAGINEBOT_SAFETY_CHECKER=.*no config\.json"):
        load_safety_checker(tmp_path / "empty", device="cpu")


def test_a_workers_models_come_with_its_checker(tmp_path: Path) -> None:
    """load_models, as bot.py and a Ray actor call it: the checker on the device of the models."""
    folder = save_checker(tmp_path / "checker", flags=False)
    entries = (ModelEntry("fake", "/nowhere"),)
    models = load_models(entries, device="cpu", load=lambda *a, **k: FakeEngine(), safety_checker=folder)
    assert isinstance(safety_of(models), SafetyChecker)
    assert safety_of(load_models(entries, device="cpu", load=lambda *a, **k: FakeEngine())) is None


class Counted:
    """The real checker, counting the batches it is given."""

    def __init__(self, checker: SafetyChecker) -> None:
        self.checker = checker
        self.batches: list[int] = []

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        self.batches.append(len(images))
        return self.checker.check(images)


def run_batcher(batcher: Batcher, jobs: list[BatchJob]) -> tuple[list[Event], list[UnetCall]]:
    """All ``jobs`` join at once; the batcher runs them to their end (on this thread)."""
    events: list[Event] = []
    calls: list[UnetCall] = []
    waiting = [jobs]

    def admit(running: Sequence[BatchJob]) -> list[BatchJob] | None:
        if waiting:
            return waiting.pop()
        return [] if running else None

    dispatch = Dispatch(
        admit=admit,
        report=lambda job, event: events.append(event),
        requeue=lambda job: None,
        wake=lambda: None,
        measured=calls.append,
    )
    batcher.run(dispatch)
    return events, calls


@pytest.mark.parametrize("flags", [True, False])
def test_the_images_of_jobs_that_end_together_are_checked_in_one_batch(
    tmp_path: Path, sd_engine: DiffusionEngine, flags: bool
) -> None:
    checker = Counted(load_safety_checker(save_checker(tmp_path, flags=flags), device="cpu"))
    batcher = Batcher(sd_engine, capacity=100, safety=checker)
    jobs = []
    for i, seeds in enumerate(((1, 2), (3, 4), (5,))):
        spec = GenerateSpec(f"a red circle {i}", width=32, height=32, num_inference_steps=2, seeds=seeds)
        jobs.append(BatchJob(JobRequest(i, i, JobKind.IMAGINE, spec), sd_engine.plan(spec)))
    events, calls = run_batcher(batcher, jobs)
    done = {event.job_id: event.result for event in events if isinstance(event, Done)}
    assert checker.batches == [5]  # the five images of the three jobs, in one call of the checker
    expected = {0: (0, 1), 1: (0, 1), 2: (0,)} if flags else {0: (), 1: (), 2: ()}
    assert {job_id: result.flagged for job_id, result in done.items()} == expected
    # the flags ride with the images, which are the engine's own
    assert all(len(result.images) == len(jobs[job_id].request.spec.seeds) for job_id, result in done.items())
    # each of the two steps was one UNet call of the five images, twice with guidance
    assert [call.samples for call in calls] == [10, 10] and all(call.seconds > 0 for call in calls)


def test_a_checker_that_fails_holds_every_image_back(sd_engine: DiffusionEngine) -> None:
    class Broken:
        def check(self, images: Sequence[Image.Image]) -> list[bool]:
            raise RuntimeError("CUDA error: device-side assert triggered")

    spec = GenerateSpec("a blue square", width=32, height=32, num_inference_steps=1, seeds=(1, 2))
    job = BatchJob(JobRequest(1, 1, JobKind.IMAGINE, spec), sd_engine.plan(spec))
    events, _ = run_batcher(Batcher(sd_engine, capacity=100, safety=Broken()), [job])
    (done,) = [event for event in events if isinstance(event, Done)]
    assert done.result.flagged == (0, 1)
