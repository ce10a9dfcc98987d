"""Point an unmodified discord.py at any Discord-compatible server (the local Discord, a proxy...).

discord.py has no setting or environment variable for this; two class attributes decide everything:
``discord.http.Route.BASE`` (every REST route, interaction callbacks and webhooks included, builds its
URL from it when the route is created) and ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (a plain
``Client``/``Bot`` never asks ``GET /gateway``; it connects there and later resumes at READY's
``resume_gateway_url``). Call :func:`use_discord_url` before ``bot.start()``; never call
``discord.http._set_api_version()`` afterwards, it resets ``Route.BASE``.
"""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl

__all__ = ["DEFAULT_DISCORD_URL", "current_discord_url", "use_discord_url"]

DEFAULT_DISCORD_URL = "https://discord.com"
_API_PATH = "/api/v10"


def use_discord_url(url: str) -> None:
    """Send discord.py's REST calls to ``{url}/api/v10`` and its gateway to ``url`` with ws(s)://.

    ``use_discord_url("http://127.0.0.1:8765")`` sets ``Route.BASE = "http://127.0.0.1:8765/api/v10"``
    and ``DEFAULT_GATEWAY = yarl.URL("ws://127.0.0.1:8765/")``. ``use_discord_url(DEFAULT_DISCORD_URL)``
    restores real Discord's values.
    """
    base = yarl.URL(url)
    if base.scheme not in ("http", "https") or not base.host:
        raise ValueError(f"discord url must be an absolute http:// or https:// URL, not {url!r}")
    if url.rstrip("/") == DEFAULT_DISCORD_URL:
        discord.http.Route.BASE = DEFAULT_DISCORD_URL + _API_PATH
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL("wss://gateway.discord.gg/")
        return
    root = str(base.with_query(None).with_fragment(None)).rstrip("/")
    discord.http.Route.BASE = root + _API_PATH
    ws_scheme = "wss" if base.scheme == "https" else "ws"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(root + "/").with_scheme(ws_scheme)


def current_discord_url() -> str:
    """The base URL discord.py's REST calls go to now (``Route.BASE`` without ``/api/v10``)."""
    base = discord.http.Route.BASE
    return base[: -len(_API_PATH)] if base.endswith(_API_PATH) else base
