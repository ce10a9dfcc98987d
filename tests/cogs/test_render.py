"""The job message's text and buttons, without Discord: custom_ids, labels, lineage links, the grid file."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from PIL import Image

from cogs import render
from cogs.imagine import CUSTOM_ID, custom_id, defaults_for, job_view, params_of
from imaginebot.params import RequestDefaults, parse
from imaginebot.store_models import Job, JobKind, JobParams, JobStatus, UserSettings


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
        "params": JobParams("a red circle", "", 20, 7.0, "euler_a", 64, 64, (5, 6, 7, 8)),
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
    }
    fields.update(changes)
    return Job(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", ["u", "v", "r", "c", "s", "t"])
@pytest.mark.parametrize("tile", [0, 1, 4])
def test_custom_ids_round_trip_and_fit_discord(action: str, tile: int) -> None:
    job_id = 2**63 - 1  # the largest SQLite rowid: the longest custom_id we can make
    cid = custom_id(action, job_id, tile)
    assert len(cid) <= 100
    match = re.fullmatch(CUSTOM_ID, cid)
    assert match is not None
    assert (match["action"], int(match["job"]), int(match["tile"])) == (action, job_id, tile)


def test_grid_buttons_map_to_their_tiles() -> None:
    view = job_view(
        [("u", 41, t, 0) for t in range(1, 5)] + [("v", 41, t, 1) for t in range(1, 5)] + [("r", 41, 0, 1)]
    )
    labels = {item.item.label or item.item.emoji.name: item.custom_id for item in view.children}  # type: ignore[attr-defined]
    assert labels["U1"] == "ib:u:41:1" and labels["U4"] == "ib:u:41:4"
    assert labels["V3"] == "ib:v:41:3"
    assert labels["🔄"] == "ib:r:41:0"
    assert len(view.children) == 9


def test_lineage_links_back_to_the_parent() -> None:
    parent = make_job()
    child = make_job(id=42, kind=JobKind.VARIATION, parent_id=41, tile_index=2, message_id=301)
    text = render.queued(render.Context(child, parent, "<@7>"), 3)
    assert "Variations of image 3 of https://discord.com/channels/100/200/300" in text
    assert "position 3" in text
    upscale = make_job(id=43, kind=JobKind.UPSCALE, parent_id=41, tile_index=1)
    assert "Upscale of image 2" in render.running(render.Context(upscale, parent, "<@7>"), 5, 20)
    reroll = make_job(id=44, kind=JobKind.REROLL, parent_id=41)
    assert "Re-roll of https://discord.com/channels/100/200/300" in render.done(
        render.Context(reroll, parent, "<@7>"), 2.0
    )


def test_done_text_carries_the_canonical_prompt_seed_and_time() -> None:
    job = make_job()
    text = render.done(render.Context(job, None, "<@7>"), 3.25, "upscaled by a plain resize")
    assert job.prompt_text in text
    assert "seeds 5–8" in text and "3.2 s" in text
    assert "plain resize" in text
    assert parse(job.prompt_text).seed == 5


def test_grid_of_encodes_a_2x2_grid_and_a_single_image() -> None:
    tiles = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue", "white")]
    grid, encoded = render.grid_of(tiles)
    assert grid.width > 128 and grid.height > 128
    assert encoded.data[:8] == b"\x89PNG\r\n\x1a\n"
    single, _ = render.grid_of(tiles[:1])
    assert single.size == (64, 64)


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
    params = params_of(request, 512)
    assert params.steps == 40 and (params.width, params.height) == (704, 384)
    assert params.seeds == request.tile_seeds()
