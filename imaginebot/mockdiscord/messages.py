"""Message bodies as the bot sends them: JSON or multipart (``payload_json`` + ``files[n]``), checked
the way Discord checks them (sizes, components), then applied to a new or an edited message."""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from . import errors
from .models import EPHEMERAL, LOADING, Attachment, Message
from .state import REQUEST_SIZE_LIMIT, MockState

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_ROWS = 5
MAX_ROW_ITEMS = 5
MAX_CUSTOM_ID = 100
MAX_LABEL = 80
MAX_SELECT_OPTIONS = 25
ACTION_ROW, BUTTON, STRING_SELECT = 1, 2, 3
SELECT_TYPES = {3, 5, 6, 7, 8}
LINK_STYLE, PREMIUM_STYLE = 5, 6


@dataclass(frozen=True)
class Upload:
    index: int
    filename: str
    content_type: str
    data: bytes


async def read_body(request: web.Request, state: MockState) -> tuple[dict[str, Any], list[Upload]]:
    """The JSON payload and the uploaded files; 413 code 40005 for a file over the size limit."""
    if not request.body_exists:
        return {}, []
    if not request.content_type.startswith("multipart/"):
        try:
            payload = await request.json()
        except ValueError:
            raise errors.DiscordError(400, 50109, "The request body contains invalid JSON.") from None
        return (payload if isinstance(payload, dict) else {}), []
    payload = {}
    uploads: list[Upload] = []
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        data = bytearray()
        while chunk := await part.read_chunk():
            data += chunk
            if part.filename is not None and len(data) > state.attachment_size_limit:
                raise errors.too_large()
        total += len(data)
        if total > REQUEST_SIZE_LIMIT:
            raise errors.too_large()
        name = part.name or ""
        if name == "payload_json":
            payload = json.loads(bytes(data))
        elif name.startswith("files[") and name.endswith("]") and name[6:-1].isdigit():
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            uploads.append(
                Upload(int(name[6:-1]), part.filename or f"file{name[6:-1]}", content_type, bytes(data))
            )
    return payload, uploads


def validate_components(components: Any) -> None:
    """Discord's component rules (discord.py checks none of the lengths): 400 code 50035."""
    if not isinstance(components, list):
        raise errors.invalid_form_body(["components"], "MODEL_TYPE_CONVERT", "Must be an array.")
    if len(components) > MAX_ROWS:
        raise errors.invalid_form_body(
            ["components"], "BASE_TYPE_BAD_LENGTH", f"Must be between 0 and {MAX_ROWS} in length."
        )
    seen: set[str] = set()
    for r, row in enumerate(components):
        if not isinstance(row, dict) or row.get("type") != ACTION_ROW:
            raise errors.invalid_form_body(
                ["components", r, "type"], "UNION_TYPE_CHOICES", "Expected an action row."
            )
        items = row.get("components") or []
        if not 1 <= len(items) <= MAX_ROW_ITEMS:
            raise errors.invalid_form_body(
                ["components", r, "components"],
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between 1 and {MAX_ROW_ITEMS} in length.",
            )
        has_select = any(item.get("type") in SELECT_TYPES for item in items)
        if has_select and len(items) > 1:
            raise errors.invalid_form_body(
                ["components", r, "components"],
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "A select menu fills a row.",
            )
        for c, item in enumerate(items):
            _validate_item(item, ["components", r, "components", c], seen)


