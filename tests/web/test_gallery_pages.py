"""The gallery's pages through aiohttp's test client: every image newest first with names, paging, search
by the words of a prompt, the filters, a student's own page, a job's page with its family, thumbnails made
once."""

from __future__ import annotations

import asyncio
import re

from gallerykit import ALICE, BOB, GalleryKit, shown_jobs

from imaginebot.actions import Action
from imaginebot.jobs import Origin
from imaginebot.store_gallery import thumbnail_of
from imaginebot.web.gallery import GALLERY


async def test_every_image_newest_first_with_names_then_older_and_newer_pages(gallery: GalleryKit) -> None:
    made = [
        await gallery.imagine(user, f"a red circle number {i}")
        for i, user in enumerate([ALICE, BOB, ALICE, BOB, ALICE])
    ]
    ids = [job.id for job in made][::-1]  # newest first
    status, html = await gallery.page("/gallery", gallery.teacher())
    assert status == 200
    assert shown_jobs(html) == ids[:3]  # a page holds 3 here
    assert ">Alice</a>" in html and ">Bob</a>" in html and "Every image" in html
    older = re.search(r'href="([^"]+)" rel="next"', html)
    assert older and f"before={ids[2]}" in older[1]
    status, html = await gallery.page(older[1].replace("&amp;", "&"), gallery.teacher())
    assert shown_jobs(html) == ids[3:] and 'rel="next"' not in html
    newer = re.search(r'href="([^"]+)" rel="prev"', html)
    assert newer and f"after={ids[3]}" in newer[1]
    status, html = await gallery.page(newer[1].replace("&amp;", "&"), gallery.teacher())
    assert shown_jobs(html) == ids[:3]  # back to the first page, whole
    assert 'rel="prev"' not in html


async def test_search_finds_images_by_the_words_of_their_prompt(gallery: GalleryKit) -> None:
    red = await gallery.imagine(ALICE, "a red circle on a blue background")
    squares = await gallery.imagine(BOB, "two green squares")
    green = await gallery.imagine(BOB, "a green circle --no red")
    teacher = gallery.teacher()

    async def search(words: str) -> list[int]:
        status, html = await gallery.page(f"/gallery?q={words}", teacher)
        assert status == 200, html
        return shown_jobs(html)

    assert await search("circle") == [green.id, red.id]
    assert await search("circles") == [green.id, red.id]  # stemmed, as the prompts are
    assert await search("square") == [squares.id]
    assert await search("green+circle") == [green.id]  # every word
    assert await search("RED") == [red.id]  # the negative prompt is not searched
    assert await search("otter") == []
    # FTS5's own syntax typed in the box is only text: no error, no injection
    everything = [green.id, squares.id, red.id]
    for odd, expected in [
        ("%22", everything),  # no word at all: no search
        ("circle*", [green.id, red.id]),
        ("NEAR(circle", []),
        ("-red", [red.id]),
        ("prompt:red", []),
        ("%22%29%20OR%20%28%22", []),
        ("AND", []),
    ]:
        assert await search(odd) == expected, odd


async def test_filters_by_student_day_model_and_kind(gallery: GalleryKit) -> None:
    first = await gallery.imagine(ALICE, "a red circle")
    gallery.clock.advance(days=1)
    turbo = await gallery.imagine(BOB, "a blue square --model turbo")
    grid = await gallery.imagine(ALICE, "a green star")
    upscale = await gallery.jobs.act(
        Origin(ALICE, 10, 20, 900, "Alice"), Action.UPSCALE, grid.id, 2, gallery.reply
    )
    upscale = await gallery.finished(upscale.id)
    teacher = gallery.teacher()

    async def shown(query: str) -> list[int]:
        status, html = await gallery.page(f"/gallery?{query}", teacher)
        assert status == 200, html
        return shown_jobs(html)

    assert await shown(f"student={ALICE}") == [upscale.id, grid.id, first.id]
    assert await shown(f"student={BOB}") == [turbo.id]
    assert await shown("day=2026-12-04") == [first.id]
    assert await shown("day=2026-12-05") == [upscale.id, grid.id, turbo.id]
    assert await shown("model=turbo") == [turbo.id]
    assert await shown("model=shapes") == [upscale.id, grid.id, first.id]
    assert await shown("kind=upscale") == [upscale.id]
    assert await shown(f"kind=imagine&student={ALICE}&day=2026-12-05") == [grid.id]
    _, html = await gallery.page("/gallery", teacher)
    assert f'<option value="{BOB}">Bob</option>' in html
    _, html = await gallery.page(f"/gallery?day=2026-12-05&student={BOB}", teacher)
    assert 'name="day" value="2026-12-05"' in html and f'<option value="{BOB}" selected>Bob</option>' in html


