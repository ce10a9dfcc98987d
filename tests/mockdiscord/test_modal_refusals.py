"""Modal callbacks over raw HTTP: what Discord refuses (400 code 50035 with the error tree under
``data``), the ids it assigns, and which answers a modal submission takes. The test plays the bot by
hand; a stand-in gateway records the dispatches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from imaginebot.mockdiscord import MockState, create_app
from imaginebot.mockdiscord.interactions import send_command, submit_modal, use_component
from imaginebot.mockdiscord.models import Interaction

API = "/api/v10"


class RecordingGateway:
    """Always connected; keeps what would go to the bot."""

    has_session = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def dispatch(self, event: str, data: Mapping[str, Any], *, intent: int | None = None) -> None:
        self.sent.append((event, dict(data)))


class Harness:
    def __init__(self, state: MockState, client: TestClient[Any, Any], gateway: RecordingGateway) -> None:
        self.state, self.client, self.gateway = state, client, gateway

    async def callback(self, interaction: Interaction, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        url = f"{API}/interactions/{interaction.id}/{interaction.token}/callback?with_response=true"
        response = await self.client.post(url, json=body)
        return response.status, await response.json()

    def command(self) -> Interaction:
        return send_command(self.state, "imagine", {"prompt": "x"}, user=self.state.user("alice"))


@pytest_asyncio.fixture
async def harness(aiohttp_client: Any) -> Harness:
    state = MockState()
    client = await aiohttp_client(create_app(state))
    gateway = RecordingGateway()
    state.gateway = gateway  # after create_app, which installs the real hub
    state.set_commands(
        None, [{"name": "imagine", "options": [{"name": "prompt", "type": 3, "required": True}]}]
    )
    return Harness(state, client, gateway)


def text_input(custom_id: str = "prompt", **extra: Any) -> dict[str, Any]:
    return {"type": 4, "custom_id": custom_id, "style": 1, **extra}


def row(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": [item]}


def modal(*components: dict[str, Any], title: str = "Edit", custom_id: str = "m") -> dict[str, Any]:
    return {"type": 9, "data": {"custom_id": custom_id, "title": title, "components": list(components)}}


GOOD_ROW = row(text_input(label="Prompt"))


@pytest.mark.parametrize(
    ("body", "path", "code"),
    [
        (modal(GOOD_ROW, title="T" * 46), ["title"], "BASE_TYPE_BAD_LENGTH"),
        (modal(GOOD_ROW, title=""), ["title"], "BASE_TYPE_BAD_LENGTH"),
        (modal(GOOD_ROW, custom_id="c" * 101), ["custom_id"], "BASE_TYPE_BAD_LENGTH"),
        (modal(), ["components"], "BASE_TYPE_BAD_LENGTH"),
        (
            modal(*[row(text_input(f"f{i}", label="L")) for i in range(6)]),
            ["components"],
            "BASE_TYPE_BAD_LENGTH",
        ),
        (modal(row(text_input("x" * 101, label="L"))), ["components", 0, "components", 0, "custom_id"], None),
        (modal(row(text_input(label="L" * 46))), ["components", 0, "components", 0, "label"], None),
        (modal(row(text_input())), ["components", 0, "components", 0, "label"], "BASE_TYPE_REQUIRED"),
        (
            modal(row(text_input(label="L", value="too long", max_length=3))),
            ["components", 0, "components", 0, "value"],
            None,
        ),
        (
            modal(row(text_input(label="L", value="x" * 4001))),
            ["components", 0, "components", 0, "value"],
            None,
        ),
        (modal(row(text_input(label="L", style=3))), ["components", 0, "components", 0, "style"], None),
        (
            modal({"type": 18, "label": "L" * 46, "component": text_input()}),
            ["components", 0, "label"],
            "BASE_TYPE_BAD_LENGTH",
        ),
        (
            modal({"type": 18, "label": "L", "component": {"type": 19, "custom_id": "files"}}),
            ["components", 0, "component", "type"],
            "UNION_TYPE_CHOICES",
        ),
        (
            modal(row({"type": 3, "custom_id": "s", "options": [{"label": "a", "value": "a"}]})),
            ["components", 0, "components", 0, "type"],
            "UNION_TYPE_CHOICES",
        ),
        (modal(GOOD_ROW, GOOD_ROW), ["components", 1, "custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED"),
    ],
)
async def test_invalid_modals_are_refused(
    harness: Harness, body: dict[str, Any], path: list[str | int], code: str | None
) -> None:
    interaction = harness.command()
    status, error = await harness.callback(interaction, body)
    assert status == 400 and error["code"] == 50035 and error["message"] == "Invalid Form Body"
    tree = error["errors"]["data"]
    for key in path:
        tree = tree[str(key)]
    if code is not None:
        assert tree["_errors"][0]["code"] == code
    # refused: not acknowledged, nothing opened; a good modal may still follow
    assert not interaction.acknowledged and harness.state.modals == {}
    status, body = await harness.callback(interaction, modal(GOOD_ROW))
    assert status == 200 and body["resource"] == {"type": 9}
    assert "response_message_id" not in body["interaction"]


async def test_ids_are_assigned_depth_first_around_the_bots_own(harness: Harness) -> None:
    interaction = harness.command()
    label = {"type": 18, "id": 2, "label": "Leave out", "component": text_input("negative", required=False)}
    status, _ = await harness.callback(
        interaction, modal({"type": 10, "content": "Edit it"}, GOOD_ROW, label)
    )
    assert status == 200
    [opened] = harness.state.modals.values()
    assert opened.texts == ["Edit it"]
    submit = submit_modal(harness.state, opened, {"prompt": "fox"}, user=opened.user)
    event, payload = harness.gateway.sent[-1]
    assert event == "INTERACTION_CREATE" and payload["type"] == 5 and payload["id"] == str(submit.id)
    assert payload["data"]["components"] == [
        {"type": 10, "id": 1},
        {"type": 1, "id": 3, "components": [{"type": 4, "id": 4, "custom_id": "prompt", "value": "fox"}]},
        {"type": 18, "id": 2, "component": {"type": 4, "id": 5, "custom_id": "negative", "value": ""}},
    ]


async def test_what_a_modal_submission_may_be_answered_with(harness: Harness) -> None:
    state = harness.state
    alice = state.user("alice")

    # after a slash command: 6 is a silent acknowledgement, 7 has no message to update, 9 is refused
    for kind, expected in ((7, 400), (9, 400), (6, 200)):
        command = harness.command()
        await harness.callback(command, modal(GOOD_ROW))
        submit = submit_modal(state, state.modals[alice.id], {"prompt": "x"}, user=alice)
        status, body = await harness.callback(submit, {"type": kind, "data": {"content": "done"}})
        assert status == expected, (kind, body)
    assert submit.acknowledged and submit.original_message_id is None

    # from a button: a reply of its own (4) names the submission and the click that opened the modal
    command = harness.command()
    components = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "Edit", "custom_id": "open"}]}]
    await harness.callback(command, {"type": 4, "data": {"content": "posted", "components": components}})
    posted = state.messages[command.original_message_id or 0]
    click = use_component(state, posted, "open", user=alice)
    await harness.callback(click, modal(GOOD_ROW))
    submit = submit_modal(state, state.modals[alice.id], {"prompt": "y"}, user=alice)
    assert harness.gateway.sent[-1][1]["message"]["id"] == str(posted.id)
    status, body = await harness.callback(submit, {"type": 4, "data": {"content": "thanks"}})
    reply = body["resource"]["message"]
    assert status == 200 and reply["type"] == 0
    meta = reply["interaction_metadata"]
    assert meta["type"] == 5 and meta["id"] == str(submit.id)
    assert meta["triggering_interaction_metadata"]["id"] == str(click.id)

    # ... and 7 updates the button's message
    click = use_component(state, posted, "open", user=alice)
    await harness.callback(click, modal(GOOD_ROW))
    submit = submit_modal(state, state.modals[alice.id], {"prompt": "z"}, user=alice)
    status, body = await harness.callback(
        submit, {"type": 7, "data": {"content": "edited", "components": []}}
    )
    assert status == 200 and posted.content == "edited" and posted.components == []