def _validate_item(item: dict[str, Any], path: list[str | int], seen: set[str]) -> None:
    kind = item.get("type")
    if kind not in (BUTTON, *SELECT_TYPES):
        raise errors.invalid_form_body(
            [*path, "type"], "UNION_TYPE_CHOICES", "Value must be a button or a select."
        )
    link = kind == BUTTON and item.get("style") in (LINK_STYLE, PREMIUM_STYLE)
    if kind == BUTTON and item.get("style") not in range(1, 7):
        raise errors.invalid_form_body([*path, "style"], "BASE_TYPE_REQUIRED", "This field is required")
    custom_id = item.get("custom_id")
    if link:
        if kind == BUTTON and item.get("style") == LINK_STYLE and not item.get("url"):
            raise errors.invalid_form_body([*path, "url"], "BASE_TYPE_REQUIRED", "This field is required")
    elif not isinstance(custom_id, str) or not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
        raise errors.invalid_form_body(
            [*path, "custom_id"], "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_CUSTOM_ID} in length."
        )
    elif custom_id in seen:
        raise errors.invalid_form_body(
            [*path, "custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
        )
    else:
        seen.add(custom_id)
    if len(str(item.get("label") or "")) > MAX_LABEL:
        raise errors.invalid_form_body(
            [*path, "label"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_LABEL} or fewer in length."
        )
    if kind == STRING_SELECT:
        options = item.get("options") or []
        if not 1 <= len(options) <= MAX_SELECT_OPTIONS:
            raise errors.invalid_form_body(
                [*path, "options"],
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between 1 and {MAX_SELECT_OPTIONS} in length.",
            )


def _check_payload(payload: dict[str, Any]) -> None:
    content = payload.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT:
        raise errors.invalid_form_body(
            ["content"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
        )
    embeds = payload.get("embeds")
    if embeds is not None and len(embeds) > MAX_EMBEDS:
        raise errors.invalid_form_body(
            ["embeds"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length."
        )
    if payload.get("components") is not None:
        validate_components(payload["components"])


def _new_attachments(
    state: MockState, channel_id: int, payload: dict[str, Any], uploads: list[Upload]
) -> list[Attachment]:
    meta = {a.get("id"): a for a in payload.get("attachments") or [] if isinstance(a, dict)}
    out = []
    for upload in sorted(uploads, key=lambda u: u.index):
        info = meta.get(upload.index) or meta.get(str(upload.index)) or {}
        filename = str(info.get("filename") or upload.filename)
        # discord.py uploads everything as application/octet-stream; Discord goes by the file name.
        content_type = upload.content_type
        if content_type in ("", "application/octet-stream"):
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        attachment = state.add_attachment(channel_id, filename, upload.data, content_type)
        attachment.description = info.get("description")
        out.append(attachment)
    return out


def new_message_fields(
    state: MockState, channel_id: int, payload: dict[str, Any], uploads: list[Upload]
) -> dict[str, Any]:
    """Keyword arguments for ``MockState.create_message`` from a create/followup/callback body."""
    _check_payload(payload)
    fields: dict[str, Any] = {
        "content": str(payload.get("content") or ""),
        "embeds": list(payload.get("embeds") or []),
        "components": list(payload.get("components") or []),
        "attachments": _new_attachments(state, channel_id, payload, uploads),
        "flags": int(payload.get("flags") or 0) & ~LOADING,
    }
    if not (fields["content"] or fields["embeds"] or fields["attachments"] or fields["components"]):
        raise errors.DiscordError(400, 50006, "Cannot send an empty message")
    return fields


def apply_edit(state: MockState, message: Message, payload: dict[str, Any], uploads: list[Upload]) -> None:
    """Edit in place: given keys replace, ``attachments`` is the final set (kept ids + new uploads)."""
    _check_payload(payload)
    previous = (message.content, tuple(a.filename for a in message.attachments))
    if "content" in payload:
        message.content = str(payload["content"] or "")
    if "embeds" in payload:
        message.embeds = list(payload["embeds"] or [])
    if "components" in payload:
        message.components = list(payload["components"] or [])
    if "flags" in payload and payload["flags"] is not None:
        # Only SUPPRESS_EMBEDS can change on an edit; ephemeral stays what it was.
        message.flags = (message.flags & EPHEMERAL) | (int(payload["flags"]) & 4)
    new = _new_attachments(state, message.channel_id, payload, uploads)
    if "attachments" in payload and payload["attachments"] is not None:
        keep = {str(a.get("id")) for a in payload["attachments"] if isinstance(a, dict)}
        message.attachments = [a for a in message.attachments if str(a.id) in keep] + new
    else:
        message.attachments = message.attachments + new
    message.flags &= ~LOADING
    state.message_edited(message, previous)
