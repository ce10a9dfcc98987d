"""The job message's text and buttons, without Discord: custom_ids, labels, lineage links, limits."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import aiohttp
import pytest
from PIL import Image

from cogs import render
from cogs.common import describe_error
from cogs.jobmessage import CUSTOM_ID, JobButton, job_buttons
from imaginebot.actions import Action
from imaginebot.delivery import JobView, Waiting, Working
from imaginebot.engine.api import GenerateSpec
from imaginebot.jobs import defaults_for
from imaginebot.params import RequestDefaults, parse
from imaginebot.store_models import Job, JobKind, JobStatus, Review, UserSettings


def make_job(**changes: object) -> Job:
    fields: dict[str, object] = {
        "id": 41,
        "user_id": 7,
        "guild_id": 100,
        "channel_id": 200,
        "message_id": 300,
        "kind": JobKind.IMAGINE,
        "parent_id": None,
        "tile_index": None,
        "prompt_text": "a red circle --ar 1:1 --steps 20 --cfg 7 --seed 5 --sampler euler_a --images 4",
        "spec": GenerateSpec("a red circle", "", 64, 64, 20, 7.0, "euler_a", (5, 6, 7, 8)),
        "status": JobStatus.DONE,
        "error": "",
        "note": "",
        "images": (),
        "grid": None,
        "charged": 4,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "started_at": None,
        "finished_at": None,
        "elapsed_s": 1.5,
        "delivery": None,
        "delivered_at": None,
    }
    fields.update(changes)
    return Job(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("tile", [0, 1, 4])
def test_custom_ids_round_trip_and_fit_discord(action: Action, tile: int) -> None:
    job_id = 2**63 - 1  # the largest SQLite rowid: the longest custom_id we can make
    cid = JobButton(action, job_id, tile).custom_id
    assert len(cid) <= 100
    match = re.fullmatch(CUSTOM_ID, cid)
    assert match is not None
    assert (Action(match["action"]), int(match["job"]), int(match["tile"])) == (action, job_id, tile)


def test_action_letters_never_change() -> None:
    # Buttons on messages already in Discord carry these letters: changing one breaks them.
    assert {a.name: a.value for a in Action} == {
        "UPSCALE": "u",
        "VARY": "v",
        "REROLL": "r",
        "VARY_SUBTLE": "s",
        "VARY_STRONG": "t",
        "RETRY": "a",
        "CANCEL": "c",
        "UPSCALE_SUBTLE": "b",
        "UPSCALE_CREATIVE": "k",
        "VARY_REGION": "g",
        "ZOOM_2X": "z",
        "ZOOM_1_5X": "o",
        "CUSTOM_ZOOM": "m",
        "MAKE_SQUARE": "q",
        "PAN_LEFT": "w",
        "PAN_RIGHT": "e",
        "PAN_UP": "n",
        "PAN_DOWN": "d",
    }


def labels(job: Job) -> dict[str, str]:
    view = job_buttons(job)
    return {item.item.label or str(item.item.emoji): item.custom_id for item in view.children}  # type: ignore[attr-defined]


def test_grid_buttons_map_to_their_tiles_in_midjourneys_rows() -> None:
    job = make_job(images=("a", "b", "c", "d"))
    found = labels(job)
    assert found["U1"] == "ib:u:41:1" and found["U4"] == "ib:u:41:4"
    assert found["V3"] == "ib:v:41:3"
    assert found["🔄"] == "ib:r:41:0"
    assert len(found) == 9
    rows = {item.item.label or str(item.item.emoji): item.item.row for item in job_buttons(job).children}  # type: ignore[attr-defined]
    assert rows["U2"] == 0 and rows["V2"] == 1 and rows["🔄"] == 1


def test_each_state_offers_its_own_buttons() -> None:
    assert set(labels(make_job(status=JobStatus.RUNNING))) == {"Cancel"}
    assert set(labels(make_job(status=JobStatus.FAILED))) == {"Retry"}  # not 🔄: that is a new seed
    assert labels(make_job(status=JobStatus.INTERRUPTED)) == {"Retry": "ib:a:41:0"}
    assert labels(make_job(status=JobStatus.CANCELLED)) == {}
    upscaled = make_job(kind=JobKind.UPSCALE, images=("a",))
    tools = {"Upscale (Subtle)", "Upscale (Creative)", "Vary (Subtle)", "Vary (Strong)", "Vary (Region)"}
    tools |= {"Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom", "⬅️", "➡️", "⬆️", "⬇️"}
    assert set(labels(upscaled)) == tools  # square: no Make Square
    wide = make_job(kind=JobKind.UPSCALE, images=("a",), spec=replace(upscaled.spec, width=768))
    assert set(labels(wide)) == tools | {"Make Square"}
    assert len(labels(make_job(images=("a", "b")))) == 5  # U1 U2 V1 V2 🔄


def test_lineage_links_back_to_the_parent() -> None:
    parent = make_job()
    child = make_job(id=42, kind=JobKind.VARIATION, parent_id=41, tile_index=2, message_id=301)
    text = render.progress(JobView(child, parent), Waiting(3))
    assert "Variations of image 3 of https://discord.com/channels/100/200/300" in text
    assert "position 3" in text
    upscale = make_job(id=43, kind=JobKind.UPSCALE, parent_id=41, tile_index=1)
    assert "Upscale of image 2" in render.progress(JobView(upscale, parent), Working(5, 20))
    assert "25% (5/20 steps)" in render.progress(JobView(upscale, parent), Working(5, 20))
    reroll = make_job(id=44, kind=JobKind.REROLL, parent_id=41)
    assert "Re-roll of https://discord.com/channels/100/200/300" in render.final(JobView(reroll, parent))


@pytest.mark.parametrize(
    ("eta", "said"),
    [
        (None, "Waiting — position 3 in the queue."),
        (0.4, "position 3 in the queue · starts any moment now."),
        (7.2, "starts in about 7 s."),
        (23.0, "starts in about 25 s."),
        (170.0, "starts in about 3 min."),
        (9000.0, "starts in about 2.5 h."),
    ],
)
def test_a_waiting_job_says_roughly_when_it_starts(eta: float | None, said: str) -> None:
    assert said in render.progress(JobView(make_job()), Waiting(3, eta))


def test_done_text_carries_the_canonical_prompt_seed_and_time() -> None:
    job = make_job(elapsed_s=3.25, note="upscaled by a plain resize")
    text = render.final(JobView(job))
    assert job.prompt_text in text
    assert "seeds 5–8" in text and "3.2 s" in text
    assert "plain resize" in text
    assert parse(job.prompt_text).seed == 5


def test_final_texts_fit_discords_limit_and_say_what_happened() -> None:
    long_prompt = "a " * 700 + "--steps 20"
    job = make_job(prompt_text=long_prompt, spec=GenerateSpec("a " * 700, seeds=(1,)))
    assert len(render.final(JobView(job))) <= 2000
    failed = render.final(JobView(make_job(status=JobStatus.FAILED, error="The GPU ran out of memory.")))
    assert "ran out of memory" in failed and "given back" in failed
    assert "Cancelled" in render.final(JobView(make_job(status=JobStatus.CANCELLED)))
    with pytest.raises(ValueError, match="not ended"):
        render.final(JobView(make_job(status=JobStatus.QUEUED)))


def test_a_reposted_result_mentions_the_user_and_links_the_original() -> None:
    text = render.reposted(JobView(make_job()))
    assert text.startswith("<@7>")
    assert "https://discord.com/channels/100/200/300" in text and "seeds 5–8" in text


def test_user_settings_override_the_bot_defaults() -> None:
    base = RequestDefaults(steps=30, cfg=7.0, sampler="euler_a", images=4, aspect=(1, 1))
    mine = UserSettings(steps=12, aspect="16:9", images=2)
    merged = defaults_for(base, mine)
    assert (merged.steps, merged.cfg, merged.aspect, merged.images, merged.sampler) == (
        12,
        7.0,
        (16, 9),
        2,
        "euler_a",
    )
    request = parse("an otter --steps 40", merged)
    spec = request.to_spec(512)
    assert spec.num_inference_steps == 40 and (spec.width, spec.height) == (704, 384)
    assert spec.seeds == request.tile_seeds() and spec.strength is None


def test_encoded_pictures_are_png_and_previews_jpeg() -> None:
    assert render.encode_picture(Image.new("RGB", (64, 64), "red")).data[:8] == b"\x89PNG\r\n\x1a\n"
    assert render.encode_preview(Image.new("RGB", (64, 64), "red"))[:2] == b"\xff\xd8"


def test_interaction_tokens_never_reach_the_log() -> None:
    url = "http://127.0.0.1:1/api/v10/webhooks/123/aW50ZXJhY3Rpb24.s3cret/messages/@original"
    text = describe_error(aiohttp.ClientConnectionError(f"Connection timeout to host {url}"))
    assert "s3cret" not in text and "/webhooks/123/<token>/messages/@original" in text
    callback = "/api/v10/interactions/456/aW50ZXJhY3Rpb24.s3cret/callback"
    assert "s3cret" not in describe_error(aiohttp.ClientConnectionError(callback))


def test_a_job_under_review_says_which_images_wait_and_is_a_spoiler() -> None:
    images = ("t0", "t1", "t2", "t3")
    waiting = make_job(images=images, flagged=(1, 3), review=Review.WAITING)
    text = render.final(JobView(waiting))
    assert "🛡️ Images 2, 4 were flagged by the safety checker: blurred until a moderator reviews them." in text
    assert render.is_spoiler(waiting)
    single = make_job(images=("t0",), flagged=(0,), review=Review.WAITING, kind=JobKind.UPSCALE)
    assert "This image was flagged by the safety checker" in render.final(JobView(single))
    released = replace(waiting, review=Review.RELEASED)
    assert "flagged" not in render.final(JobView(released)) and not render.is_spoiler(released)
    removed = replace(waiting, review=Review.REMOVED, hidden_at=datetime.now(UTC))  # a removal takes it down
    assert render.taken_down(JobView(removed)) == "🚫 An image by <@7> was taken down by a moderator."
    assert job_buttons(removed).children == []
    assert len(job_buttons(waiting).children) == 9  # U/V on a held-back tile say why when pressed
