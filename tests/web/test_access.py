"""Who sees what: no token → 401, a changed or expired one → 403, a student asking for another student's image
→ 403; the token moves from the link into a cookie; files only through the checks (.., encoded slashes,
symlinks, no directory listing); moderators' actions need a moderator's token and the page's form key."""

from __future__ import annotations

import os
import re

from gallerykit import ALICE, BOB, OTHER_GUILD, TEACHER, GalleryKit, form_key, shown_jobs
from yarl import URL

from imaginebot.store import DB_NAME
from imaginebot.web.gallery import COOKIE


async def test_no_token_is_401_a_changed_or_expired_one_403(gallery: GalleryKit) -> None:
    job = await gallery.imagine(ALICE, "a red circle")
    paths = ["/gallery", f"/gallery/jobs/{job.id}", f"/gallery/jobs/{job.id}/grid.png",
             f"/gallery/jobs/{job.id}/thumb.webp", "/gallery/removed", "/gallery/nothing-here"]  # fmt: skip
    for path in paths:
        status, html = await gallery.page(path, None)
        assert status == 401 and "Type /gallery in Discord" in html, path
    token = gallery.teacher()
    payload, signature = token.split(".")
    changed = [
        payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + signature,  # a byte of the viewer
        payload + "." + signature[:-1] + ("A" if signature[-1] != "A" else "B"),  # a byte of the MAC
        gallery.token(ALICE).split(".")[0] + "." + signature,  # a student's viewer, the teacher's MAC
        "garbage",
        token + ".x",
    ]
    for bad in changed:
        for path in paths:
            status, html = await gallery.page(path, bad)
            assert status == 403 and "not a valid gallery link" in html, (bad, path)
    expired = gallery.token(TEACHER, moderator=True, hours=1)
    gallery.clock.advance(hours=1)
    status, html = await gallery.page("/gallery", expired)
    assert status == 403 and "expired" in html and "/gallery in Discord for a new link" in html
    # a token of another server opens that server's gallery, which doesn't hold this image
    other = gallery.token(TEACHER, moderator=True, guild=OTHER_GUILD)
    status, html = await gallery.page(f"/gallery/jobs/{job.id}", other)
    assert status == 404
    status, html = await gallery.page("/gallery", other)
    assert status == 200 and shown_jobs(html) == []


async def test_the_link_puts_its_token_in_a_cookie_and_leaves_the_address_bar(gallery: GalleryKit) -> None:
    token = gallery.token(ALICE)
    answer = await gallery.get("/gallery?q=red", token, allow_redirects=False)
    assert answer.status == 303 and answer.headers["Location"] == "/gallery?q=red"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={token};") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/gallery" in cookie and re.search(r"Max-Age=3[56]\d\d", cookie)
    page = await gallery.client.get("/gallery?q=red")  # the cookie alone
    assert page.status == 200 and "Your images" in await page.text()
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'nonce-" in policy
    assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["X-Frame-Options"] == "DENY"
    assert "private" in page.headers["Cache-Control"]


async def test_a_student_token_opens_only_their_own_images(gallery: GalleryKit) -> None:
    alices = await gallery.imagine(ALICE, "a red circle")
    bobs = await gallery.imagine(BOB, "a blue square")
    bob = gallery.token(BOB)
    for path in [f"/gallery/jobs/{alices.id}", f"/gallery/jobs/{alices.id}/grid.png",
                 f"/gallery/jobs/{alices.id}/tile-1.png", f"/gallery/jobs/{alices.id}/thumb.webp",
                 f"/gallery/students/{ALICE}", f"/gallery?student={ALICE}", "/gallery/removed"]:  # fmt: skip
        status, html = await gallery.page(path, bob)
        assert status == 403, (path, status)
    for path in [f"/gallery/jobs/{bobs.id}", f"/gallery/jobs/{bobs.id}/grid.png", f"/gallery/students/{BOB}"]:
        answer = await gallery.get(path, bob)
        assert answer.status == 200, path
    status, html = await gallery.page("/gallery", gallery.teacher())
    assert shown_jobs(html) == [bobs.id, alices.id]


