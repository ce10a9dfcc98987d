"""Interaction callbacks and the interaction webhook: ``@original`` GET/PATCH/DELETE, followups.

These requests carry no Authorization header: the interaction token is the credential. Discord's
refusals, enforced here: an acknowledgement after ``ack_timeout`` (3 s) is 404 code 10062, a second
one 400 code 40060; a webhook request with an expired token (``token_lifetime``, 15 minutes, or
``expire_tokens()``) is 401 code 50027; a message the token doesn't own, or one deleted, is 404 10008.
A type 9 callback opens a modal (checked in :mod:`.modals`) for a command or a click; a modal
submission takes 4 and 5, 6 (silent, or on the message whose button opened the modal) and 7 (that
message only).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import errors
from .messages import apply_edit, new_message_fields, read_body
from .modals import Modal, parse_modal
from .models import EPHEMERAL, LOADING, CallbackType, Interaction, InteractionType, Message
from .state import STATE_KEY, MockState, StateEvent

routes = web.RouteTableDef()


@routes.post("/api/v10/interactions/{interaction_id}/{token}/callback")
async def interaction_callback(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    interaction = state.interactions.get(int(request.match_info["interaction_id"]))
    body, uploads = await read_body(request, state)
    if interaction is None or interaction.token != request.match_info["token"]:
        raise errors.unknown_interaction()
    if interaction.acknowledged:
        raise errors.already_acknowledged()
    if state.ack_deadline_passed(interaction):
        raise errors.unknown_interaction()
    try:
        kind = CallbackType(int(body.get("type", 0)))
    except ValueError:
        raise errors.invalid_form_body(
            ["type"], "BASE_TYPE_CHOICES", "Value must be one of {4, 5, 6, 7, 9}."
        ) from None
    data = body.get("data") or {}
    modal = None
    if kind == CallbackType.MODAL:
        modal = _modal(state, interaction, body.get("data"))
        message = None
    else:
        message = _apply_callback(state, interaction, kind, data, uploads)
    interaction.response_type = kind
    state.emit(StateEvent("interaction_ack", interaction=interaction, message=message))
    if modal is not None:
        state.open_modal(modal)  # after the ack: a test waiting for the modal sees an acked interaction
    if request.query.get("with_response", "").lower() not in ("1", "true"):
        return web.Response(status=204)
    ephemeral = message is not None and message.ephemeral
    summary: dict[str, Any] = {
        "id": str(interaction.id),
        "type": int(interaction.type),
        "response_message_loading": kind == CallbackType.DEFERRED_CHANNEL_MESSAGE,
        "response_message_ephemeral": ephemeral,
    }
    resource: dict[str, Any] = {"type": int(kind)}
    if message is not None:
        summary["response_message_id"] = str(message.id)
        if kind != CallbackType.DEFERRED_UPDATE_MESSAGE:
            resource["message"] = state.message_payload(message)
    return errors.json_response({"interaction": summary, "resource": resource})


def _apply_callback(
    state: MockState, interaction: Interaction, kind: CallbackType, data: dict[str, Any], uploads: list[Any]
) -> Message | None:
    if kind in (CallbackType.CHANNEL_MESSAGE_WITH_SOURCE, CallbackType.DEFERRED_CHANNEL_MESSAGE):
        if kind == CallbackType.CHANNEL_MESSAGE_WITH_SOURCE:
            fields = new_message_fields(state, interaction.channel_id, data, uploads)
        else:  # a "thinking…" placeholder that the first edit or followup fills in
            fields = {"flags": LOADING | (int(data.get("flags") or 0) & EPHEMERAL)}
        ephemeral = bool(fields["flags"] & EPHEMERAL)
        message = state.create_message(
            interaction.channel_id,
            state.bot,
            interaction=interaction,
            application_id=state.app_id,
            ephemeral_to=interaction.user.id if ephemeral else None,
            **fields,
        )
        interaction.original_message_id = message.id
        return message
    # 6 and 7 act on the message the component is on (for a modal submit: the message whose
    # component opened the modal). A 6 to any modal submit is a silent acknowledgement.
    on_message = interaction.type in (InteractionType.MESSAGE_COMPONENT, InteractionType.MODAL_SUBMIT)
    if not on_message or interaction.message_id is None:
        if interaction.type == InteractionType.MODAL_SUBMIT and kind == CallbackType.DEFERRED_UPDATE_MESSAGE:
            return None
        raise errors.invalid_form_body(
            ["type"], "INTERACTION_RESPONSE_TYPE_INVALID", "This response type needs a component interaction."
        )
    message = state.get_message(interaction.message_id)
    interaction.original_message_id = message.id
    if kind == CallbackType.UPDATE_MESSAGE:
        apply_edit(state, message, data, uploads)
    return message


def _modal(state: MockState, interaction: Interaction, data: Any) -> Modal:
    """A modal answers a command or a click, never another modal's submission."""
    if interaction.type == InteractionType.MODAL_SUBMIT:
        raise errors.invalid_form_body(
            ["type"],
            "INTERACTION_RESPONSE_TYPE_INVALID",
            "A modal submission can't be answered with a modal.",
        )
    return parse_modal(data, modal_id=state.snowflakes.next(), interaction=interaction)


