"""Modals: the form a bot opens with an interaction callback of type 9 (MODAL), as Discord checks,
shows and submits it.

:func:`parse_modal` checks the callback's ``data`` the way Discord does (400 code 50035, the error
tree under ``data``), gives every component without one the numeric ``id`` Discord assigns, and
keeps the fields a user fills in. :func:`submission_components` writes a MODAL_SUBMIT's
``data.components`` in the modal's own shape: a classic action row comes back as a row, a Label as a
Label (discord.py 2.6+ reads both, ui/modal.py ``_refresh``).

What is modelled: action rows holding one text input, Labels holding a text input or a string
select, and text displays. Other Label children (user/role/channel selects, file uploads, radio
groups, checkboxes) are refused with a 400 that says the local Discord lacks them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .models import Interaction, User

ACTION_ROW, STRING_SELECT, TEXT_INPUT, TEXT_DISPLAY, LABEL = 1, 3, 4, 10, 18
SHORT, PARAGRAPH = 1, 2
MAX_TITLE = 45
MAX_COMPONENTS = 5  # top-level: rows, labels, text displays
MAX_CUSTOM_ID = 100
MAX_LABEL = 45
MAX_DESCRIPTION = 100
MAX_INPUT_PLACEHOLDER = 100
MAX_SELECT_PLACEHOLDER = 150
MAX_TEXT = 4000  # a text input's value, min_length and max_length
MAX_OPTIONS = 25

Path = list[str | int]


@dataclass
class ModalField:
    """One thing to fill in: a text input (``type`` 4) or a string select (3), with its label."""

    custom_id: str
    type: int
    id: int  # Discord's numeric component id, echoed in the submission
    label: str
    description: str | None = None
    required: bool = True  # Discord's default for both
    style: int = SHORT
    placeholder: str | None = None
    value: str | None = None  # pre-filled text
    min_length: int = 0
    max_length: int = MAX_TEXT
    options: list[dict[str, Any]] = field(default_factory=list)
    min_values: int = 1
    max_values: int = 1

    @property
    def is_select(self) -> bool:
        return self.type == STRING_SELECT

    @property
    def default(self) -> str | list[str]:
        """What the field holds before the user touches it: the pre-filled text, or the options
        marked ``default``."""
        if self.is_select:
            return [str(o["value"]) for o in self.options if o.get("default")]
        return self.value or ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "select" if self.is_select else "text",
            "custom_id": self.custom_id,
            "label": self.label,
            "description": self.description,
            "required": self.required,
            "placeholder": self.placeholder,
        }
        if self.is_select:
            out.update(options=self.options, min_values=self.min_values, max_values=self.max_values)
        else:
            out.update(style=self.style, value=self.value or "", min_length=self.min_length)
            out["max_length"] = self.max_length
        return out


@dataclass(eq=False)
class Modal:
    """An open modal: what the bot sent, for whom, and from where."""

    id: int  # the local Discord's handle (a snowflake), for the page and tests
    custom_id: str
    title: str
    interaction: Interaction  # the command or click the modal answered
    components: list[dict[str, Any]]  # as the bot sent them, each with its numeric id
    fields: list[ModalField]
    closed: bool = False  # submitted, dismissed, or replaced by another modal

    @property
    def user(self) -> User:
        return self.interaction.user

    @property
    def channel_id(self) -> int:
        return self.interaction.channel_id

    @property
    def message_id(self) -> int | None:
        """The message whose component opened the modal (None after a slash command)."""
        return self.interaction.message_id

    def field(self, custom_id: str) -> ModalField:
        found = next((f for f in self.fields if f.custom_id == custom_id), None)
        if found is None:
            raise KeyError(f"modal {self.custom_id!r} has no field {custom_id!r} (has {self.custom_ids})")
        return found

    @property
    def custom_ids(self) -> list[str]:
        return [f.custom_id for f in self.fields]

    @property
    def values(self) -> dict[str, str | list[str]]:
        """The pre-filled values, by custom_id."""
        return {f.custom_id: f.default for f in self.fields}

    @property
    def texts(self) -> list[str]:
        """The modal's text displays."""
        return [str(c.get("content", "")) for c in self.components if c.get("type") == TEXT_DISPLAY]

    def to_json(self) -> dict[str, Any]:
        """The page's view: the items in order (text displays and fields)."""
        by_id = {f.id: f for f in self.fields}
        items: list[dict[str, Any]] = []
        for component in self.components:
            if component.get("type") == TEXT_DISPLAY:
                items.append({"kind": "display", "content": str(component.get("content", ""))})
            else:
                child = _child(component)
                items.append(by_id[int(child["id"])].to_json())
        return {
            "id": str(self.id),
            "custom_id": self.custom_id,
            "title": self.title,
            "message_id": None if self.message_id is None else str(self.message_id),
            "items": items,
        }


