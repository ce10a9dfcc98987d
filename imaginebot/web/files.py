"""The gallery's files: a job's images, found through its row (never through a path from the request), and its
thumbnail, made once as WebP and cached on disk (``<data_dir>/thumbs/<job id>.webp``).

A file is served only when, with every symlink followed, it is a regular file inside ``<data_dir>/images``
(``<data_dir>/thumbs`` for thumbnails): a planted link or a ``..`` in a stored path leads nowhere.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from PIL import Image

from imaginebot.store_gallery import thumbnail_of
from imaginebot.store_models import Job

THUMB_SIDE = 384  # px: sharp on a 2x screen at the gallery's card width
THUMB_QUALITY = 80


def contained(root: Path, path: Path) -> Path | None:
    """``path`` with its links followed, when that is a regular file under ``root``; else None."""
    try:
        real = path.resolve(strict=True)
        base = root.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links
        return None
    return real if real.is_relative_to(base) and real.is_file() else None


def image_file(data_dir: Path, job: Job, name: str) -> Path | None:
    """One of ``job``'s files by its name in the gallery's URLs: ``grid.png`` or ``tile-<n>.png`` (1-based,
    as U1-U4), or the single image of an upscale or edit as ``tile-1.png``. None when it has no such file."""
    relative: str | None = None
    if name == "grid.png":
        relative = job.grid
    elif name.startswith("tile-") and name.endswith(".png") and name[5:-4].isdigit():
        index = int(name[5:-4]) - 1
        relative = job.images[index] if 0 <= index < len(job.images) else None
    if relative is None:
        return None
    return contained(data_dir / "images", data_dir / relative)


def main_picture(data_dir: Path, job: Job) -> Path | None:
    """What stands for the job in the gallery: its grid, or its one image."""
    return image_file(data_dir, job, "grid.png" if job.grid else "tile-1.png")


def _make_thumbnail(source: Path, target: Path) -> None:
    with Image.open(source) as image:
        image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
        thumb = image.convert("RGB")
    target.parent.mkdir(parents=True, exist_ok=True)
    # written aside and renamed, so that a reader never gets half a file
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        thumb.save(tmp, "WEBP", quality=THUMB_QUALITY, method=4)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class Thumbnails:
    """Each job's thumbnail, made on first request in a worker thread, once even when asked for by several
    requests at the same time, then read from disk."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.made = 0  # thumbnails made by this process (the tests check that the cache is used)
        self._making: dict[int, asyncio.Task[None]] = {}

    async def path(self, job: Job) -> Path | None:
        """The thumbnail's file, made if need be; None when the job has no picture."""
        target = self.data_dir / thumbnail_of(job.id)
        found = contained(self.data_dir / "thumbs", target)
        if found is not None:
            return found
        source = main_picture(self.data_dir, job)
        if source is None:
            return None
        task = self._making.get(job.id)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(_make_thumbnail, source, target))
            self._making[job.id] = task
            task.add_done_callback(lambda _: self._making.pop(job.id, None))
            self.made += 1
        await asyncio.shield(task)
        return contained(self.data_dir / "thumbs", target)
