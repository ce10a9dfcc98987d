"""What the gallery's pages show: cards of jobs, the moderators' lists and their actions, and the templates
(Jinja2, autoescaped; ``imaginebot/web/templates``). No request handling here (that is ``gallery.py``).

The moderators' lists are a table, ``MODERATOR_LISTS``: each names its page, what it lists and the actions
each card offers: "Needs review" (what the safety checker flagged: Release, or Remove, which is a takedown)
and "Taken down" (Undo, for a day).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2

from imaginebot.store_gallery import GalleryQueries, picture_size
from imaginebot.store_models import Job, JobKind, Review
from imaginebot.takedowns import UNDO_WINDOW

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("imaginebot.web", "templates"),
    autoescape=True,  # every value is text to show, never markup
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

KIND_LABELS = {
    JobKind.IMAGINE: "Grid",
    JobKind.VARIATION: "Variations",
    JobKind.REROLL: "Re-roll",
    JobKind.UPSCALE: "Upscale",
    JobKind.EDIT: "Edit",
}


def render(template: str, **values: Any) -> str:
    return TEMPLATES.get_template(template).render(**values)


def when(moment: datetime) -> str:
    return moment.strftime("%d %b %Y, %H:%M UTC")


# -- actions on a card, and the moderators' lists ------------------------------------------------------------


@dataclass(frozen=True)
class CardAction:
    """A button on a card: a form posted to ``/gallery/jobs/<id>/<path>`` (``gallery.ACTIONS`` runs it)."""

    label: str
    path: str
    danger: bool = False
    applies: Callable[[Job, datetime], bool] = lambda job, now: True


TAKE_DOWN = CardAction("Take down", "take-down", danger=True, applies=lambda job, now: not job.hidden)
UNDO = CardAction(
    "Undo",
    "restore",
    applies=lambda job, now: (
        job.hidden_at is not None and job.purged_at is None and now - job.hidden_at < UNDO_WINDOW
    ),
)

RELEASE = CardAction("Release", "release", applies=lambda job, now: job.review is Review.WAITING)
REMOVE = CardAction("Remove", "remove", danger=True, applies=lambda job, now: job.review is Review.WAITING)


@dataclass(frozen=True)
class ModeratorList:
    """A moderators' page at ``/gallery/<slug>``: some jobs of the server, each with these actions."""

    slug: str
    title: str
    explain: str
    load: Callable[[GalleryQueries, int], Awaitable[list[Job]]]
    actions: tuple[CardAction, ...]
    empty: str


MODERATOR_LISTS: tuple[ModeratorList, ...] = (
    ModeratorList(
        "review",
        "Needs review",
        "Images the safety checker flagged: posted blurred, as a spoiler, and in no listing until you "
        "decide. Release shows them as any other; Remove takes them down (Undo brings them back here, for a "
        "day).",
        lambda queries, guild_id: queries.store.waiting_for_review(guild_id),
        (RELEASE, REMOVE),
        "Nothing waits for a review.",
    ),
    ModeratorList(
        "removed",
        "Taken down",
        "Hidden from the gallery and from Discord. Undo brings an image back within a day of its takedown; "
        "after that its files are deleted from disk.",
        lambda queries, guild_id: queries.taken_down(guild_id),
        (UNDO,),
        "Nothing has been taken down.",
    ),
)


@dataclass(frozen=True)
class Tab:
    title: str
    url: str
    on: bool = False
    count: int = 0


def tabs(current: str, counts: dict[str, int]) -> list[Tab]:
    """The moderators' tabs: every image, then each list (with how many it holds, where that is asked)."""
    return [
        Tab("All images", "/gallery", on=current == ""),
        *(Tab(m.title, f"/gallery/{m.slug}", on=current == m.slug, count=counts.get(m.slug, 0)) for m in
          MODERATOR_LISTS),
    ]  # fmt: skip


# -- cards -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    job: Job
    author: str
    made: str
    kind: str
    what: str  # "Upscale of image 2", for the family of a job
    size: tuple[int, int]
    has_picture: bool
    status: str  # "Taken down by …" for moderators
    actions: tuple[CardAction, ...]


def describe(job: Job) -> str:
    tile = (job.tile_index or 0) + 1
    match job.kind:
        case JobKind.VARIATION:
            return f"Variations of image {tile}"
        case JobKind.UPSCALE:
            return f"Upscale of image {tile}"
        case JobKind.REROLL:
            return "Re-roll"
        case JobKind.EDIT:
            return "Edit of an upscale"
        case _:
            return "Grid"


def name_of(names: dict[int, str], user_id: int) -> str:
    return names.get(user_id) or f"user {user_id}"  # seen before the bot remembered names


def card(
    job: Job,
    names: dict[int, str],
    now: datetime,
    actions: tuple[CardAction, ...] = (),
) -> Card:
    status = ""
    if job.hidden_at is not None:
        by = name_of(names, job.hidden_by) if job.hidden_by is not None else "a moderator"
        status = f"Taken down by {by}, {when(job.hidden_at)}"
        if job.purged_at is not None:
            status += "; deleted from disk"
    return Card(
        job=job,
        author=name_of(names, job.user_id),
        made=when(job.created_at),
        kind=KIND_LABELS[job.kind],
        what=describe(job),
        size=picture_size(job),
        has_picture=job.purged_at is None,
        status=status,
        actions=tuple(action for action in actions if action.applies(job, now)),
    )


async def cards(
    queries: GalleryQueries,
    guild_id: int,
    jobs: list[Job] | tuple[Job, ...],
    now: datetime,
    actions: tuple[CardAction, ...] = (),
) -> list[Card]:
    people = {job.user_id for job in jobs} | {job.hidden_by for job in jobs if job.hidden_by is not None}
    names = await queries.names(guild_id, people)
    return [card(job, names, now, actions) for job in jobs]