def _child(component: Mapping[str, Any]) -> dict[str, Any]:
    """The input inside a row or a Label."""
    if component.get("type") == LABEL:
        return dict(component["component"])
    return dict(component["components"][0])


def _bad(path: Path, code: str, message: str) -> errors.DiscordError:
    return errors.invalid_form_body(["data", *path], code, message)


def _length(value: Any, path: Path, low: int, high: int, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise _bad(
            path, "BASE_TYPE_REQUIRED" if value is None else "STRING_TYPE_CONVERT", "Must be a string."
        )
    if not low <= len(value) <= high:
        if low == 0:
            raise _bad(path, "BASE_TYPE_MAX_LENGTH", f"Must be {high} or fewer in length.")
        raise _bad(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")


def _whole(value: Any, path: Path, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(path, "NUMBER_TYPE_COERCE", f"Value {value!r} is not int.")
    if not low <= value <= high:
        raise _bad(path, "NUMBER_TYPE_MAX" if value > high else "NUMBER_TYPE_MIN", f"Must be {low}..{high}.")
    return value


def _walk(components: list[Any]) -> Iterator[dict[str, Any]]:
    """Every component, depth first, in the order Discord numbers them."""
    for component in components:
        if not isinstance(component, dict):
            continue
        yield component
        if component.get("type") == LABEL and isinstance(component.get("component"), dict):
            yield component["component"]
        elif isinstance(component.get("components"), list):
            yield from _walk(component["components"])


def _assign_ids(components: list[Any]) -> None:
    """Discord numbers components without an ``id`` 1, 2, 3... depth first, skipping ids taken."""
    taken = {c["id"] for c in _walk(components) if isinstance(c.get("id"), int)}
    counter = 0
    for component in _walk(components):
        if not isinstance(component.get("id"), int):
            counter += 1
            while counter in taken:
                counter += 1
            component["id"] = counter


def parse_modal(data: Any, *, modal_id: int, interaction: Interaction) -> Modal:
    """The modal in a type 9 callback's ``data``, checked as Discord checks it."""
    if not isinstance(data, dict):
        raise errors.invalid_form_body(["data"], "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
    _length(data.get("custom_id"), ["custom_id"], 1, MAX_CUSTOM_ID)
    _length(data.get("title"), ["title"], 1, MAX_TITLE)
    components = data.get("components")
    if not isinstance(components, list) or not 1 <= len(components) <= MAX_COMPONENTS:
        raise _bad(
            ["components"], "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_COMPONENTS} in length."
        )
    components = copy.deepcopy(components)  # ids go into the modal's own copy, not the request body
    _assign_ids(components)
    fields: list[ModalField] = []
    for i, component in enumerate(components):
        path: Path = ["components", i]
        if not isinstance(component, dict):
            raise _bad(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
        kind = component.get("type")
        if kind == TEXT_DISPLAY:
            _length(component.get("content"), [*path, "content"], 1, MAX_TEXT)
        elif kind == ACTION_ROW:
            fields.append(_row_field(component, path))
        elif kind == LABEL:
            fields.append(_label_field(component, path))
        else:
            raise _bad(
                [*path, "type"],
                "UNION_TYPE_CHOICES",
                "Value must be an action row, a label or a text display.",
            )
    seen: set[str] = set()
    for number, item in enumerate(fields):
        if item.custom_id in seen:
            raise _bad(
                ["components", number, "custom_id"],
                "COMPONENT_CUSTOM_ID_DUPLICATED",
                "Component custom id cannot be duplicated",
            )
        seen.add(item.custom_id)
    return Modal(modal_id, data["custom_id"], data["title"], interaction, components, fields)


def _row_field(row: dict[str, Any], path: Path) -> ModalField:
    """A classic row: exactly one text input, whose own ``label`` is the one the user reads."""
    items = row.get("components")
    if not isinstance(items, list) or len(items) != 1:
        raise _bad([*path, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 1 in length.")
    item = items[0]
    if not isinstance(item, dict) or item.get("type") != TEXT_INPUT:
        # Selects in modals go in a Label; Discord refuses them in rows.
        raise _bad([*path, "components", 0, "type"], "UNION_TYPE_CHOICES", "Value must be a text input.")
    _length(item.get("label"), [*path, "components", 0, "label"], 1, MAX_LABEL)
    return _text_input(item, [*path, "components", 0], str(item["label"]), None)


def _label_field(label: dict[str, Any], path: Path) -> ModalField:
    _length(label.get("label"), [*path, "label"], 1, MAX_LABEL)
    _length(label.get("description"), [*path, "description"], 0, MAX_DESCRIPTION, required=False)
    child = label.get("component")
    child_path: Path = [*path, "component"]
    if not isinstance(child, dict):
        raise _bad(child_path, "BASE_TYPE_REQUIRED", "This field is required")
    text, description = str(label["label"]), label.get("description")
    if child.get("type") == TEXT_INPUT:
        return _text_input(child, child_path, text, description)
    if child.get("type") == STRING_SELECT:
        return _string_select(child, child_path, text, description)
    raise _bad(
        [*child_path, "type"],
        "UNION_TYPE_CHOICES",
        "The local Discord supports text inputs and string selects in labels.",
    )


def _text_input(item: dict[str, Any], path: Path, label: str, description: str | None) -> ModalField:
    _length(item.get("custom_id"), [*path, "custom_id"], 1, MAX_CUSTOM_ID)
    style = item.get("style")
    if style not in (SHORT, PARAGRAPH):
        raise _bad([*path, "style"], "BASE_TYPE_CHOICES", "Value must be one of {1, 2}.")
    _length(item.get("placeholder"), [*path, "placeholder"], 0, MAX_INPUT_PLACEHOLDER, required=False)
    low = _whole(item.get("min_length", 0), [*path, "min_length"], 0, MAX_TEXT)
    high = _whole(item.get("max_length", MAX_TEXT), [*path, "max_length"], 1, MAX_TEXT)
    if low > high:
        raise _bad([*path, "min_length"], "BASE_TYPE_BAD_LENGTH", "Must be max_length or less.")
    value = item.get("value")
    if value not in (None, ""):
        _length(value, [*path, "value"], low, high)
    return ModalField(
        custom_id=str(item["custom_id"]),
        type=TEXT_INPUT,
        id=int(item["id"]),
        label=label,
        description=description,
        required=item.get("required", True) is not False,
        style=int(style),
        placeholder=item.get("placeholder"),
        value=value or None,
        min_length=low,
        max_length=high,
    )


def _string_select(item: dict[str, Any], path: Path, label: str, description: str | None) -> ModalField:
    _length(item.get("custom_id"), [*path, "custom_id"], 1, MAX_CUSTOM_ID)
    _length(item.get("placeholder"), [*path, "placeholder"], 0, MAX_SELECT_PLACEHOLDER, required=False)
    if item.get("disabled"):
        raise _bad([*path, "disabled"], "COMPONENT_INVALID", "Components in modals can't be disabled.")
    options = item.get("options")
    if not isinstance(options, list) or not 1 <= len(options) <= MAX_OPTIONS:
        raise _bad(
            [*path, "options"], "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_OPTIONS} in length."
        )
    low = _whole(item.get("min_values", 1), [*path, "min_values"], 0, MAX_OPTIONS)
    high = _whole(item.get("max_values", 1), [*path, "max_values"], 1, MAX_OPTIONS)
    if low > high or high > len(options):
        raise _bad(
            [*path, "max_values"], "BASE_TYPE_BAD_LENGTH", "Must be between min_values and the options."
        )
    return ModalField(
        custom_id=str(item["custom_id"]),
        type=STRING_SELECT,
        id=int(item["id"]),
        label=label,
        description=description,
        required=item.get("required", True) is not False,
        placeholder=item.get("placeholder"),
        options=[dict(o) for o in options if isinstance(o, dict)],
        min_values=low,
        max_values=high,
    )


def submission_components(modal: Modal, chosen: Mapping[str, str | list[str]]) -> list[dict[str, Any]]:
    """A MODAL_SUBMIT's ``data.components``: the modal's layout with what the user entered (values
    already checked; see ``interactions.submit_modal``)."""
    out: list[dict[str, Any]] = []
    for component in modal.components:
        kind = component["type"]
        if kind == TEXT_DISPLAY:
            out.append({"type": TEXT_DISPLAY, "id": component["id"]})
            continue
        child = _child(component)
        item = modal.field(str(child["custom_id"]))
        answer: dict[str, Any] = {"type": item.type, "id": item.id, "custom_id": item.custom_id}
        if item.is_select:
            answer["values"] = list(chosen[item.custom_id])
        else:
            answer["value"] = str(chosen[item.custom_id])
        if kind == LABEL:
            out.append({"type": LABEL, "id": component["id"], "component": answer})
        else:
            out.append({"type": ACTION_ROW, "id": component["id"], "components": [answer]})
    return out
