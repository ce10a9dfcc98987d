"""The moderators' "Needs review" list: what the safety checker flagged waits there, in no listing and
closed to students, until a moderator releases it (then it is shown as any other) or removes it (a
takedown, whose undo puts it back in the list)."""

from __future__ import annotations

import pytest
from fakes import FlagPositions
from gallerykit import ALICE, GUILD, TEACHER, GalleryKit, form_key, shown_jobs

from imaginebot.store_models import Review


@pytest.fixture
def checker() -> FlagPositions:
    return FlagPositions(1)  # image 2 of every grid


async def test_flagged_images_wait_for_a_moderator_who_releases_or_removes_them(gallery: GalleryKit) -> None:
    first = await gallery.imagine(ALICE, "a red circle")
    second = await gallery.imagine(ALICE, "a blue square")
    assert first.flagged == second.flagged == (1,) and first.review is Review.WAITING
    teacher, alice = gallery.teacher(), gallery.token(ALICE)
    for viewer in (teacher, alice):
        _, html = await gallery.page("/gallery", viewer)
        assert shown_jobs(html) == []  # in no listing
    for path in (f"/gallery/jobs/{first.id}", f"/gallery/jobs/{first.id}/tile-2.png"):
        answer = await gallery.get(path, alice)
        assert answer.status == 404 and "moderator" in await answer.text(), path  # closed to its student
    assert (await gallery.get(f"/gallery/jobs/{first.id}/tile-2.png", teacher)).status == 200

    status, html = await gallery.page("/gallery/review", teacher)
    assert status == 200 and shown_jobs(html) == [first.id, second.id]  # oldest first
    assert ">Release</button>" in html and ">Remove</button>" in html
    assert (await gallery.get("/gallery/review", alice)).status == 403

    answer = await gallery.post(f"/gallery/jobs/{first.id}/release", teacher, {"key": form_key(html)})
    assert answer.status == 303
    answer = await gallery.post(f"/gallery/jobs/{second.id}/remove", teacher, {"key": form_key(html)})
    assert answer.status == 303
    _, html = await gallery.page("/gallery/review", teacher)
    assert shown_jobs(html) == []
    _, html = await gallery.page("/gallery", alice)
    assert shown_jobs(html) == [first.id]  # released: shown as any other
    assert (await gallery.get(f"/gallery/jobs/{first.id}/tile-2.png", alice)).status == 200
    _, html = await gallery.page("/gallery/removed", teacher)
    assert shown_jobs(html) == [second.id]  # removed: taken down
    assert [e.action for e in await gallery.store.moderation_log(GUILD)][:3] == [
        "image.take-down",
        "image.remove",
        "image.release",
    ]

    # Undo of the removal: back in the review list, its image still held back
    restored = await gallery.jobs.restore(second.id, guild_id=GUILD, by=TEACHER)
    assert restored.review is Review.WAITING and restored.held_back(1) and not restored.hidden
    _, html = await gallery.page("/gallery/review", teacher)
    assert shown_jobs(html) == [second.id]
    assert (await gallery.get(f"/gallery/jobs/{second.id}/tile-2.png", alice)).status == 404