async def test_files_are_served_only_through_the_checks(gallery: GalleryKit) -> None:
    job = await gallery.imagine(ALICE, "a red circle")
    await gallery.get(
        "/gallery", gallery.teacher()
    )  # a moderator's cookie: every check but the path's passes
    client = gallery.client

    async def status_of(raw_path: str) -> tuple[int, bytes]:
        answer = await client.get(URL(raw_path, encoded=True))  # sent as written, not normalised
        return answer.status, await answer.read()

    secret = (gallery.data_dir / DB_NAME).read_bytes()[:16]  # SQLite's header
    for raw in [
        f"/gallery/jobs/{job.id}/../../imaginebot.db",
        f"/gallery/jobs/{job.id}/..%2F..%2Fimaginebot.db",
        f"/gallery/jobs/{job.id}%2F..%2F..%2Fimaginebot.db",
        f"/gallery/jobs/{job.id}/%2E%2E/%2E%2E/imaginebot.db",
        "/gallery/../imaginebot.db",
        "/gallery/..%2Fimaginebot.db",
        f"/gallery/jobs/{job.id}/tile-0.png",
        f"/gallery/jobs/{job.id}/tile-5.png",
        f"/gallery/jobs/{job.id}/",  # no listing of its folder
        "/gallery/jobs/",
        "/gallery/images/",
        f"/gallery/images/{job.id}/grid.png",
        f"/images/{job.id}/grid.png",
        "/imaginebot.db",
        "/gallery/jobs/99999999999999999999",  # past SQLite's integers
        "/gallery/jobs/99999999999999999999/grid.png",
        "/gallery/students/99999999999999999999",
    ]:
        status, body = await status_of(raw)
        assert status == 404 and secret not in body, (raw, status)
    # a file in the job's folder that links elsewhere is not followed out of the images folder
    tile = gallery.data_dir / job.images[0]
    tile.unlink()
    os.symlink(gallery.data_dir / DB_NAME, tile)
    status, body = await status_of(f"/gallery/jobs/{job.id}/tile-1.png")
    assert status == 404 and secret not in body
    outside = gallery.data_dir.parent / "outside.png"
    outside.write_bytes(b"\x89PNG not the class's")
    (gallery.data_dir / job.grid).unlink()  # type: ignore[operator]
    os.symlink(outside, gallery.data_dir / job.grid)  # type: ignore[operator]
    for path in (f"/gallery/jobs/{job.id}/grid.png", f"/gallery/jobs/{job.id}/thumb.webp"):
        status, body = await status_of(path)
        assert status == 404 and b"class's" not in body, path
    status, _ = await status_of(f"/gallery/jobs/{job.id}/tile-2.png")  # the others still serve
    assert status == 200


async def test_moderators_actions_need_a_moderator_and_the_pages_form_key(gallery: GalleryKit) -> None:
    job = await gallery.imagine(ALICE, "a red circle")
    path = f"/gallery/jobs/{job.id}/take-down"
    teacher = gallery.teacher()
    _, html = await gallery.page("/gallery", teacher)
    key = form_key(html)
    alice = gallery.token(ALICE)
    answer = await gallery.post(path, alice, {"key": gallery.signer.form_key(alice)})
    assert answer.status == 403 and "moderators" in await answer.text()
    for bad in ("", "x" * 32, gallery.signer.form_key(alice)):  # none, made up, another session's
        answer = await gallery.post(path, teacher, {"key": bad})
        assert answer.status == 403 and "out of date" in await answer.text()
    assert not (await gallery.store.get_job(job.id)).hidden  # type: ignore[union-attr]
    answer = await gallery.post(f"/gallery/jobs/{job.id}/melt", teacher, {"key": key})
    assert answer.status == 404
    answer = await gallery.post(path, teacher, {"key": key, "next": "https://evil.example/"})
    assert answer.status == 303 and answer.headers["Location"] == "/gallery"
    assert (await gallery.store.get_job(job.id)).hidden  # type: ignore[union-attr]
