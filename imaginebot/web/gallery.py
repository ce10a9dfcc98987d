"""The class gallery's routes: pages rendered on the server, the images behind them, and the moderators'
actions. Everything under ``/gallery`` goes through ``guard`` first: no token → 401, a changed or expired
one → 403 (``imaginebot.web.links``).

A link from ``/gallery`` carries its token as ``?t=``; the first request with it puts the token in a cookie
(HttpOnly, SameSite=Lax, for ``/gallery`` only, until the token expires) and redirects to the same page
without it, so the address bar, and whatever a teacher copies from it, never holds the token. Forms carry a
key derived from the token as well (``LinkSigner.form_key``).

    GET  /gallery                              every image (moderator) or your own (student), with search and
                                               filters: ?q= (words of the prompt) &student= &day=YYYY-MM-DD
                                               &model= &kind= and paging ?before=<id> / ?after=<id>
    GET  /gallery/students/<user id>           a student's own page (Midjourney's Organize)
    GET  /gallery/jobs/<id>                    one image: prompt (copy), seed, model, date, parent, children
    GET  /gallery/jobs/<id>/thumb.webp         its thumbnail (made once, cached on disk)
    GET  /gallery/jobs/<id>/grid.png           its grid; tile-<n>.png: its image n (1-based, as U1–U4)
    POST /gallery/jobs/<id>/<action>           a moderator's action (take-down, restore)
    GET  /gallery/<list>                       a moderators' list (pages.MODERATOR_LISTS: removed)
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from aiohttp import web
from yarl import URL

from imaginebot.errors import ImagineError
from imaginebot.jobs import JobService
from imaginebot.store_gallery import GalleryFilter
from imaginebot.store_models import Job, JobKind, JobStatus
from imaginebot.web import pages
from imaginebot.web.files import Thumbnails, image_file
from imaginebot.web.links import LinkRefused, LinkSigner, Viewer

if TYPE_CHECKING:
    from imaginebot.web.app import WebContext  # which imports this module

COOKIE = "imaginebot_gallery"
VIEWER = web.RequestKey("gallery_viewer", Viewer)
TOKEN = web.RequestKey("gallery_token", str)
NONCE = web.RequestKey("gallery_nonce", str)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "private, no-cache",  # every look goes through the checks again (a takedown is at once)
}


class Refusal(Exception):
    """A page saying why not, with its status: 400 (bad input), 401, 403, 404, 409."""

    def __init__(self, status: int, heading: str, message: str) -> None:
        super().__init__(message)
        self.status, self.heading, self.message = status, heading, message


@dataclass
class GalleryState:
    context: WebContext
    signer: LinkSigner
    thumbnails: Thumbnails

    @property
    def jobs(self) -> JobService:
        return self.context.jobs


GALLERY = web.AppKey("imaginebot_gallery", GalleryState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_gallery(app: web.Application, context: WebContext, signer: LinkSigner) -> None:
    app[GALLERY] = GalleryState(context, signer, Thumbnails(context.data_dir))
    app.middlewares.append(guard)
    job = r"/gallery/jobs/{job_id:\d{1,20}}"
    app.router.add_get("/gallery", every_image)
    app.router.add_get("/gallery/favicon.svg", favicon)
    app.router.add_get(r"/gallery/students/{user_id:\d{1,20}}", student_page)
    app.router.add_get(job, job_page)
    app.router.add_get(job + "/thumb.webp", thumbnail)
    app.router.add_get(job + r"/{name:grid\.png|tile-[1-9]\.png}", image)
    app.router.add_post(job + "/{action:[a-z-]{1,30}}", act)
    for listed in pages.MODERATOR_LISTS:
        app.router.add_get(f"/gallery/{listed.slug}", moderator_list(listed))


def _in_gallery(path: str) -> bool:
    return path == "/gallery" or path.startswith("/gallery/")


# -- who is asking ---------------------------------------------------------------------------------------


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _in_gallery(request.path):
        return await handler(request)
    request[NONCE] = secrets.token_urlsafe(16)
    state = request.app[GALLERY]
    from_link = request.query.get("t")
    token = from_link or request.cookies.get(COOKIE)
    if not token:
        return _refusal_page(
            request,
            Refusal(401, "This gallery opens from a link", "Type /gallery in Discord to get yours."),
        )
    try:
        viewer = state.signer.verify(token, state.context.clock())
    except LinkRefused as error:
        response = _refusal_page(
            request, Refusal(403, str(error), "Type /gallery in Discord for a new link.")
        )
        if not from_link:
            response.del_cookie(COOKIE, path="/gallery")
        return response
    if from_link and request.method in ("GET", "HEAD"):
        # Into the cookie, out of the address bar.
        response = web.Response(
            status=303, headers={"Location": str(request.rel_url.without_query_params("t"))}
        )
        max_age = int((viewer.expires_at - state.context.clock()).total_seconds())
        response.set_cookie(
            COOKIE,
            token,
            max_age=max_age,
            path="/gallery",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
        return _secured(response, request)
    request[VIEWER], request[TOKEN] = viewer, token
    try:
        response = await handler(request)
    except Refusal as refusal:
        return _refusal_page(request, refusal)
    except web.HTTPNotFound:  # no such page (a directory, a file that isn't a job's, a path with ..)
        return _refusal_page(request, Refusal(404, "Not found", "There is nothing here."))
    except web.HTTPMethodNotAllowed:
        return _refusal_page(request, Refusal(405, "Not allowed", "That is not something a link can do."))
    return _secured(response, request)


def _secured(response: web.StreamResponse, request: web.Request) -> web.StreamResponse:
    nonce = request[NONCE]
    response.headers.update(SECURITY_HEADERS)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; img-src 'self'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def _refusal_page(request: web.Request, refusal: Refusal) -> web.StreamResponse:
    viewer = request.get(VIEWER)
    text = _render(request, "error.html", viewer, title=refusal.heading, heading=refusal.heading,
                   message=refusal.message)  # fmt: skip
    return _secured(web.Response(text=text, status=refusal.status, content_type="text/html"), request)


def _render(request: web.Request, template: str, viewer: Viewer | None, **values: Any) -> str:
    expires = pages.when(viewer.expires_at) if viewer is not None else ""
    values.setdefault("tabs", [])
    return pages.render(template, viewer=viewer, nonce=request[NONCE], expires=expires, **values)


def _page(request: web.Request, template: str, **values: Any) -> web.Response:
    viewer = request[VIEWER]
    state = request.app[GALLERY]
    text = _render(request, template, viewer, form_key=state.signer.form_key(request[TOKEN]),
                   here=str(request.rel_url), **values)  # fmt: skip
    return web.Response(text=text, content_type="text/html")


# -- pages -------------------------------------------------------------------------------------------------


MAX_ID = 2**63 - 1  # SQLite's integers (and Discord's snowflakes)


def _int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) > MAX_ID:
        raise Refusal(400, f"'{name}' is not a number", f"{name}= takes a number, like {name}=120.")
    return int(value)


def _path_id(request: web.Request, name: str) -> int:
    value = int(request.match_info[name])  # the route let digits alone through
    if value > MAX_ID:
        raise Refusal(404, "Not found", "There is nothing here.")
    return value


def _filter(request: web.Request, viewer: Viewer, user_id: int | None) -> GalleryFilter:
    """The page's filters from its query; Refusal(400) naming what is wrong and what is allowed."""
    state = request.app[GALLERY]
    query = request.query
    day = None
    if query.get("day"):
        try:
            day = date.fromisoformat(query["day"])
        except ValueError:
            raise Refusal(
                400, "That is not a day", "day= takes a date as YYYY-MM-DD, like 2026-12-04."
            ) from None
    kind = None
    if query.get("kind"):
        try:
            kind = JobKind(query["kind"])
        except ValueError:
            kinds = ", ".join(kind.value for kind in JobKind)
            raise Refusal(400, "No such kind", f"kind= is one of {kinds}.") from None
    model = query.get("model") or None
    names = [m.name for m in state.jobs.catalog.models]
    if model is not None and model not in names:
        raise Refusal(400, "No such model", f"model= is one of {', '.join(names)}.")
    return GalleryFilter(
        viewer.guild_id, words=query.get("q", "")[:200], user_id=user_id, day=day, model=model, kind=kind
    )


