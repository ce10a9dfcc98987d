"""Midjourney's editing tools end to end on the local Discord: Upscale (Subtle/Creative), Zoom Out, Custom
Zoom, Pan, Make Square, Vary (Region), Remix mode, image prompts and --tile, each making the right kind of
picture, charging per image and surviving a restart."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from imaginebot.engine import canvas as cv
from imaginebot.engine.canvas import Direction
from imaginebot.mockdiscord import CommandFile
from imaginebot.params import size_for_aspect
from imaginebot.store_models import EditKind, JobKind, JobStatus

BotFactory = Any
TIMEOUT = 60


def job_id_of(message: Any) -> int:
    return int(next(cid for cid in message.custom_ids if cid.startswith("ib:")).split(":")[2])


def has_picture(message: Any) -> bool:
    """A finished job's message: its picture and its buttons (a preview has only Cancel)."""
    ids = message.custom_ids
    return bool(message.attachments) and bool(ids) and not any(cid.startswith("ib:c:") for cid in ids)


async def imagine(mock: Any, user: Any, prompt: str, **options: Any) -> Any:
    interaction = await mock.send_command("imagine", {"prompt": prompt, **options}, user=user)
    return await mock.wait_for_response(interaction, has_picture, timeout=TIMEOUT)


async def press(mock: Any, message: Any, custom_id: str, user: Any) -> Any:
    interaction = await mock.click(message, custom_id, user=user)
    return await mock.wait_for_response(interaction, has_picture, timeout=TIMEOUT)


async def upscaled(mock: Any, prompt: str, user: Any) -> Any:
    grid = await imagine(mock, user, prompt)
    return await press(mock, grid, f"ib:u:{job_id_of(grid)}:1", user)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


async def refusal(mock: Any, interaction: Any) -> str:
    message = await mock.wait_for_response(interaction, lambda m: m.ephemeral, timeout=TIMEOUT)
    return str(message.content)


async def used(running: Any, mock: Any, user: Any) -> int:
    return int((await running.store.quota_status(mock.guild_id, user.id)).used)


