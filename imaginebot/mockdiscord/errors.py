"""Discord's refusals: an HTTP status, a JSON error code and message, as discord-api-docs lists them."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .payloads import ErrorPayload

JSON = "application/json"  # exactly this: discord.py reads any other content type as text


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # body= (not text=): aiohttp appends "; charset=utf-8" to text responses.
    response = web.Response(body=json.dumps(data).encode(), status=status, headers=headers)
    response.content_type = JSON
    return response


class DiscordError(Exception):
    """Raised by handlers; the error middleware turns it into Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def payload(self) -> ErrorPayload:
        body: ErrorPayload = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def response(self) -> web.Response:
        return json_response(self.payload(), status=self.status)


class Refused(Exception):
    """A ready-made refusal (a 429 with its headers) that the error middleware sends as it is.

    ``injected``: made by fault injection (``faults.py``), not by a rule Discord enforces.
    """

    def __init__(self, response: web.Response, *, injected: bool = False) -> None:
        super().__init__(f"refused with {response.status}")
        self.response = response
        self.injected = injected


def unauthorized() -> DiscordError:
    return DiscordError(401, 0, "401: Unauthorized")


def not_found() -> DiscordError:
    return DiscordError(404, 0, "404: Not Found")


def unknown_channel() -> DiscordError:
    return DiscordError(404, 10003, "Unknown Channel")


def unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def unknown_webhook() -> DiscordError:
    return DiscordError(404, 10015, "Unknown Webhook")


def unknown_interaction() -> DiscordError:
    return DiscordError(404, 10062, "Unknown interaction")


def unknown_user() -> DiscordError:
    return DiscordError(404, 10013, "Unknown User")


def already_acknowledged() -> DiscordError:
    return DiscordError(400, 40060, "Interaction has already been acknowledged.")


def invalid_webhook_token() -> DiscordError:
    return DiscordError(401, 50027, "Invalid Webhook Token")


def cannot_edit_others() -> DiscordError:
    return DiscordError(403, 50005, "Cannot edit a message authored by another user")


def missing_access() -> DiscordError:
    return DiscordError(403, 50001, "Missing Access")


def missing_permissions() -> DiscordError:
    return DiscordError(403, 50013, "Missing Permissions")


def cannot_message_user() -> DiscordError:
    """A DM to a user who closed DMs (or blocked the bot)."""
    return DiscordError(403, 50007, "Cannot send messages to this user")


def invalid_recipient() -> DiscordError:
    return DiscordError(400, 50033, "Invalid Recipient(s)")


def cannot_act_on_dm() -> DiscordError:
    """What a bot may do to others' messages in a guild but not in a DM (delete one, say)."""
    return DiscordError(403, 50003, "Cannot execute action on a DM channel")


def too_large() -> DiscordError:
    return DiscordError(413, 40005, "Request entity too large")


def error_tree(path: list[str | int], code: str, message: str) -> dict[str, Any]:
    """Discord's nested ``errors`` object: ``{"components": {"0": {... {"_errors": [...]}}}}``."""
    tree: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path):
        tree = {str(key): tree}
    return tree


def invalid_form_body(path: list[str | int], code: str, message: str) -> DiscordError:
    return DiscordError(400, 50035, "Invalid Form Body", error_tree(path, code, message))