async def _webhook_interaction(request: web.Request) -> tuple[MockState, Interaction, dict[str, str]]:
    """Check app id and token, count the request against the token's rate limit."""
    state = request.app[STATE_KEY]
    if request.match_info["application_id"] != str(state.app_id):
        raise errors.unknown_webhook()
    interaction = state.interaction_for_token(request.match_info["token"])
    headers, refused = state.ratelimits.check("webhook", interaction.token)
    if refused is not None:
        raise errors.Refused(refused)
    return state, interaction, headers


def _owned_message(state: MockState, interaction: Interaction, message_id: str) -> Message:
    if message_id == "@original":
        return state.original_message(interaction)
    if not message_id.isdigit():
        raise errors.unknown_message()
    mid = int(message_id)
    if mid != interaction.original_message_id and mid not in interaction.followup_ids:
        raise errors.unknown_message()
    return state.get_message(mid)


_MESSAGE = "/api/v10/webhooks/{application_id}/{token}/messages/{message_id}"


@routes.get(_MESSAGE)
async def get_webhook_message(request: web.Request) -> web.Response:
    state, interaction, headers = await _webhook_interaction(request)
    message = _owned_message(state, interaction, request.match_info["message_id"])
    return errors.json_response(state.message_payload(message), headers=headers)


@routes.patch(_MESSAGE)
async def edit_webhook_message(request: web.Request) -> web.Response:
    state, interaction, headers = await _webhook_interaction(request)
    body, uploads = await read_body(request, state)
    message = _owned_message(state, interaction, request.match_info["message_id"])
    apply_edit(state, message, body, uploads)
    return errors.json_response(state.message_payload(message), headers=headers)


@routes.delete(_MESSAGE)
async def delete_webhook_message(request: web.Request) -> web.Response:
    state, interaction, headers = await _webhook_interaction(request)
    message = _owned_message(state, interaction, request.match_info["message_id"])
    state.delete_message(message)
    return web.Response(status=204, headers=headers)


@routes.post("/api/v10/webhooks/{application_id}/{token}")
async def followup(request: web.Request) -> web.Response:
    state, interaction, headers = await _webhook_interaction(request)
    body, uploads = await read_body(request, state)
    if not interaction.acknowledged:
        raise errors.unknown_webhook()
    original = state.messages.get(interaction.original_message_id or 0)
    if (
        interaction.response_type == CallbackType.DEFERRED_CHANNEL_MESSAGE
        and original is not None
        and original.loading
        and not original.deleted
    ):
        # The first followup after a deferred response fills in the "thinking…" message.
        apply_edit(state, original, body, uploads)
        message = original
    else:
        fields = new_message_fields(state, interaction.channel_id, body, uploads)
        ephemeral = bool(fields["flags"] & EPHEMERAL)
        message = state.create_message(
            interaction.channel_id,
            state.bot,
            interaction=interaction,
            application_id=state.app_id,
            ephemeral_to=interaction.user.id if ephemeral else None,
            **fields,
        )
        interaction.followup_ids.append(message.id)
    if request.query.get("wait", "").lower() not in ("1", "true"):
        return web.Response(status=204, headers=headers)
    return errors.json_response(state.message_payload(message), headers=headers)
