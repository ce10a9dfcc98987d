"""The app factory: REST under /api/v10, the gateway at /, the web page under /app/."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

from . import errors, page, rest, webhooks
from .gateway import GatewayHub
from .state import REQUEST_SIZE_LIMIT, STATE_KEY, MockState, RequestLogEntry

log = logging.getLogger(__name__)

GATEWAY_KEY = web.AppKey("mockdiscord_gateway", GatewayHub)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def discord_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Fault injection, Discord's JSON errors for DiscordError/Refused, and a log entry for every
    API request (faulted ones included)."""
    state = request.app[STATE_KEY]
    if not state.base_url:
        state.base_url = str(request.url.origin())
    code: int | None = None
    injected = False
    try:
        await state.faults.apply(request)  # may wait (slow answers) or raise Refused (a fault)
        response = await handler(request)
    except errors.DiscordError as exc:
        code = exc.code
        response = exc.response()
    except errors.Refused as exc:
        response, injected = exc.response, exc.injected
    except web.HTTPRequestEntityTooLarge:
        code, response = 40005, errors.too_large().response()
    except web.HTTPNotFound:
        if not request.path.startswith("/api/"):
            raise
        code, response = 0, errors.not_found().response()
    except web.HTTPMethodNotAllowed:
        if not request.path.startswith("/api/"):
            raise
        code, response = 0, errors.DiscordError(405, 0, "405: Method Not Allowed").response()
    if response.status >= 400:
        # Discord reads the whole body before refusing; unread uploads would reset the connection,
        # and discord.py only retries resets with BSD/Windows errnos.
        await request.release()
    if request.path.startswith("/api/"):
        authorization = request.headers.get("Authorization")
        auth: Literal["bot", "none", "invalid"] = "none"
        if authorization is not None:
            auth = "bot" if authorization == f"Bot {state.bot_token}" else "invalid"
        state.log(
            RequestLogEntry(
                time.monotonic(), request.method, request.path, response.status, code, auth, injected
            )
        )
        shown = " (injected)" if injected else ""
        log.debug("%s %s -> %s%s", request.method, request.path, response.status, shown)
    return response


async def _root(request: web.Request) -> web.StreamResponse:
    """discord.py connects its gateway to ``ws://host:port/``; a browser there goes to the page."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await request.app[GATEWAY_KEY].handle(request)
    raise web.HTTPFound("/app/")


async def _close_websockets(app: web.Application) -> None:
    # on_shutdown, not cleanup_ctx: the runner waits for open websocket handlers *before* cleanup.
    await app[GATEWAY_KEY].disconnect(code=1001)
    await page.close_sockets(app)


def create_app(state: MockState) -> web.Application:
    """The local Discord as an aiohttp application (``aiohttp_client(create_app(MockState()))``)."""
    app = web.Application(middlewares=[discord_errors], client_max_size=REQUEST_SIZE_LIMIT + (1 << 20))
    app[STATE_KEY] = state
    hub = GatewayHub(state)
    state.gateway = hub
    state.faults.gateway = hub
    app[GATEWAY_KEY] = hub
    app.router.add_get("/", _root)
    app.add_routes(rest.routes)
    app.add_routes(webhooks.routes)
    page.setup(app)
    app.on_shutdown.append(_close_websockets)
    return app
