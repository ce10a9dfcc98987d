"""Taking an image down from the gallery: gone from every page at once, its message withdrawn through the
delivery port, the action in the moderation log, listed under "Taken down" with Undo for a day."""

from __future__ import annotations

from gallerykit import ALICE, GUILD, TEACHER, GalleryKit, form_key, shown_jobs
from waiting import until


async def test_take_down_hides_at_once_withdraws_the_message_logs_it_and_undo_brings_it_back(
    gallery: GalleryKit,
) -> None:
    kept = await gallery.imagine(ALICE, "a red circle")
    job = await gallery.imagine(ALICE, "a rude circle")
    teacher, alice = gallery.teacher(), gallery.token(ALICE)
    await gallery.jobs.remember_name(GUILD, TEACHER, "Ms. Teacher")  # as her /gallery did
    _, html = await gallery.page("/gallery", teacher)
    assert shown_jobs(html) == [job.id, kept.id]
    delivered_before = len(gallery.reply.delivered)

    answer = await gallery.post(
        f"/gallery/jobs/{job.id}/take-down", teacher, {"key": form_key(html), "next": "/gallery?q=circle"}
    )
    assert answer.status == 303 and answer.headers["Location"] == "/gallery?q=circle"
    for path in ("/gallery", "/gallery?q=rude", f"/gallery/students/{ALICE}"):
        _, html = await gallery.page(path, teacher)
        assert job.id not in shown_jobs(html), path
    for path in (
        f"/gallery/jobs/{job.id}",
        f"/gallery/jobs/{job.id}/grid.png",
        f"/gallery/jobs/{job.id}/thumb.webp",
    ):
        answer = await gallery.get(path, alice)
        assert answer.status == 404, path  # gone for its student too
    await until(
        lambda: bool(gallery.reply.withdrawn),
        "the notice in its message",
        timeout=30,
        seen=lambda: [view.job.id for view in gallery.reply.withdrawn],
    )
    withdrawn = gallery.reply.withdrawn[0].job
    assert withdrawn.id == job.id and withdrawn.hidden and withdrawn.hidden_by == TEACHER
    (entry,) = await gallery.store.moderation_log(GUILD)
    assert (entry.action, entry.actor_id, entry.target_id, entry.detail) == (
        "image.take-down", TEACHER, ALICE, f"job {job.id}"
    )  # fmt: skip

    # the moderator still sees it, under "Taken down", with Undo
    status, html = await gallery.page("/gallery/removed", teacher)
    assert status == 200 and shown_jobs(html) == [job.id]
    assert "Taken down by Ms. Teacher, 04 Dec 2026, 09:00 UTC" in html and ">Undo</button>" in html
    assert (await gallery.get(f"/gallery/jobs/{job.id}/grid.png", teacher)).status == 200
    answer = await gallery.post(f"/gallery/jobs/{job.id}/restore", teacher, {"key": form_key(html)})
    assert answer.status == 303
    _, html = await gallery.page("/gallery", teacher)
    assert shown_jobs(html) == [job.id, kept.id]
    await gallery.jobs.idle()
    (again,) = gallery.reply.delivered[delivered_before:]  # the grid back in its message
    assert again.job.id == job.id and not again.job.hidden and again.picture is not None
    assert [a.action for a in await gallery.store.moderation_log(GUILD)] == [
        "image.restore",
        "image.take-down",
    ]


async def test_undo_is_offered_for_a_day_only(gallery: GalleryKit) -> None:
    job = await gallery.imagine(ALICE, "a red circle")
    await gallery.jobs.take_down(job.id, guild_id=GUILD, by=TEACHER)
    gallery.clock.advance(hours=23, minutes=59)
    _, html = await gallery.page("/gallery/removed", gallery.token(TEACHER, moderator=True))
    assert ">Undo</button>" in html
    gallery.clock.advance(minutes=1)
    teacher = gallery.token(TEACHER, moderator=True)
    _, html = await gallery.page("/gallery/removed", teacher)
    assert shown_jobs(html) == [job.id] and ">Undo</button>" not in html
    key = gallery.signer.form_key(teacher)  # as an old page of the list still holds it
    answer = await gallery.post(f"/gallery/jobs/{job.id}/restore", teacher, {"key": key})
    assert answer.status == 409 and "more than a day ago" in await answer.text()
    assert await gallery.jobs.takedowns.purge() == 1
    _, html = await gallery.page("/gallery/removed", teacher)
    assert "deleted from disk" in html and shown_jobs(html) == [job.id]
    answer = await gallery.get(f"/gallery/jobs/{job.id}/grid.png", teacher)
    assert answer.status == 404
