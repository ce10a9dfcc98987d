"""The ``gallery`` fixture: a :class:`gallerykit.GalleryKit` over a real store, job service and web app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine
from gallerykit import CATALOG, FAST, Clock, GalleryKit, RecordingReply

from imaginebot.engine.api import SafetyCheck
from imaginebot.engine.models import ModelSet
from imaginebot.executor import Executor
from imaginebot.jobs import JobService
from imaginebot.store import Store
from imaginebot.web import WebContext, create_app
from imaginebot.web.links import LinkSigner


@pytest.fixture
def checker() -> SafetyCheck | None:
    """The workers' safety checker (none; a test module flags images by overriding this fixture)."""
    return None


@pytest.fixture
async def gallery(
    tmp_path: Path, aiohttp_client: Any, checker: SafetyCheck | None
) -> AsyncIterator[GalleryKit]:
    clock = Clock()
    store = await Store.open(tmp_path, default_daily_images=1000, clock=clock)
    engine = FakeEngine() if checker is None else ModelSet({"shapes": FakeEngine()}, safety=checker)
    executor = Executor(engine, max_queued_per_user=10, preview_every=1)
    await executor.start()
    reply = RecordingReply()
    jobs = JobService(store, executor, catalog=CATALOG, delivery=FAST, preview_min_interval=0.0, clock=clock)
    jobs.reach_messages_with(lambda job: reply)
    signer = LinkSigner(b"k" * 32)
    app = create_app(WebContext(jobs, tmp_path, links=signer, clock=clock, page_size=3))
    client = await aiohttp_client(app)
    try:
        yield GalleryKit(jobs, store, clock, signer, client, reply, tmp_path)
    finally:
        await jobs.close()
        await executor.stop()
        await store.close()
