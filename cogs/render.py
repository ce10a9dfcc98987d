"""What a job's message says and shows at each stage: plain functions, no I/O, easy to test."""

from __future__ import annotations

import io

import discord
from PIL import Image

from cogs.common import about, short
from imaginebot import edits
from imaginebot.actions import PANS, UPSCALE_SUBTLE, Action
from imaginebot.delivery import JobView, Update, Waiting
from imaginebot.engine.grid import EncodedImage, encode_under_limit
from imaginebot.review import review_note
from imaginebot.store_models import Job, JobKind, JobStatus

DISCORD_UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes: Discord's attachment limit on a server without boosts

PROMPT_CHARS = 300  # of the prompt in the headline; the canonical text below it is complete
MESSAGE_CHARS = 2000  # Discord refuses longer message content (400 code 50035)


def jump_url(job: Job) -> str | None:
    if job.message_id is None:
        return None
    return f"https://discord.com/channels/{job.guild_id or '@me'}/{job.channel_id}/{job.message_id}"


def headline(view: JobView) -> str:
    job, parent = view.job, view.parent
    line = f"**{short(job.spec.prompt, PROMPT_CHARS)}** — <@{job.user_id}>"
    if job.relax:
        line += " (relaxed)"  # Midjourney's mark: it waited for the fast jobs and cost no quota
    tile = (job.tile_index or 0) + 1
    link = jump_url(parent) if parent else None
    of = f" of {link}" if link else ""
    match job.kind:
        case JobKind.VARIATION if parent is not None and parent.kind is JobKind.UPSCALE:
            line += f" · Variations of the upscale{of}"
        case JobKind.VARIATION:
            line += f" · Variations of image {tile}{of}"
        case JobKind.UPSCALE if parent is not None and parent.kind is JobKind.UPSCALE:
            how = "Subtle" if job.spec.strength == UPSCALE_SUBTLE else "Creative"
            line += f" · Upscale ({how}){of}"
        case JobKind.UPSCALE:
            line += f" · Upscale of image {tile}{of}"
        case JobKind.EDIT if job.edit is not None:
            line += f" · {edits.describe(job.edit)}{of}"
        case JobKind.REROLL:
            line += f" · 🔄 Re-roll{of}"
    return line


def queued(job: Job) -> str:
    """A job's message before its first event (a confirmed batch's jobs get theirs all at once)."""
    return f"{headline(JobView(job))}\n⏳ Queued."


def progress(view: JobView, update: Update) -> str:
    """While the job waits or runs."""
    if isinstance(update, Waiting):
        where = "next in line" if update.position == 1 else f"position {update.position} in the queue"
        when = f" · starts {about(update.eta_s)}" if update.eta_s is not None else ""
        relax = " in relax (fast jobs go first)" if view.job.relax else ""
        return f"{headline(view)}\n⏳ Waiting{relax} — {where}{when}."
    if update.step <= 0:
        return f"{headline(view)}\n🎨 Starting…"
    percent = round(100 * update.step / update.total)
    return f"{headline(view)}\n🎨 {percent}% ({update.step}/{update.total} steps)"


def final(view: JobView) -> str:
    """How the job ended."""
    job = view.job
    back = "It cost no quota (relax)." if job.relax else "Your images were given back."
    match job.status:
        case JobStatus.DONE:
            seeds = job.spec.seeds
            seed = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
            lines = [
                headline(view),
                f"`/imagine prompt: {job.prompt_text}`",
                f"{seed} · {job.elapsed_s or 0:.1f} s",
            ]
            if job.note:
                lines.append(f"ℹ️ {job.note}")
            if note := review_note(job):
                lines.append(note)
            text = "\n".join(lines)
        case JobStatus.FAILED:
            text = f"{headline(view)}\n⚠️ {job.error} {back} 🔁 Retry tries again."
        case JobStatus.CANCELLED:
            text = f"{headline(view)}\n✖️ Cancelled. {back}"
        case JobStatus.INTERRUPTED:
            text = f"{headline(view)}\n⏹️ Interrupted by a restart of the bot. {back} 🔁 Retry tries again."
        case _:
            raise ValueError(f"job {job.id} has not ended ({job.status})")
    return short(text, MESSAGE_CHARS)


def taken_down(view: JobView) -> str:
    """In place of a job's message once a moderator took its images down (no prompt: it may be the reason)."""
    return f"🚫 An image by <@{view.job.user_id}> was taken down by a moderator."


def reposted(view: JobView) -> str:
    """The final state as a new message, where the original could not be edited any more."""
    link = jump_url(view.job)
    note = f"\n↪️ The original message ({link}) could not be edited any more." if link else ""
    return short(f"<@{view.job.user_id}>{note}\n{final(view)}", MESSAGE_CHARS)


def button_look(action: Action, tile: int) -> tuple[str | None, str | None, discord.ButtonStyle]:
    """(label, emoji, style) of a job button: what a Midjourney user expects to see."""
    grey = discord.ButtonStyle.secondary
    match action:
        case Action.UPSCALE:
            return f"U{tile}", None, grey
        case Action.VARY:
            return f"V{tile}", None, grey
        case Action.REROLL:
            return None, "🔄", grey
        case Action.UPSCALE_SUBTLE:
            return "Upscale (Subtle)", None, grey
        case Action.UPSCALE_CREATIVE:
            return "Upscale (Creative)", None, grey
        case Action.VARY_SUBTLE:
            return "Vary (Subtle)", "🪄", grey
        case Action.VARY_STRONG:
            return "Vary (Strong)", "🪄", grey
        case Action.VARY_REGION:
            return "Vary (Region)", "🖌️", grey
        case Action.ZOOM_2X:
            return "Zoom Out 2x", "🔍", grey
        case Action.ZOOM_1_5X:
            return "Zoom Out 1.5x", "🔍", grey
        case Action.CUSTOM_ZOOM:
            return "Custom Zoom", "🔍", grey
        case Action.MAKE_SQUARE:
            return "Make Square", "↔️", grey
        case Action.RETRY:
            return "Retry", "🔁", discord.ButtonStyle.primary
        case Action.CANCEL:
            return "Cancel", None, discord.ButtonStyle.danger
        case _:
            return None, edits.ARROWS[PANS[action]], grey


def button_row(action: Action) -> int:
    """Midjourney's layout: U1–U4 on the first row, V1–V4 and 🔄 on the second; under an upscale, the
    upscales and variations first, the zooms and Make Square second, the pans third."""
    zooms_and_square = (Action.ZOOM_2X, Action.ZOOM_1_5X, Action.CUSTOM_ZOOM, Action.MAKE_SQUARE)
    if action in (Action.VARY, Action.REROLL, *zooms_and_square):
        return 1
    return 2 if action in PANS else 0


def encode_preview(image: Image.Image) -> bytes:
    """Previews are throwaway: a small JPEG is enough, and quick to upload every few seconds."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def encode_picture(picture: Image.Image) -> EncodedImage:
    """The final picture (the grid, or the one image), encoded under Discord's 10 MiB upload limit."""
    return encode_under_limit(picture, DISCORD_UPLOAD_LIMIT)


def is_spoiler(job: Job) -> bool:
    """Posted as a spoiler (Discord hides it behind a click): while flagged images wait for a moderator."""
    return any(job.held_back(tile) for tile in job.flagged)


def file_stem(job: Job) -> str:
    words = "".join(c if c.isalnum() else "_" for c in job.spec.prompt.lower()[:40]).strip("_")
    return f"{words or 'image'}_{job.id}"
