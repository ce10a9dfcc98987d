"""What the gallery's tests share (the ``gallery`` fixture is in conftest.py): the gallery served by aiohttp's
test client, over a real store whose jobs the real job service made (with the fake engine of tests/fakes.py:
solid-colour tiles), a scripted delivery port, and a clock the test moves.

``await kit.imagine(ALICE, "a red circle")`` makes a done job; ``await kit.get(path, kit.token(ALICE))``
opens a page as a link would (a fresh cookie jar each time, so one viewer never rides on another's cookie)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imaginebot.catalog import Catalog, ModelInfo
from imaginebot.delivery import DeliveryPolicy, JobView, Posted, Update
from imaginebot.jobs import JobService, Origin
from imaginebot.params import RequestDefaults
from imaginebot.store import Store
from imaginebot.store_models import Job, JobStatus
from imaginebot.web.links import LinkSigner, Viewer

GUILD, OTHER_GUILD = 10, 11
ALICE, BOB, TEACHER = 1, 2, 3
NAMES = {ALICE: "Alice", BOB: "Bob", TEACHER: "Ms. Teacher"}
START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
FAST = DeliveryPolicy(retry_base_s=0.001, retry_max_s=0.01, attempt_timeout_s=5.0)
CATALOG = Catalog(
    (
        ModelInfo("shapes", "", 64, RequestDefaults(steps=2, cfg=7.0, images=4, model="shapes")),
        ModelInfo("turbo", "", 64, RequestDefaults(steps=1, cfg=0.0, images=4, model="turbo")),
    )
)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class RecordingReply:
    """The delivery port, recording: every job's final state delivered, every takedown notice."""

    delivered: list[JobView] = field(default_factory=list)
    withdrawn: list[JobView] = field(default_factory=list)

    async def show(self, view: JobView, update: Update) -> None:
        pass

    async def deliver(self, view: JobView) -> Posted | None:
        self.delivered.append(view)
        return None

    async def withdraw(self, view: JobView) -> None:
        self.withdrawn.append(view)


@dataclass
class GalleryKit:
    jobs: JobService
    store: Store
    clock: Clock
    signer: LinkSigner
    client: Any  # aiohttp's TestClient
    reply: RecordingReply
    data_dir: Path
    messages: int = 500

    def token(self, user_id: int, *, moderator: bool = False, guild: int = GUILD, hours: float = 1) -> str:
        expires = (self.clock() + timedelta(hours=hours)).replace(microsecond=0)
        return self.signer.sign(Viewer(guild, user_id, moderator, expires))

    def teacher(self) -> str:
        return self.token(TEACHER, moderator=True)

    async def imagine(self, user_id: int, prompt: str, *, guild: int = GUILD) -> Job:
        self.messages += 1
        origin = Origin(user_id, guild, 20, self.messages, name=NAMES.get(user_id, ""))
        job = await self.jobs.imagine(origin, prompt, self.reply)
        return await self.finished(job.id)

    async def finished(self, job_id: int) -> Job:
        await self.jobs.idle()
        job = await self.store.get_job(job_id)
        assert job is not None and job.status is JobStatus.DONE, job
        return job

    async def get(self, path: str, token: str | None = None, **options: Any) -> Any:
        """GET ``path`` as the holder of ``token`` (None: nobody) would: the link's ?t=, its redirect and
        cookie, and the page."""
        self.client.session.cookie_jar.clear()
        if token is not None:
            path += ("&" if "?" in path else "?") + f"t={token}"
        return await self.client.get(path, **options)

    async def post(self, path: str, token: str, data: dict[str, str]) -> Any:
        await self.get("/gallery", token)  # the cookie, as a page opened from the link has it
        return await self.client.post(path, data=data, allow_redirects=False)

    async def page(self, path: str, token: str | None) -> tuple[int, str]:
        response = await self.get(path, token)
        return response.status, await response.text()


def shown_jobs(html: str) -> list[int]:
    """The jobs a page shows as cards, in order."""
    return [int(found) for found in re.findall(r'<article class="card" data-job="(\d+)"', html)]


def form_key(html: str) -> str:
    found = re.search(r'name="key" value="([^"]+)"', html)
    assert found, html[:2000]
    return found[1]
