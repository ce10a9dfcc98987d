"""What a job's message says and shows at each stage: plain functions, no I/O, easy to test."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import discord
from PIL import Image

from cogs.common import short
from imaginebot.engine.grid import EncodedImage, encode_under_limit, make_grid
from imaginebot.store_models import Job, JobKind

PROMPT_CHARS = 300  # of the prompt in the headline; the canonical text below it is complete


@dataclass(frozen=True)
class Context:
    job: Job
    parent: Job | None
    who: str  # the author's mention


def jump_url(job: Job) -> str | None:
    if job.message_id is None:
        return None
    return f"https://discord.com/channels/{job.guild_id or '@me'}/{job.channel_id}/{job.message_id}"


def _headline(context: Context) -> str:
    job, parent = context.job, context.parent
    line = f"**{short(job.params.prompt, PROMPT_CHARS)}** — {context.who}"
    tile = (job.tile_index or 0) + 1
    link = jump_url(parent) if parent else None
    of = f" of {link}" if link else ""
    match job.kind:
        case JobKind.VARIATION if parent is not None and parent.kind is JobKind.UPSCALE:
            line += f" · Variations of the upscale{of}"
        case JobKind.VARIATION:
            line += f" · Variations of image {tile}{of}"
        case JobKind.UPSCALE:
            line += f" · Upscale of image {tile}{of}"
        case JobKind.REROLL:
            line += f" · 🔄 Re-roll{of}"
    return line


def queued(context: Context, position: int) -> str:
    where = "next in line" if position == 1 else f"position {position} in the queue"
    return f"{_headline(context)}\n⏳ Waiting — {where}."


def running(context: Context, step: int, total: int) -> str:
    if step <= 0:
        return f"{_headline(context)}\n🎨 Starting…"
    return f"{_headline(context)}\n🎨 {round(100 * step / total)}% ({step}/{total} steps)"


def done(context: Context, elapsed_s: float, note: str = "") -> str:
    job = context.job
    seeds = job.params.seeds
    seed = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
    lines = [_headline(context), f"`/imagine prompt: {job.prompt_text}`", f"{seed} · {elapsed_s:.1f} s"]
    if note:
        lines.append(f"ℹ️ {note}")
    return "\n".join(lines)


def failed(context: Context, message: str) -> str:
    return f"{_headline(context)}\n⚠️ {message} Your images were given back. 🔄 tries again."


def cancelled(context: Context) -> str:
    return f"{_headline(context)}\n✖️ Cancelled. Your images were given back."


def interrupted(context: Context) -> str:
    return (
        f"{_headline(context)}\n⏹️ Interrupted by a restart of the bot; your images were given back."
        " 🔄 tries again."
    )


def button_look(action: str, tile: int) -> tuple[str | None, str | None, discord.ButtonStyle]:
    """(label, emoji, style) of a job button: what a Midjourney user expects to see."""
    match action:
        case "u":
            return f"U{tile}", None, discord.ButtonStyle.secondary
        case "v":
            return f"V{tile}", None, discord.ButtonStyle.secondary
        case "r":
            return None, "🔄", discord.ButtonStyle.secondary
        case "c":
            return "Cancel", None, discord.ButtonStyle.danger
        case "s":
            return "Vary (Subtle)", "🪄", discord.ButtonStyle.secondary
        case "t":
            return "Vary (Strong)", "🪄", discord.ButtonStyle.secondary
    raise ValueError(f"unknown button action {action!r}")


def encode_preview(image: Image.Image) -> bytes:
    """Previews are throwaway: a small JPEG is enough, and quick to upload every few seconds."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def grid_of(images: Sequence[Image.Image]) -> tuple[Image.Image, EncodedImage]:
    """The picture for the final message (the 2×2 grid, or the one image) and its encoding under 10 MiB."""
    picture = images[0] if len(images) == 1 else make_grid(images)
    return picture, encode_under_limit(picture)


def file_stem(job: Job) -> str:
    words = "".join(c if c.isalnum() else "_" for c in job.params.prompt.lower()[:40]).strip("_")
    return f"{words or 'image'}_{job.id}"