async def test_bad_filters_say_what_is_wrong_and_what_is_allowed(gallery: GalleryKit) -> None:
    teacher = gallery.teacher()
    for query, words in [
        ("day=yesterday", "YYYY-MM-DD"),
        ("kind=movie", "imagine, variation, upscale, reroll, edit"),
        ("model=sdxl", "shapes, turbo"),
        ("before=abc", "before= takes a number"),
        ("student=me", "student= takes a number"),
        ("before=99999999999999999999", "before= takes a number"),
    ]:
        status, html = await gallery.page(f"/gallery?{query}", teacher)
        assert status == 400 and words in html, (query, html)


async def test_a_students_own_page_shows_only_their_images(gallery: GalleryKit) -> None:
    mine = [await gallery.imagine(ALICE, "a red circle"), await gallery.imagine(ALICE, "a red square")]
    await gallery.imagine(BOB, "a red star")
    alice = gallery.token(ALICE)
    status, html = await gallery.page("/gallery", alice)
    assert status == 200 and "Your images" in html
    assert shown_jobs(html) == [mine[1].id, mine[0].id]
    assert "Take down" not in html and 'name="student"' not in html  # no moderation, no other students
    status, html = await gallery.page("/gallery?q=red", alice)
    assert shown_jobs(html) == [mine[1].id, mine[0].id]  # search stays within her own
    status, html = await gallery.page(f"/gallery/students/{ALICE}", alice)
    assert status == 200 and shown_jobs(html) == [mine[1].id, mine[0].id]
    # a moderator sees her page with her name
    status, html = await gallery.page(f"/gallery/students/{ALICE}", gallery.teacher())
    assert status == 200 and "Alice&#39;s images" in html and shown_jobs(html) == [mine[1].id, mine[0].id]


async def test_a_jobs_page_shows_prompt_seed_model_date_and_its_family(gallery: GalleryKit) -> None:
    grid = await gallery.imagine(ALICE, "a red circle --seed 40")
    click = Origin(BOB, 10, 20, 901, "Bob")
    upscale = await gallery.finished(
        (await gallery.jobs.act(click, Action.UPSCALE, grid.id, 3, gallery.reply)).id
    )
    status, html = await gallery.page(f"/gallery/jobs/{grid.id}", gallery.teacher())
    assert status == 200
    assert f'<code id="prompt">{grid.prompt_text}</code>' in html and 'data-copy="prompt"' in html
    assert "40, 41, 42, 43" in html and "shapes" in html and "04 Dec 2026, 09:00 UTC" in html
    assert f'href="/gallery/jobs/{upscale.id}"' in html and "Upscale of image 3 by Bob" in html
    assert all(f'href="/gallery/jobs/{grid.id}/tile-{n}.png"' in html for n in range(1, 5))
    status, html = await gallery.page(f"/gallery/jobs/{upscale.id}", gallery.teacher())
    assert "Made from" in html and f'href="/gallery/jobs/{grid.id}"' in html
    assert 'src="/gallery/jobs/' in html and "tile-1.png" in html  # an upscale is one image
    # Alice sees her grid, but not that Bob's upscale of it exists; Bob sees his upscale but not her grid
    status, html = await gallery.page(f"/gallery/jobs/{grid.id}", gallery.token(ALICE))
    assert status == 200 and f"/gallery/jobs/{upscale.id}" not in html
    status, html = await gallery.page(f"/gallery/jobs/{upscale.id}", gallery.token(BOB))
    assert status == 200 and "an image you can't see here" in html


async def test_thumbnails_are_webp_made_once_and_kept_on_disk(gallery: GalleryKit) -> None:
    job = await gallery.imagine(ALICE, "a red circle")
    thumbnails = gallery.client.app[GALLERY].thumbnails
    await gallery.get("/gallery", gallery.teacher())  # the cookie
    path = f"/gallery/jobs/{job.id}/thumb.webp"
    answers = await asyncio.gather(*(gallery.client.get(path) for _ in range(4)))
    bodies = [await answer.read() for answer in answers]
    assert all(a.status == 200 and a.content_type == "image/webp" for a in answers)
    assert bodies[0][:4] == b"RIFF" and bodies[0][8:12] == b"WEBP" and len(set(bodies)) == 1
    assert thumbnails.made == 1 and (gallery.data_dir / thumbnail_of(job.id)).is_file()
    again = await gallery.get(path, gallery.token(ALICE))
    assert again.status == 200 and await again.read() == bodies[0] and thumbnails.made == 1
    grid = await gallery.get(f"/gallery/jobs/{job.id}/grid.png", gallery.token(ALICE))
    assert grid.status == 200 and (await grid.read())[:4] == b"\x89PNG"
