"""Run the local Discord in-process and drive it from Python (tests, ``bot.py --mock``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web

from .app import GATEWAY_KEY, create_app
from .faults import RETRY_AFTER, Faults, FaultScope
from .gateway import GatewayHub
from .interactions import UserActionError, dismiss_modal, send_command, submit_modal, use_component
from .modals import Modal
from .models import Channel, Interaction, Message, User
from .ratelimit import Limit, Scope
from .state import MockState, RequestLogEntry


class MockDiscord:
    """The local Discord seen from a test: users act, the test waits for what the bot does.

    ``url`` is what :func:`imaginebot.discord_url.use_discord_url` takes; ``page_url`` the web page;
    ``bot_token`` the only token the server accepts.
    """

    def __init__(self, state: MockState, gateway: GatewayHub, url: str) -> None:
        self.state = state
        self.gateway = gateway
        self.url = url
        self.page_url = url + "/app/"

    # -- who and where ----------------------------------------------------------------------------
    @property
    def bot_token(self) -> str:
        return self.state.bot_token

    @property
    def application_id(self) -> int:
        return self.state.app_id

    @property
    def guild_id(self) -> int:
        return self.state.guild_id

    @property
    def channel(self) -> Channel:
        """#general, where commands run unless told otherwise."""
        return self.state.default_channel

    def user(self, name: str) -> User:
        """A member by username or display name: ``alice``, ``bob``, ``carol`` (students), ``teacher``."""
        return self.state.user(name)

    @property
    def alice(self) -> User:
        return self.state.user("alice")

    @property
    def bob(self) -> User:
        return self.state.user("bob")

    @property
    def moderator(self) -> User:
        """``teacher``: has the Moderator role with Manage Server (0x20)."""
        return self.state.user("teacher")

    def add_user(self, username: str, *, moderator: bool = False) -> User:
        """A new member (after the bot connected it isn't in the bot's member cache)."""
        return self.state.add_user(username, moderator=moderator)

    def dm_channel(self, user: User) -> Channel | None:
        """The bot's DM with ``user``, or None if the bot never opened one (``create_dm``).

        Its messages come from ``messages(dm)`` and ``wait_for_message(..., channel=dm)``; on the
        page only ``user`` sees it, under "Direct messages".
        """
        return self.state.dms.get(user.id)

    def block_dms(self, user: User) -> None:
        """``user`` closes DMs: the bot's sends there answer 403 code 50007 "Cannot send messages to
        this user" (``discord.Forbidden``) until ``allow_dms(user)``. Opening the DM still works."""
        self.state.set_dms_closed(user, True)

    def allow_dms(self, user: User) -> None:
        """Undo ``block_dms``."""
        self.state.set_dms_closed(user, False)

    # -- users acting -----------------------------------------------------------------------------
    async def send_command(
        self, name: str, options: dict[str, Any] | None = None, *, user: User, channel: Channel | None = None
    ) -> Interaction:
        """Run ``/name`` (``"imagine"``, ``"quota set"``) as ``user``, options by name.

        User options take a :class:`User` or a username; attachment options (type 11) a
        ``CommandFile(filename, data, content_type=None)`` or a ``(filename, data)`` tuple, uploaded
        as the client does (over ``attachment_size_limit``: refused) and sent in
        ``data.resolved.attachments``. Raises ``UserActionError`` for what a Discord client would
        refuse (unknown command, missing/invalid option). Unlike the page, it does not hide commands
        by ``default_member_permissions``: in-code checks stay testable.
        """
        if not self.gateway.has_session:
            await self.wait_until_ready()
        return send_command(self.state, name, options, user=user, channel=channel)

    async def click(self, message: Message, custom_id: str, *, user: User) -> Interaction:
        """Click the button ``custom_id`` on ``message`` (the message's current version)."""
        return use_component(self.state, self._current(message), custom_id, user=user)

    async def select(self, message: Message, custom_id: str, values: list[str], *, user: User) -> Interaction:
        """Choose ``values`` in the select menu ``custom_id`` (component_type 3 for string selects)."""
        return use_component(self.state, self._current(message), custom_id, user=user, values=values)

    def modal_for(self, user: User) -> Modal | None:
        """The modal open on ``user``'s screen, if any (one at a time, as in the Discord client)."""
        return self.state.modals.get(user.id)

    async def wait_for_modal(
        self,
        interaction: Interaction | None = None,
        *,
        user: User | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - the test API's documented shape
    ) -> Modal:
        """The modal the bot opened in answer to ``interaction`` (a command or a click), or the one
        open for ``user``; one already open counts. Its ``title``, ``custom_id``, ``fields``
        (``custom_id``, ``label``, ``value``, ``required``, ``min_length``/``max_length``, a select's
        ``options``) and ``values`` (the pre-filled ones) are what the user sees."""
        if interaction is None and user is None:
            raise TypeError("wait_for_modal needs an interaction or a user")

        def matches(modal: Modal) -> bool:
            return not modal.closed and (
                modal.interaction is interaction if interaction is not None else modal.user is user
            )

        found = next((m for m in self.state.modals.values() if matches(m)), None)
        if found is not None:
            return found
        whose = f"interaction {interaction.id}" if interaction is not None else getattr(user, "username", "")
        event = await self.state.wait_for(
            lambda e: e.kind == "modal_open" and e.modal is not None and matches(e.modal),
            timeout,
            f"a modal opened for {whose}",
        )
        assert event.modal is not None
        return event.modal

    async def submit_modal(
        self, modal: Modal, values: Mapping[str, str | list[str]] | None = None, *, user: User
    ) -> Interaction:
        """Fill in and submit ``modal`` as ``user``: text by custom_id, a list of values for a select;
        a field left out keeps its pre-filled value. Raises ``UserActionError`` where the client
        would not submit (a required field empty, a text too short or long, the modal closed)."""
        return submit_modal(self.state, modal, values or {}, user=user)

    def dismiss_modal(self, modal: Modal, *, user: User) -> None:
        """Close ``modal`` without submitting (Cancel): the bot hears nothing, as on Discord."""
        dismiss_modal(self.state, modal, user=user)

    def say(self, content: str, *, user: User, channel: Channel | None = None) -> Message:
        """A plain message typed by ``user`` (in a DM only its user can; a DM message reaches a bot
        with the DIRECT_MESSAGES intent)."""
        where = channel or self.channel
        if not self.state.may_view(user.id, where.id):
            raise UserActionError(f"{user.username} cannot write in another user's DM")
        return self.state.create_message(where.id, user, content=content)

    def delete_message(self, message: Message) -> None:
        """Delete (or dismiss) a message as a user would: the bot's next edit gets 404 code 10008."""
        self.state.delete_message(self._current(message))

    def _current(self, message: Message) -> Message:
        return self.state.messages.get(message.id, message)

    # -- waiting for the bot ----------------------------------------------------------------------
    async def wait_for_message(
        self,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the test API's documented shape
        channel: Channel | None = None,
        existing: bool = True,
        what: str = "",
    ) -> Message:
        """The first message (created or edited) for which ``predicate`` holds, in ``channel`` (a guild
        channel or a DM; None: anywhere).

        With ``existing`` (default) messages already there are checked first, newest first, so a
        reply that arrived before the call is not missed. Deleted messages never match. ``what``: the
        message in words, for the time-out's error.
        """
        check = predicate or (lambda m: True)

        def matches(message: Message) -> bool:
            return (
                not message.deleted
                and (channel is None or message.channel_id == channel.id)
                and check(message)
            )

        if existing:
            for message in sorted(self.state.messages.values(), key=lambda m: m.id, reverse=True):
                if matches(message):
                    return message
        event = await self.state.wait_for(
            lambda e: (
                e.kind in ("message_create", "message_update")
                and e.message is not None
                and matches(e.message)
            ),
            timeout,
            what or "a message that matches",
        )
        assert event.message is not None
        return event.message

    async def wait_for_response(
        self,
        interaction: Interaction,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the test API's documented shape
    ) -> Message:
        """A message that answers ``interaction`` (its original response or a followup)."""
        check = predicate or (lambda m: True)
        what = interaction.command_name or interaction.custom_id or interaction.type.name
        return await self.wait_for_message(
            lambda m: m.interaction is interaction and not m.loading and check(m),
            timeout=timeout,
            what=f"an answer to interaction {interaction.id} ({what}) that matches",
        )

    async def wait_for_ack(self, interaction: Interaction, *, timeout: float = 5.0) -> Interaction:  # noqa: ASYNC109
        """Wait until the bot acknowledged ``interaction`` (callback of any type)."""
        if not interaction.acknowledged:
            await self.state.wait_for(
                lambda e: e.kind == "interaction_ack" and e.interaction is interaction,
                timeout,
                f"the bot to acknowledge interaction {interaction.id}",
            )
        return interaction

    async def wait_until_ready(self, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until a bot has IDENTIFYed (READY and GUILD_CREATE sent)."""
        if not self.gateway.has_session:
            await self.state.wait_for(lambda e: e.kind == "gateway_ready", timeout, "a bot to IDENTIFY")

    async def wait_for_resume(self, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await self.state.wait_for(lambda e: e.kind == "gateway_resumed", timeout, "the bot to RESUME")

    async def wait_for_commands(self, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the bot synced (global or guild) commands."""
        if not self.state.all_commands():
            await self.state.wait_for(
                lambda e: e.kind == "commands_update" and bool(self.state.all_commands()),
                timeout,
                "the bot to sync its slash commands",
            )

    def messages(self, channel: Channel | None = None, *, visible_to: User | None = None) -> list[Message]:
        """Live messages in ``channel`` (default #general; a DM too), oldest first. ``visible_to``:
        only those that user sees (not others' ephemeral messages, nothing in others' DMs)."""
        user_id = visible_to.id if visible_to is not None else None
        found = [m for m in self.state.messages.values() if m.channel_id == (channel or self.channel).id]
        return [m for m in found if not m.deleted and (visible_to is None or self.state.can_see(user_id, m))]

    # -- making trouble ---------------------------------------------------------------------------
    def expire_tokens(self) -> int:
        """Expire every interaction token issued so far: webhook calls with them get 401 50027."""
        return self.state.expire_tokens()

    def set_rate_limit(
        self, scope: Scope, limit: int | None, per: float = 1.0, *, headers: bool = True
    ) -> None:
        """``limit`` requests per ``per`` s per webhook token (``"webhook"``) or per channel
        (``"channel"``); ``None`` turns it off. ``headers=False`` hides X-RateLimit-* on allowed
        requests (a limit shared with other clients), so the bot runs into real 429s."""
        self.state.ratelimits.set(scope, None if limit is None else Limit(limit, per, headers))

    async def disconnect_gateway(self, code: int = 4000) -> None:
        """Drop the bot's gateway connection(s); discord.py reconnects and RESUMEs."""
        await self.gateway.disconnect(code)

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: discord.py closes and RESUMEs."""
        self.gateway.request_reconnect()

    def invalidate_session(self) -> None:
        """Send op 9 (not resumable): discord.py IDENTIFYs afresh."""
        self.gateway.invalidate_sessions()

    def fail_next(
        self, count: int, status: int = 429, scope: FaultScope = "all", *, retry_after: float = RETRY_AFTER
    ) -> None:
        """The next ``count`` REST requests in ``scope`` answer ``status`` (429 or 500-599).

        ``scope``: ``"all"``, ``"webhook"`` (edits and followups with the interaction token),
        ``"callback"`` (acks) or ``"channel"`` (bot-token channel routes). A 429 is Discord's, with
        ``Via`` and ``retry_after`` (0.05 s): discord.py retries it, five attempts in all, then raises
        ``HTTPException`` (429). What it does with each 5xx: see :mod:`imaginebot.mockdiscord.faults`.
        """
        self.state.faults.fail_next(count, status, scope, retry_after=retry_after)

    def outage(self, seconds: float, status: int = 503, scope: FaultScope = "all") -> None:
        """Every REST request in ``scope`` answers ``status`` for ``seconds``."""
        self.state.faults.outage(seconds, status, scope)

    def slow(self, delay: float, seconds: float | None = None, scope: FaultScope = "all") -> None:
        """REST requests in ``scope`` wait ``delay`` s before being handled, for ``seconds`` (None:
        until ``clear_faults()``)."""
        self.state.faults.slow(delay, seconds, scope)

    async def drop_gateway(self, seconds: float = 0.0) -> None:
        """Close the bot's gateway connection(s) and answer HTTP 503 to new ones for ``seconds``;
        discord.py retries with its backoff (0-2 s, then 0-4 s, …) and RESUMEs once let in."""
        await self.state.faults.drop_gateway(seconds)

    def clear_faults(self) -> None:
        """End every fault (runs of errors, outage, slow answers, gateway refusal)."""
        self.state.faults.clear()

    @property
    def faults(self) -> Faults:
        """The faults themselves: ``faults.describe()`` tells what is active."""
        return self.state.faults

    def deny_bot(self, channel: Channel, *, edit: bool = True, send: bool = False) -> None:
        """Take permissions in ``channel`` away from the bot token: a PATCH of a message answers 403
        code 50001 "Missing Access" (``edit``), a new message 403 code 50013 "Missing Permissions"
        (``send``). Requests with an interaction token are not affected. For a user who closed DMs,
        see ``block_dms``."""
        self.state.deny_bot(channel.id, edit=edit, send=send)

    def allow_bot(self, channel: Channel) -> None:
        """Give the bot token back what ``deny_bot`` took in ``channel``."""
        self.state.deny_bot(channel.id, edit=False, send=False)

    @property
    def request_log(self) -> list[RequestLogEntry]:
        return self.state.request_log

    def requests(
        self, *, status: int | None = None, path_contains: str = "", injected: bool | None = None
    ) -> list[RequestLogEntry]:
        """Logged API requests; ``injected`` picks those a fault answered (True) or not (False)."""
        return [
            e
            for e in self.state.request_log
            if (status is None or e.status == status)
            and path_contains in e.path
            and (injected is None or e.injected == injected)
        ]


@contextlib.asynccontextmanager
async def run_mock_discord(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    rate_limits: bool = False,
    state: MockState | None = None,
    **options: Any,
) -> AsyncIterator[MockDiscord]:
    """Serve the local Discord on ``host:port`` (0: a free port) until the block ends.

    ``options`` go to :class:`MockState` (``ack_timeout``, ``token_lifetime``, ``attachment_size_limit``,
    ``heartbeat_interval``, ``bot_token``). ``rate_limits=True`` turns on realistic limits (the
    interactive mode); tests usually leave them off and set them with ``set_rate_limit``.
    """
    state = state or MockState(rate_limits=rate_limits, **options)
    app = create_app(state)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound[1]}"
        state.base_url = url
        yield MockDiscord(state, app[GATEWAY_KEY], url)
    finally:
        await runner.cleanup()
