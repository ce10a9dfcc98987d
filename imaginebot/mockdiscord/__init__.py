"""The local Discord ("mock gateway"): enough of Discord's REST API and gateway for an unmodified
discord.py bot, plus a web page to act as the guild's users, plus a Python API for tests.

Everything binds to 127.0.0.1 unless told otherwise. Run it in-process::

    from imaginebot.discord_url import use_discord_url
    from imaginebot.mockdiscord import run_mock_discord

    async with run_mock_discord(host="127.0.0.1", port=0, rate_limits=True) as server:
        use_discord_url(server.url)        # discord.py's REST base and gateway -> the local Discord
        print("open", server.page_url)     # the live channel view
        async with Bot(...) as bot:
            await bot.start(server.bot_token)

``run_mock_discord(*, host="127.0.0.1", port=0, rate_limits=False, state=None, **options)`` yields a
:class:`MockDiscord` (``url``, ``page_url``, ``bot_token``, ``application_id``, ``guild_id``,
``channel``, users ``alice``/``bob``/``moderator``). ``port=0`` picks a free port. ``rate_limits``
turns on realistic per-webhook-token and per-channel limits (the interactive mode). ``options`` go to
:class:`MockState`: ``ack_timeout`` (3 s), ``token_lifetime`` (900 s), ``attachment_size_limit``
(10 MiB), ``heartbeat_interval`` (41.25 s), ``bot_token`` (random).

The test API on :class:`MockDiscord`: ``send_command(name, options, user=)``, ``click(message,
custom_id, user=)``, ``select(message, custom_id, values, user=)``, ``wait_for_message(predicate,
timeout=)``, ``wait_for_response(interaction)``, ``wait_for_ack``, ``expire_tokens()``,
``set_rate_limit(scope, limit, per)``, ``disconnect_gateway()``, ``request_reconnect()``,
``delete_message(message)``, ``request_log``. pytest fixtures: tests/conftest.py.

Modals (:mod:`.modals`): a bot's type 9 callback is checked as Discord checks it (title 1-45,
1-5 rows/Labels/text displays, custom_ids up to 100, text inputs' lengths and pre-filled values,
labels up to 45) and opens the modal for its user, one at a time. ``await wait_for_modal(interaction,
user=)`` returns the open :class:`Modal` (``title``, ``custom_id``, ``fields``, ``values``);
``submit_modal(modal, {custom_id: value}, user=)`` sends the MODAL_SUBMIT (with the message when a
button opened it: answers 6 and 7 act on that message), ``dismiss_modal(modal, user=)`` closes it
silently, ``modal_for(user)`` tells what is open. Attachment options take
``CommandFile(filename, data)``; the file is served from ``/attachments/...`` like a message's.

Direct messages: the bot opens one with ``POST /users/@me/channels`` (discord.py's ``create_dm``),
one DM channel per user, and sends, edits and deletes there as in a channel; MESSAGE_* events from a
DM reach only a bot with the DIRECT_MESSAGES intent (1 << 12), and a button click there arrives with
``user`` instead of ``member`` and no guild. ``dm_channel(user)`` is that channel (None until the bot
opened it; ``messages(dm)`` and ``wait_for_message(..., channel=dm)`` read it), ``block_dms(user)`` /
``allow_dms(user)`` close and reopen the user's DMs (sends answer 403 50007). On the page only that
user sees the DM, under "Direct messages". Slash commands in DMs are not modelled.

Making trouble on purpose (:mod:`.faults`; also on the page's "Faults" panel): ``fail_next(count,
status=429, scope="all")`` (a run of 429s or 5xx), ``outage(seconds, status=503, scope="all")``,
``slow(delay, seconds=None, scope="all")``, ``await drop_gateway(seconds=0.0)`` (close the gateway and
refuse reconnects for a while), ``clear_faults()``; ``scope`` is ``"all"``, ``"webhook"``,
``"callback"`` or ``"channel"``. ``deny_bot(channel, edit=True, send=False)`` / ``allow_bot(channel)``
take the bot token's permissions in a channel away (403 50001 / 50013) and give them back.

For aiohttp's own test client, the app factory: ``create_app(MockState()) -> web.Application``.
Layout: ``state``/``models`` (memory), ``rest`` and ``webhooks`` (REST routes), ``gateway``
(websocket), ``interactions`` (the users' side), ``faults`` (fault injection), ``page`` + ``static/``
(web page), ``server`` (in-process runner and test API).
"""

from .app import create_app
from .faults import Faults, FaultScope, FaultsSnapshot
from .interactions import CommandFile, UserActionError
from .modals import Modal, ModalField
from .models import Attachment, Channel, Interaction, Message, User
from .server import MockDiscord, run_mock_discord
from .state import MockState

__all__ = [
    "Attachment",
    "Channel",
    "CommandFile",
    "FaultScope",
    "Faults",
    "FaultsSnapshot",
    "Interaction",
    "Message",
    "MockDiscord",
    "MockState",
    "Modal",
    "ModalField",
    "User",
    "UserActionError",
    "create_app",
    "run_mock_discord",
]
