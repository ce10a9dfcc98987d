"""Rate limits per webhook token and per channel, answered the way discord.py expects.

A fixed window per key (``limit`` requests per ``per`` seconds). Allowed requests carry
``X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket`` (discord.py then waits by itself when
``Remaining`` reaches 0); refused ones get 429 with a ``Via`` header and a JSON body with
``retry_after`` and ``global: false``, which discord.py sleeps on and retries up to 5 times.
``headers=False`` hides the headers on allowed requests, the way a limit shared with other
clients looks from one client: the bot then runs into real 429s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from .errors import json_response
from .payloads import RateLimitedBody

Scope = Literal["webhook", "channel"]
SCOPES: tuple[Scope, ...] = ("webhook", "channel")


@dataclass(frozen=True)
class Limit:
    limit: int
    per: float
    headers: bool = True


# Observed on real Discord (docs/discord-protocol.md): ~5 per 2 s per webhook token, 30 per 60 s per channel.
REALISTIC_LIMITS: dict[Scope, Limit] = {"webhook": Limit(5, 2.0), "channel": Limit(30, 60.0)}


@dataclass
class _Window:
    reset_at: float
    count: int = 0


class RateLimiter:
    def __init__(self, enabled: bool = False) -> None:
        self.limits: dict[Scope, Limit | None] = dict.fromkeys(SCOPES)
        if enabled:
            self.limits.update(REALISTIC_LIMITS)
        self._windows: dict[tuple[Scope, str], _Window] = {}
        self.refused = 0

    def set(self, scope: Scope, limit: Limit | None) -> None:
        self.limits[scope] = limit
        for key in [k for k in self._windows if k[0] == scope]:
            del self._windows[key]

    def check(self, scope: Scope, key: str) -> tuple[dict[str, str], web.Response | None]:
        """Count one request: (headers for a response, or a ready 429 response)."""
        limit = self.limits[scope]
        if limit is None:
            return {}, None
        now = time.monotonic()
        window = self._windows.get((scope, key))
        if window is None or now >= window.reset_at:
            window = self._windows[(scope, key)] = _Window(reset_at=now + limit.per)
        reset_after = max(window.reset_at - now, 0.001)
        if window.count >= limit.limit:
            self.refused += 1
            return {}, rate_limited(reset_after, limit=limit.limit, bucket=f"mock-{scope}")
        window.count += 1
        headers = _headers(limit.limit, limit.limit - window.count, reset_after, f"mock-{scope}")
        return (headers if limit.headers else {}), None


def _headers(limit: int, remaining: int, reset_after: float, bucket: str) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": bucket,
    }


def rate_limited(retry_after: float, *, limit: int, bucket: str) -> web.Response:
    """Discord's 429: a JSON body with ``retry_after`` and ``global: false``, and a ``Via`` header.

    discord.py retries a 429 only with both: without ``Via`` (or with a non-JSON body) it takes the
    429 for a Cloudflare ban and raises at once (http.py:712, webhook/async_.py:208).
    """
    headers = _headers(limit, 0, retry_after, bucket)
    headers.update({"X-RateLimit-Scope": "user", "Retry-After": str(max(1, round(retry_after)))})
    headers["Via"] = "1.1 google"
    body: RateLimitedBody = {
        "message": "You are being rate limited.",
        "retry_after": round(retry_after, 3),
        "global": False,
        "code": 0,
    }
    return json_response(body, status=429, headers=headers)