async def _listing(
    request: web.Request, wanted: GalleryFilter, *, heading: str, action: str, members: bool
) -> web.Response:
    state, viewer = request.app[GALLERY], request[VIEWER]
    queries = state.jobs.gallery
    models = [m.name for m in state.jobs.catalog.models]
    page = await queries.page(
        wanted,
        before=_int(request, "before"),
        after=_int(request, "after"),
        size=state.context.page_size,
        default_model=models[0] if models else "",
    )
    now = state.context.clock()
    actions = (pages.TAKE_DOWN,) if viewer.moderator else ()
    url = URL(action).with_query({k: v for k, v in request.query.items() if k not in ("before", "after")})
    filtered = any(request.query.get(k) for k in ("q", "student", "day", "model", "kind"))
    return _page(
        request,
        "list.html",
        title=heading,
        heading=heading,
        explain="",
        tabs=_tabs(request, ""),
        action=action,
        filters=wanted,
        filtered=filtered,
        members=await queries.members(viewer.guild_id) if members else [],
        models=models,
        kinds=[(kind.value, label) for kind, label in pages.KIND_LABELS.items()],
        cards=await pages.cards(queries, viewer.guild_id, page.jobs, now, actions),
        newer_url=str(url.update_query(after=page.newer)) if page.newer else None,
        older_url=str(url.update_query(before=page.older)) if page.older else None,
        empty="No images match." if filtered else "No images yet: they appear here as /imagine makes them.",
    )


