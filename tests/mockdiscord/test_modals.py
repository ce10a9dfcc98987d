"""Modals, attachment options and multi-selects with the real discord.py client (editbot.EditBot):
what Midjourney-style editing tools need from the local Discord."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest
from editbot import EditBot
from mockbot import tiny_png

from imaginebot.mockdiscord import CommandFile, MockDiscord, UserActionError


async def test_slash_command_opens_a_modal_and_the_submission_reaches_on_submit(
    mock_discord: MockDiscord, edit_bot: EditBot
) -> None:
    alice = mock_discord.alice
    command = await mock_discord.send_command("describe", user=alice)
    modal = await mock_discord.wait_for_modal(command)
    assert command.response_type == 9 and mock_discord.modal_for(alice) is modal
    assert (modal.title, modal.custom_id) == ("Edit prompt", "edit:modal")
    assert modal.custom_ids == ["edit:prompt", "edit:negative", "edit:styles"]
    assert modal.values == {"edit:prompt": "a red fox", "edit:negative": "", "edit:styles": []}
    prompt, negative, styles = modal.fields
    assert (prompt.label, prompt.style, prompt.required, prompt.max_length) == ("Prompt", 2, True, 200)
    assert (negative.label, negative.description, negative.required) == (
        "Leave out",
        "What the image should not show",
        False,
    )
    assert [o["value"] for o in styles.options] == ["watercolor", "ink", "oil", "pixel"]
    assert mock_discord.modal_for(mock_discord.bob) is None  # only its user sees it

    submit = await mock_discord.submit_modal(
        modal, {"edit:negative": "cats", "edit:styles": ["ink", "oil"]}, user=alice
    )
    reply = await mock_discord.wait_for_response(submit)
    assert reply.content == "remixed: a red fox (without cats; ink, oil)"
    assert edit_bot.edits.submissions == [
        {"prompt": "a red fox", "negative": "cats", "styles": ["ink", "oil"]}
    ]
    assert modal.closed and mock_discord.modal_for(alice) is None
    assert edit_bot.edits.errors == []


async def test_modal_submit_data_is_in_discords_shape(mock_discord: MockDiscord, edit_bot: EditBot) -> None:
    """Rows come back as rows, Labels as Labels, with the numeric ids Discord assigns depth first."""
    captured: list[dict[str, Any]] = []
    mock_discord.gateway.dispatch = _recording(mock_discord.gateway.dispatch, captured)  # type: ignore[method-assign]
    command = await mock_discord.send_command("describe", user=mock_discord.alice)
    modal = await mock_discord.wait_for_modal(command)
    await mock_discord.submit_modal(
        modal, {"edit:prompt": "an otter", "edit:styles": ["ink"]}, user=modal.user
    )
    data = captured[-1]
    assert data["type"] == 5 and "message" not in data
    assert data["data"] == {
        "custom_id": "edit:modal",
        "components": [
            {
                "type": 1,
                "id": 1,
                "components": [{"type": 4, "id": 2, "custom_id": "edit:prompt", "value": "an otter"}],
            },
            {
                "type": 18,
                "id": 3,
                "component": {"type": 4, "id": 4, "custom_id": "edit:negative", "value": ""},
            },
            {
                "type": 18,
                "id": 5,
                "component": {"type": 3, "id": 6, "custom_id": "edit:styles", "values": ["ink"]},
            },
        ],
    }


def _recording(dispatch, captured: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    def record(event: str, data, **kwargs):  # type: ignore[no-untyped-def]
        if event == "INTERACTION_CREATE":
            captured.append(dict(data))
        return dispatch(event, data, **kwargs)

    return record


async def test_button_opens_a_modal_and_the_submission_edits_its_message(
    mock_discord: MockDiscord, edit_bot: EditBot
) -> None:
    bob = mock_discord.bob
    command = await mock_discord.send_command("remix", {"prompt": "a lighthouse"}, user=bob)
    posted = await mock_discord.wait_for_response(command)
    click = await mock_discord.click(posted, "edit:open", user=bob)
    modal = await mock_discord.wait_for_modal(user=bob)
    assert modal.interaction is click and modal.message_id == posted.id
    assert modal.values["edit:prompt"] == "a lighthouse"  # pre-filled from the message

    submit = await mock_discord.submit_modal(
        modal, {"edit:prompt": "a lighthouse at dusk", "edit:styles": ["oil"]}, user=bob
    )
    await mock_discord.wait_for_ack(submit)
    assert submit.response_type == 7
    edited = mock_discord.state.messages[posted.id]
    assert edited.content == "remixed: a lighthouse at dusk (without nothing; oil)"
    assert edited.components == [] and edited.revisions == 1


async def test_what_the_client_refuses_to_submit(mock_discord: MockDiscord, edit_bot: EditBot) -> None:
    alice, bob = mock_discord.alice, mock_discord.bob
    modal = await mock_discord.wait_for_modal(await mock_discord.send_command("describe", user=alice))
    styles = {"edit:styles": ["ink"]}
    with pytest.raises(UserActionError, match=r"'Prompt' .* is required"):
        await mock_discord.submit_modal(modal, {"edit:prompt": "", **styles}, user=alice)
    with pytest.raises(UserActionError, match=r"must be 0\.\.200 characters"):
        await mock_discord.submit_modal(modal, {"edit:prompt": "x" * 201, **styles}, user=alice)
    with pytest.raises(UserActionError, match=r"must be 3\.\.50 characters"):
        await mock_discord.submit_modal(modal, {"edit:negative": "no", **styles}, user=alice)
    with pytest.raises(UserActionError, match="choose between 1 and 2"):
        await mock_discord.submit_modal(modal, {"edit:styles": []}, user=alice)
    with pytest.raises(UserActionError, match="not among the options"):
        await mock_discord.submit_modal(modal, {"edit:styles": ["crayon"]}, user=alice)
    with pytest.raises(UserActionError, match="no field"):
        await mock_discord.submit_modal(modal, {"edit:seed": "1", **styles}, user=alice)
    with pytest.raises(UserActionError, match="open for alice, not bob"):
        await mock_discord.submit_modal(modal, styles, user=bob)
    assert edit_bot.edits.submissions == [] and not modal.closed

    mock_discord.dismiss_modal(modal, user=alice)  # Cancel: the bot hears nothing
    assert modal.closed and mock_discord.modal_for(alice) is None
    with pytest.raises(UserActionError, match="no longer open"):
        await mock_discord.submit_modal(modal, styles, user=alice)
    assert edit_bot.edits.submissions == []


async def test_a_new_modal_replaces_the_open_one(mock_discord: MockDiscord, edit_bot: EditBot) -> None:
    alice = mock_discord.alice
    first = await mock_discord.wait_for_modal(await mock_discord.send_command("describe", user=alice))
    second = await mock_discord.wait_for_modal(await mock_discord.send_command("describe", user=alice))
    assert first.closed and mock_discord.modal_for(alice) is second


async def test_a_too_long_title_is_refused_like_discord(mock_discord: MockDiscord, edit_bot: EditBot) -> None:
    ok = await mock_discord.send_command("badmodal", {"title_length": 45}, user=mock_discord.alice)
    assert (await mock_discord.wait_for_modal(ok)).title == "T" * 45
    refused = await mock_discord.send_command("badmodal", {"title_length": 46}, user=mock_discord.alice)
    for _ in range(100):  # the refusal reaches the bot's tree.on_error, not the local Discord
        if edit_bot.edits.errors:
            break
        await asyncio.sleep(0.02)
    [error] = edit_bot.edits.errors
    assert isinstance(error, discord.HTTPException) and (error.status, error.code) == (400, 50035)
    assert "title" in str(error) and "Must be between 1 and 45 in length." in str(error)
    assert not refused.acknowledged  # a refused callback acknowledges nothing, opens nothing
    assert mock_discord.modal_for(mock_discord.alice).interaction is ok  # type: ignore[union-attr]


async def test_attachment_option_is_uploaded_resolved_and_readable(
    mock_discord: MockDiscord, edit_bot: EditBot
) -> None:
    png = tiny_png((10, 200, 30), size=8)
    command = await mock_discord.send_command(
        "upload", {"image": CommandFile("my sketch.png", png)}, user=mock_discord.alice
    )
    reply = await mock_discord.wait_for_response(command)
    assert reply.content == f"my_sketch.png: {len(png)} bytes, 8x8, read {len(png)}"
    assert edit_bot.edits.uploads == [("my_sketch.png", len(png), png)]  # read() got the bytes back
    [stored] = [a for a in mock_discord.state.attachments.values() if a.filename == "my_sketch.png"]
    assert stored.ephemeral and stored.content_type == "image/png" and (stored.width, stored.height) == (8, 8)

    # a plain (filename, bytes) tuple works too, and non-images carry no dimensions
    command = await mock_discord.send_command(
        "upload", {"image": ("notes.txt", b"hello")}, user=mock_discord.bob
    )
    reply = await mock_discord.wait_for_response(command)
    assert reply.content == "notes.txt: 5 bytes, NonexNone, read 5"


async def test_a_too_large_attachment_is_refused(mock_discord: MockDiscord, edit_bot: EditBot) -> None:
    mock_discord.state.attachment_size_limit = 1000
    too_big = CommandFile("big.png", b"\0" * 1001, "image/png")
    with pytest.raises(UserActionError, match="upload limit is 1000 bytes"):
        await mock_discord.send_command("upload", {"image": too_big}, user=mock_discord.alice)
    with pytest.raises(UserActionError, match="option image is required"):
        await mock_discord.send_command("upload", {}, user=mock_discord.alice)
    assert edit_bot.edits.uploads == [] and mock_discord.state.attachments == {}


async def test_multi_select(mock_discord: MockDiscord, edit_bot: EditBot) -> None:
    command = await mock_discord.send_command("styles", user=mock_discord.alice)
    posted = await mock_discord.wait_for_response(command)
    assert posted.component("edit:pick")["max_values"] == 3  # type: ignore[index]
    choice = await mock_discord.select(posted, "edit:pick", ["ink", "oil", "pixel"], user=mock_discord.alice)
    answer = await mock_discord.wait_for_response(choice)
    assert answer.content == "styles: ink, oil, pixel" and answer.ephemeral
    assert edit_bot.edits.styles == [["ink", "oil", "pixel"]]
    with pytest.raises(UserActionError, match="between 1 and 3"):
        await mock_discord.select(
            posted, "edit:pick", ["ink", "oil", "pixel", "watercolor"], user=mock_discord.bob
        )