async def test_zoom_out_keeps_the_upscale_in_the_middle_after_a_restart(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    alice = mock_discord.alice
    up_message = await upscaled(mock_discord, "a red circle --seed 3 --steps 4", alice)
    up = await running.store.get_job(job_id_of(up_message))
    await running.stop()
    running = await bot_factory()  # the tools' buttons work after a restart

    zoomed = await press(mock_discord, up_message, f"ib:z:{up.id}:0", alice)
    job = await running.store.get_job(job_id_of(zoomed))
    assert job is not None and job.kind is JobKind.EDIT and job.status is JobStatus.DONE
    assert job.edit is not None and (job.edit.kind, job.edit.factor) == (EditKind.ZOOM, 2.0)
    assert "Zoom Out 2x" in zoomed.content and len(job.images) == 4
    native = running.jobs.catalog.default.native_size
    picture = await running.store.load_image(up.images[0])
    expected = cv.zoom_out(picture, 2.0, (native, native))
    left, top, right, bottom = cv.kept_box(expected.mask) or (0, 0, 0, 0)
    assert (right - left, bottom - top) == (native // 2, native // 2)
    for path in job.images:
        tile = pixels(await running.store.load_image(path))
        assert tile.shape[:2] == (native, native)
        assert np.array_equal(tile[top:bottom, left:right], pixels(expected.image)[top:bottom, left:right])
    assert await used(running, mock_discord, alice) == 4 + 1 + 4  # per image made
    assert zoomed.custom_ids[:4] == [f"ib:u:{job.id}:{t}" for t in range(1, 5)]  # a grid like any other
    rerolled = await press(mock_discord, zoomed, f"ib:r:{job.id}:0", alice)  # 🔄: the same zoom, new seeds
    again = await running.store.get_job(job_id_of(rerolled))
    assert again.kind is JobKind.EDIT and again.edit == job.edit and again.parent_id == up.id
    assert again.spec.seeds != job.spec.seeds and "Zoom Out 2x" in rerolled.content


async def test_pans_keep_the_picture_on_the_far_side_and_chain(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    alice, native = mock_discord.alice, running.jobs.catalog.default.native_size
    up_message = await upscaled(mock_discord, "a blue square --seed 8 --steps 4", alice)
    up = await running.store.get_job(job_id_of(up_message))
    picture = await running.store.load_image(up.images[0])

    panned = await press(mock_discord, up_message, f"ib:w:{up.id}:0", alice)  # ⬅️
    pan = await running.store.get_job(job_id_of(panned))
    assert pan.edit is not None and pan.edit.direction is Direction.LEFT and "Pan ⬅️" in panned.content
    width, height = size_for_aspect((3, 2), native)
    assert (pan.spec.width, pan.spec.height) == (width, height) and "--ar 3:2" in pan.prompt_text
    expected = cv.pan(picture, Direction.LEFT, (width, height))
    left, _, right, _ = cv.kept_box(expected.mask) or (0, 0, 0, 0)
    assert right == width and left > 0  # the picture on the right, the new part on the left
    tile = pixels(await running.store.load_image(pan.images[0]))
    assert tile.shape[:2] == (height, width)
    assert np.array_equal(tile[:, left:], pixels(expected.image)[:, left:])

    # chain: upscale a tile of the pan, pan that down
    again_up = await press(mock_discord, panned, f"ib:u:{pan.id}:2", alice)
    second_up = await running.store.get_job(job_id_of(again_up))
    assert f"ib:q:{second_up.id}:0" in again_up.custom_ids  # not square: Make Square is offered
    down = await press(mock_discord, again_up, f"ib:d:{second_up.id}:0", alice)
    chained = await running.store.get_job(job_id_of(down))
    assert chained.spec.height > chained.spec.width * 2 // 3  # taller than the 3:2 it panned from
    assert "Pan ⬇️" in down.content


async def test_make_square_extends_the_short_side(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory()
    up_message = await upscaled(mock_discord, "a green field --ar 2:1 --steps 4", mock_discord.bob)
    up = await running.store.get_job(job_id_of(up_message))
    squared = await press(mock_discord, up_message, f"ib:q:{up.id}:0", mock_discord.bob)
    job = await running.store.get_job(job_id_of(squared))
    assert job.spec.width == job.spec.height and "Make Square" in squared.content
    picture = await running.store.load_image(up.images[0])
    expected = cv.make_square(picture, (job.spec.width, job.spec.height))
    left, top, right, bottom = cv.kept_box(expected.mask) or (0, 0, 0, 0)
    assert (left, right) == (0, job.spec.width) and top > 0  # extended above and below
    tile = pixels(await running.store.load_image(job.images[0]))
    assert np.array_equal(tile[top:bottom], pixels(expected.image)[top:bottom])


async def test_vary_region_redraws_the_chosen_cells_only(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory()
    alice = mock_discord.alice
    up_message = await upscaled(mock_discord, "a lighthouse --seed 4 --steps 4", alice)
    up = await running.store.get_job(job_id_of(up_message))
    click = await mock_discord.click(up_message, f"ib:g:{up.id}:0", user=alice)
    menu = await mock_discord.wait_for_response(click, lambda m: m.ephemeral, timeout=TIMEOUT)
    assert menu.custom_ids == [f"ib:region:{up.id}"]
    choose = await mock_discord.select(menu, f"ib:region:{up.id}", ["1", "2"], user=alice)
    modal = await mock_discord.wait_for_modal(choose)
    assert modal.title == "Vary (Region)" and modal.field("prompt").value == up.prompt_text
    submit = await mock_discord.submit_modal(modal, {"prompt": "a red boat --steps 4"}, user=alice)
    region = await mock_discord.wait_for_response(submit, has_picture, timeout=TIMEOUT)
    job = await running.store.get_job(job_id_of(region))
    assert job.edit is not None and job.edit.cells == (1, 2) and job.spec.prompt == "a red boat"
    picture = pixels(await running.store.load_image(up.images[0]))
    size = (picture.shape[1], picture.shape[0])
    drawn = np.zeros(picture.shape[:2], dtype=bool)
    for cell in (1, 2):
        x0, y0, x1, y1 = cv.cell_box(size, cell)
        drawn[y0:y1, x0:x1] = True
    for path in job.images:
        tile = pixels(await running.store.load_image(path))
        assert tile.shape == picture.shape
        assert np.array_equal(tile[~drawn], picture[~drawn])  # outside the region: unchanged
        assert np.abs(tile - picture)[drawn].mean() > 2  # inside: redrawn
    assert "Vary (Region) of top left, top" in region.content


async def test_custom_zoom_takes_a_factor_and_an_aspect_ratio(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    bob, native = mock_discord.bob, running.jobs.catalog.default.native_size
    up_message = await upscaled(mock_discord, "a tower --steps 4", bob)
    up = await running.store.get_job(job_id_of(up_message))
    before = await used(running, mock_discord, bob)

    click = await mock_discord.click(up_message, f"ib:m:{up.id}:0", user=bob)
    modal = await mock_discord.wait_for_modal(click)
    assert modal.title == "Custom Zoom" and modal.field("factor").value == "2"
    submit = await mock_discord.submit_modal(modal, {"factor": "2.5"}, user=bob)
    assert "from 1 to 2" in await refusal(mock_discord, submit)
    assert await used(running, mock_discord, bob) == before  # nothing charged

    click = await mock_discord.click(up_message, f"ib:m:{up.id}:0", user=bob)
    modal = await mock_discord.wait_for_modal(click)
    submit = await mock_discord.submit_modal(
        modal, {"factor": "1.5", "prompt": "a tower by the sea --ar 2:1 --steps 4"}, user=bob
    )
    zoomed = await mock_discord.wait_for_response(submit, has_picture, timeout=TIMEOUT)
    job = await running.store.get_job(job_id_of(zoomed))
    assert job.edit is not None and job.edit.factor == 1.5 and job.spec.prompt == "a tower by the sea"
    assert (job.spec.width, job.spec.height) == size_for_aspect((2, 1), native)
    assert "Zoom Out 1.5x" in zoomed.content


async def test_upscale_subtle_and_creative_double_until_the_limit(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory(upscale_max_side=128)
    alice = mock_discord.alice
    up_message = await upscaled(mock_discord, "a moon --steps 4", alice)  # 64 px
    up = await running.store.get_job(job_id_of(up_message))
    subtle = await press(mock_discord, up_message, f"ib:b:{up.id}:0", alice)
    sub = await running.store.get_job(job_id_of(subtle))
    assert sub.kind is JobKind.UPSCALE and sub.spec.strength == 0.2 and "Upscale (Subtle)" in subtle.content
    assert (await running.store.load_image(sub.images[0])).size == (128, 128)
    creative = await mock_discord.click(subtle, f"ib:k:{sub.id}:0", user=alice)
    text = await refusal(mock_discord, creative)
    assert "128×128" in text and "largest upscale" in text


async def test_remix_mode_opens_the_prompt_before_a_variation(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    alice = mock_discord.alice
    settings = await mock_discord.send_command("settings", user=alice)
    panel = await mock_discord.wait_for_response(settings, timeout=TIMEOUT)
    remix = next(c["custom_id"] for c in panel.iter_components() if "Remix" in str(c.get("label")))
    await mock_discord.wait_for_ack(await mock_discord.click(panel, remix, user=alice))
    assert (await running.store.get_settings(alice.id)).remix
    assert "Remix mode **on**" in mock_discord.messages(visible_to=alice)[-1].content

    grid = await imagine(mock_discord, alice, "a cat --steps 4 --seed 1")
    click = await mock_discord.click(grid, f"ib:v:{job_id_of(grid)}:2", user=alice)
    modal = await mock_discord.wait_for_modal(click)
    assert modal.title == "Remix" and modal.field("prompt").value.startswith("a cat --ar 1:1")
    submit = await mock_discord.submit_modal(modal, {"prompt": "a dog --steps 3"}, user=alice)
    varied = await mock_discord.wait_for_response(submit, has_picture, timeout=TIMEOUT)
    job = await running.store.get_job(job_id_of(varied))
    assert job.kind is JobKind.VARIATION and job.tile_index == 1
    assert job.spec.prompt == "a dog" and job.spec.num_inference_steps == 3

    # the filled-in text with a flag appended: the later value wins, as in Midjourney
    click = await mock_discord.click(grid, "ib:r:" + str(job_id_of(grid)) + ":0", user=alice)
    modal = await mock_discord.wait_for_modal(click)
    text = modal.field("prompt").value + " --steps 2 --ar 2:1"
    rerolled = await mock_discord.wait_for_response(
        await mock_discord.submit_modal(modal, {"prompt": text}, user=alice), has_picture, timeout=TIMEOUT
    )
    job = await running.store.get_job(job_id_of(rerolled))
    native = running.jobs.catalog.default.native_size
    assert job.spec.num_inference_steps == 2 and (job.spec.width, job.spec.height) == size_for_aspect(
        (2, 1), native
    )


def png(size: tuple[int, int], colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


async def test_an_image_prompt_starts_the_pictures_and_bad_files_cost_nothing(
    mock_discord: Any, bot_factory: BotFactory
) -> None:
    running = await bot_factory()
    alice = mock_discord.alice
    grid = await imagine(
        mock_discord, alice, "a sunset --iw 2 --steps 4", image=CommandFile("start.png", png((40, 30)))
    )
    job = await running.store.get_job(job_id_of(grid))
    assert job.source is not None and job.spec.strength is not None and job.spec.strength < 0.5
    assert (await running.store.load_image(job.source)).size == (40, 30)
    assert "--iw 2" in job.prompt_text
    native = running.jobs.catalog.default.native_size
    # no --ar: the picture keeps its own shape (4:3); with one, it is cut to that
    assert "--ar 4:3" in job.prompt_text and (job.spec.width, job.spec.height) == size_for_aspect(
        (4, 3), native
    )
    square = await imagine(
        mock_discord, alice, "a sunset --ar 1:1 --steps 4", image=CommandFile("start.png", png((40, 30)))
    )
    job = await running.store.get_job(job_id_of(square))
    assert job.spec.width == job.spec.height
    spent = await used(running, mock_discord, alice)

    bad = [
        ({"image": CommandFile("notes.png", b"not a picture at all")}, "not an image"),
        ({"image": CommandFile("huge.png", png((4100, 4100), "blue"))}, "4096×4096"),
        ({}, "--iw weighs an image prompt"),
    ]
    for options, expected in bad:
        interaction = await mock_discord.send_command(
            "imagine", {"prompt": "a sunset --iw 1", **options}, user=alice
        )
        assert expected in await refusal(mock_discord, interaction)
    assert await used(running, mock_discord, alice) == spent
    sources = list((running.store.data_dir / "sources").iterdir())
    assert len(sources) == 2  # the two grids' pictures; the refused ones were not kept


async def test_tile_reaches_the_engine_and_the_reroll(mock_discord: Any, bot_factory: BotFactory) -> None:
    running = await bot_factory()
    grid = await imagine(mock_discord, mock_discord.alice, "a pattern of leaves --tile --steps 4")
    job = await running.store.get_job(job_id_of(grid))
    assert job.spec.tile and "--tile" in job.prompt_text
    rerolled = await press(mock_discord, grid, f"ib:r:{job.id}:0", mock_discord.alice)
    again = await running.store.get_job(job_id_of(rerolled))
    assert again.spec.tile