def _tabs(request: web.Request, current: str) -> list[pages.Tab]:
    return pages.tabs(current, {}) if request[VIEWER].moderator else []


async def every_image(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    if not viewer.moderator:
        if _int(request, "student") not in (None, viewer.user_id):
            raise Refusal(403, "Not yours", "Your link opens only your own images.")
        return await _listing(
            request, _filter(request, viewer, viewer.user_id), heading="Your images", action="/gallery",
            members=False,
        )  # fmt: skip
    wanted = _filter(request, viewer, _int(request, "student"))
    return await _listing(request, wanted, heading="Every image", action="/gallery", members=True)


async def student_page(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    user_id = _path_id(request, "user_id")
    if not viewer.moderator and user_id != viewer.user_id:
        raise Refusal(403, "Not yours", "Your link opens only your own images.")
    names = await request.app[GALLERY].jobs.gallery.names(viewer.guild_id, [user_id])
    heading = "Your images" if user_id == viewer.user_id else f"{pages.name_of(names, user_id)}'s images"
    return await _listing(
        request, _filter(request, viewer, user_id), heading=heading, action=request.path, members=False
    )


async def _visible_job(request: web.Request) -> Job:
    """The job in the URL, if this viewer may look at it: 404 when the server has no such image (or a student
    asks for one taken down), 403 when it is another student's."""
    state, viewer = request.app[GALLERY], request[VIEWER]
    job = await state.jobs.store.get_job(_path_id(request, "job_id"))
    if job is None or job.guild_id != viewer.guild_id or job.status is not JobStatus.DONE:
        raise Refusal(404, "No such image", "There is no such image in this server's gallery.")
    if not viewer.may_see(job):
        raise Refusal(403, "Not yours", "This is another student's image: your link opens only your own.")
    if job.hidden and not viewer.moderator:
        raise Refusal(404, "No such image", "This image was taken down by a moderator.")
    if not viewer.moderator and any(job.held_back(tile) for tile in job.flagged):
        raise Refusal(404, "Waiting for a moderator", "The safety checker flagged this image: a moderator "
                      "looks at it before it can be shown.")  # fmt: skip
    return job


async def job_page(request: web.Request) -> web.Response:
    state, viewer = request.app[GALLERY], request[VIEWER]
    job = await _visible_job(request)
    queries, now = state.jobs.gallery, state.context.clock()

    def shown(other: Job) -> bool:
        return viewer.may_see(other) and (viewer.moderator or not other.hidden)

    parent = await state.jobs.store.get_job(job.parent_id) if job.parent_id is not None else None
    children = [child for child in await queries.children(job.id) if shown(child)]
    family = [job, *children] + ([parent] if parent is not None and shown(parent) else [])
    actions = (pages.TAKE_DOWN, pages.UNDO) if viewer.moderator else ()
    card, *rest = await pages.cards(queries, viewer.guild_id, family, now, actions)
    seeds = job.spec.seeds
    models = state.jobs.catalog.models
    return _page(
        request,
        "job.html",
        title=job.spec.prompt[:80],
        tabs=_tabs(request, ""),
        job=job,
        c=card,
        main_file="grid.png" if job.grid else "tile-1.png",
        tiles=len(job.images) if job.grid else 0,
        what=card.what,
        seeds=", ".join(map(str, seeds)),
        model=job.spec.model or (models[0].name if models else "the default model"),
        children=rest[: len(children)],
        parent=rest[len(children)] if len(rest) > len(children) else None,
        parent_hidden=parent is not None and not shown(parent),
    )


def moderator_list(listed: pages.ModeratorList) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        state, viewer = request.app[GALLERY], request[VIEWER]
        if not viewer.moderator:
            raise Refusal(403, "Moderators only", "This page is for the server's moderators.")
        queries = state.jobs.gallery
        jobs = await listed.load(queries, viewer.guild_id)
        cards = await pages.cards(queries, viewer.guild_id, jobs, state.context.clock(), listed.actions)
        return _page(
            request, "list.html", title=listed.title, heading=listed.title, explain=listed.explain,
            tabs=_tabs(request, listed.slug), filters=None, cards=cards, newer_url=None, older_url=None,
            empty=listed.empty,
        )  # fmt: skip

    return handler


# -- files -------------------------------------------------------------------------------------------------

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
    'fill="#7c8cff"/><path d="M3 12l3-4 2 2 3-4 2 6z" fill="#fff"/></svg>'
)


async def favicon(request: web.Request) -> web.Response:
    return web.Response(text=FAVICON, content_type="image/svg+xml")


async def thumbnail(request: web.Request) -> web.StreamResponse:
    job = await _visible_job(request)
    path = await request.app[GALLERY].thumbnails.path(job)
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": "image/webp"})


async def image(request: web.Request) -> web.StreamResponse:
    job = await _visible_job(request)
    data_dir = request.app[GALLERY].context.data_dir
    path = image_file(data_dir, job, request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": "image/png"})


# -- moderators' actions -----------------------------------------------------------------------------------

Action = Callable[[JobService, int, Viewer], Awaitable[Job]]
ACTIONS: dict[str, Action] = {
    pages.TAKE_DOWN.path: lambda jobs, job_id, v: jobs.take_down(job_id, guild_id=v.guild_id, by=v.user_id),
    pages.UNDO.path: lambda jobs, job_id, v: jobs.restore(job_id, guild_id=v.guild_id, by=v.user_id),
    pages.RELEASE.path: lambda jobs, job_id, v: jobs.reviews.release(v.guild_id, job_id, by=v.user_id),
    pages.REMOVE.path: lambda jobs, job_id, v: jobs.reviews.remove(v.guild_id, job_id, by=v.user_id),
}


async def act(request: web.Request) -> web.StreamResponse:
    state, viewer = request.app[GALLERY], request[VIEWER]
    run = ACTIONS.get(request.match_info["action"])
    if run is None:
        raise web.HTTPNotFound()
    if not viewer.moderator:
        raise Refusal(403, "Moderators only", "Only the server's moderators can do that.")
    form = await request.post()
    key = str(form.get("key", ""))
    if not hmac.compare_digest(key, state.signer.form_key(request[TOKEN])):
        raise Refusal(403, "This form is out of date", "Reload the page and try again.")
    try:
        await run(state.jobs, _path_id(request, "job_id"), viewer)
    except ImagineError as error:
        raise Refusal(409, "That didn't work", str(error)) from None
    back = str(form.get("next", ""))
    if not _in_gallery(back.split("?")[0]) or back.startswith("//"):
        back = "/gallery"
    raise web.HTTPSeeOther(back)
