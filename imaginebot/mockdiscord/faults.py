"""Fault injection: the local Discord on a bad day, for tests and for people trying the bot.

The app's middleware calls :meth:`Faults.apply` before every REST request under ``/api/v10/``
(bot-token routes, interaction callbacks, interaction webhooks); the page's own ``/app/`` routes and
attachment downloads are never faulted. A faulted request is answered without being handled, and
is logged in ``state.request_log`` with ``injected=True``.

- ``fail_next(count, status=429, scope="all")``: the next ``count`` matching requests answer ``status``.
- ``outage(seconds, status=503, scope="all")``: every matching request answers ``status`` for ``seconds``.
- ``slow(delay, seconds=None, scope="all")``: matching requests wait ``delay`` s before being handled.
- ``drop_gateway(seconds=0.0)``: close the bot's gateway connections and answer HTTP 503 to new
  websocket upgrades for ``seconds``.

``scope`` picks requests by path: ``"webhook"`` (``/webhooks/…``: edits and followups made with the
interaction token), ``"callback"`` (``/interactions/…/callback``), ``"channel"`` (bot-token
``/channels/…``) or ``"all"``. A new outage or slow spell replaces the previous one; runs of errors
queue up, and a request uses up the first run whose scope it matches. During an outage, runs wait.

What discord.py 2.7.1 does with each answer (``http.py`` serves bot-token routes, the webhook
adapter ``webhook/async_.py`` serves interaction callbacks and webhooks):

- 429 with ``Via`` and a JSON body: both sleep ``retry_after`` and retry, five attempts in all
  (http.py:646, 754; async_.py:171, 212-215), then raise ``HTTPException`` with status 429
  (http.py:793, async_.py:237). Without ``Via`` they raise at once (http.py:712, async_.py:208).
  Fault 429s say ``retry_after`` 0.05 s by default; during a 429 outage, the time the outage has left.
- 5xx on a bot-token route: 500, 502, 504 and 524 sleep ``1 + 2 * tries`` s and retry
  (http.py:766), ``DiscordServerError`` after five tries (http.py:791), that is after 25 s of
  sleeping; 503 and every other 5xx raise ``DiscordServerError`` at once (http.py:775).
- 5xx on an interaction callback or webhook: every 5xx sleeps ``1 + 2 * attempt`` s and retries
  (async_.py:217-218), ``DiscordServerError`` after five attempts (async_.py:235), also after 25 s.
- Slow answers: discord.py waits; its aiohttp session keeps aiohttp's default 300 s total timeout
  (http.py:831), far above the 60 s a delay may be. A slowed callback can miss the 3 s ack deadline
  (the local Discord then answers 404 10062, as Discord does).
- A refused gateway: aiohttp raises ``WSServerHandshakeError`` (an ``aiohttp.ClientError``) for the
  503, which ``Client.connect`` retries after ``ExponentialBackoff`` (0-2 s, then 0-4 s, …) and
  then RESUMEs (client.py:739-790). Accepting the upgrade and closing it at once would be worse:
  a close before HELLO is a ``ReconnectWebSocket`` (gateway.py:663), retried with no backoff at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import http
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

from aiohttp import web

from . import errors
from .ratelimit import rate_limited

log = logging.getLogger(__name__)

FaultScope = Literal["all", "webhook", "callback", "channel"]
FAULT_SCOPES: tuple[FaultScope, ...] = ("all", "webhook", "callback", "channel")
API_PREFIX = "/api/v10/"
RETRY_AFTER = 0.05  # short, so that discord.py's retries of a fault 429 cost a test little
MAX_COUNT, MAX_SECONDS, MAX_DELAY = 1000, 3600.0, 60.0

# 5xx bodies as Discord's edge sends them: Cloudflare's HTML for 502/504, Envoy's plain text for 503,
# Discord's own JSON otherwise. discord.py reads anything but application/json as text.
_CLOUDFLARE = (
    "<html><head><title>{0}</title></head><body><center><h1>{0}</h1></center>"
    "<hr><center>cloudflare</center></body></html>"
)
_TEXT_BODIES = {
    502: ("text/html", _CLOUDFLARE.format("502 Bad Gateway")),
    503: ("text/plain", "upstream connect error or disconnect/reset before headers. reset reason: overflow"),
    504: ("text/html", _CLOUDFLARE.format("504 Gateway Time-out")),
}


class Gateway(Protocol):
    """What a gateway drop needs from the gateway (``GatewayHub``)."""

    async def disconnect(self, code: int = 4000) -> None: ...


@dataclass(frozen=True)
class FailNext:
    """A run of errors: the next ``count`` matching requests answer ``status``."""

    count: int
    status: int
    scope: FaultScope
    retry_after: float

    def __str__(self) -> str:
        return f"next {self.count} × {self.status} ({self.scope})"


@dataclass(frozen=True)
class Outage:
    status: int
    scope: FaultScope
    until: float  # time.monotonic()

    @property
    def seconds_left(self) -> float:
        return max(self.until - time.monotonic(), 0.0)

    def __str__(self) -> str:
        return f"{self.status} outage ({self.scope}), {self.seconds_left:.1f} s left"


@dataclass(frozen=True)
class Slow:
    delay: float
    scope: FaultScope
    until: float | None  # time.monotonic(); None: until cleared

    @property
    def seconds_left(self) -> float | None:
        return None if self.until is None else max(self.until - time.monotonic(), 0.0)

    def __str__(self) -> str:
        left = "until cleared" if self.seconds_left is None else f"{self.seconds_left:.1f} s left"
        return f"answers {self.delay:g} s late ({self.scope}), {left}"


@dataclass(frozen=True)
class FaultsSnapshot:
    """What is active at one moment (``Faults.describe()``), for the page and for logs."""

    fail_next: tuple[FailNext, ...] = ()
    outage: Outage | None = None
    slow: Slow | None = None
    gateway_refused_until: float | None = None  # time.monotonic()

    @property
    def active(self) -> bool:
        return bool(self.fail_next or self.outage or self.slow or self.gateway_refused_until)

    @property
    def gateway_refused_for(self) -> float:
        if self.gateway_refused_until is None:
            return 0.0
        return max(self.gateway_refused_until - time.monotonic(), 0.0)

    def __str__(self) -> str:
        parts = [str(f) for f in (*self.fail_next, self.outage, self.slow) if f is not None]
        if self.gateway_refused_until is not None:
            parts.append(f"gateway refused, {self.gateway_refused_for:.1f} s left")
        return "; ".join(parts) or "no faults"

    def to_json(self) -> dict[str, Any]:
        outage, slow = self.outage, self.slow
        return {
            "active": self.active,
            "text": str(self),
            "fail_next": [asdict(f) for f in self.fail_next],
            "outage": None
            if outage is None
            else {"status": outage.status, "scope": outage.scope, "seconds_left": outage.seconds_left},
            "slow": None
            if slow is None
            else {"delay": slow.delay, "scope": slow.scope, "seconds_left": slow.seconds_left},
            "gateway_refused_for": self.gateway_refused_for,
        }


def request_scope(path: str) -> FaultScope | None:
    """The scope a request path falls in; None outside ``/api/v10/`` (never faulted)."""
    if not path.startswith(API_PREFIX):
        return None
    rest = path[len(API_PREFIX) :]
    if rest.startswith("webhooks/"):
        return "webhook"
    if rest.startswith("interactions/") and rest.endswith("/callback"):
        return "callback"
    if rest.startswith("channels/"):
        return "channel"
    return "all"


def _matches(fault_scope: FaultScope, scope: FaultScope) -> bool:
    return fault_scope == "all" or fault_scope == scope


# -- one validator per argument, shared by the Python API and the page ----------------------------
def _check_status(status: int) -> int:
    if status != 429 and not 500 <= status <= 599:
        raise ValueError(f"status must be 429 or 500-599, got {status}")
    return status


def fault_scope(scope: object) -> FaultScope:
    """``scope`` as a FaultScope; ValueError naming the allowed ones otherwise."""
    for known in FAULT_SCOPES:
        if scope == known:
            return known
    raise ValueError(f"scope must be one of {', '.join(FAULT_SCOPES)}; got {scope!r}")


def _check_seconds(name: str, value: float, *, low: float = 0.0, high: float = MAX_SECONDS) -> float:
    if not low < value <= high:
        raise ValueError(f"{name} must be more than {low:g} and at most {high:g} s, got {value:g}")
    return float(value)


class Faults:
    """The faults in force on one local Discord (``state.faults``)."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None  # set by create_app
        self._runs: list[FailNext] = []
        self._outage: Outage | None = None
        self._slow: Slow | None = None
        self._gateway_refused_until: float | None = None

    # -- setting faults ---------------------------------------------------------------------------
    def fail_next(
        self, count: int, status: int = 429, scope: FaultScope = "all", *, retry_after: float = RETRY_AFTER
    ) -> None:
        """The next ``count`` requests in ``scope`` answer ``status`` (429 or 5xx)."""
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be 1-{MAX_COUNT}, got {count}")
        run = FailNext(
            count,
            _check_status(status),
            fault_scope(scope),
            _check_seconds("retry_after", retry_after, high=MAX_DELAY),
        )
        self._runs.append(run)
        log.info("fault injection: %s", self.describe())

    def outage(self, seconds: float, status: int = 503, scope: FaultScope = "all") -> None:
        """Every request in ``scope`` answers ``status`` for ``seconds``; replaces an earlier outage."""
        seconds = _check_seconds("seconds", seconds)
        self._outage = Outage(_check_status(status), fault_scope(scope), time.monotonic() + seconds)
        log.info("fault injection: %s", self.describe())

    def slow(self, delay: float, seconds: float | None = None, scope: FaultScope = "all") -> None:
        """Requests in ``scope`` wait ``delay`` s before being handled, for ``seconds`` (None: until
        cleared); replaces an earlier slow spell. A slowed callback can miss the 3 s ack deadline."""
        delay = _check_seconds("delay", delay, high=MAX_DELAY)
        until = None if seconds is None else time.monotonic() + _check_seconds("seconds", seconds)
        self._slow = Slow(delay, fault_scope(scope), until)
        log.info("fault injection: %s", self.describe())

    async def drop_gateway(self, seconds: float = 0.0) -> None:
        """Close the bot's gateway connections and refuse new ones (HTTP 503) for ``seconds``."""
        if not 0.0 <= seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be 0-{MAX_SECONDS:g}, got {seconds:g}")
        if seconds > 0:
            self._gateway_refused_until = time.monotonic() + seconds
        log.info("fault injection: gateway dropped; %s", self.describe())
        if self.gateway is not None:
            # 4000, not 1000: discord.py reconnects at once, meets the refusal, then backs off.
            await self.gateway.disconnect(4000)

    def clear(self) -> None:
        """End every fault."""
        self._runs.clear()
        self._outage = self._slow = self._gateway_refused_until = None
        log.info("fault injection: cleared")

    # -- reading them -----------------------------------------------------------------------------
    def describe(self) -> FaultsSnapshot:
        self._expire(time.monotonic())
        return FaultsSnapshot(tuple(self._runs), self._outage, self._slow, self._gateway_refused_until)

    @property
    def gateway_refused(self) -> bool:
        self._expire(time.monotonic())
        return self._gateway_refused_until is not None

    def _expire(self, now: float) -> None:
        if self._outage is not None and now >= self._outage.until:
            self._outage = None
        if self._slow is not None and self._slow.until is not None and now >= self._slow.until:
            self._slow = None
        if self._gateway_refused_until is not None and now >= self._gateway_refused_until:
            self._gateway_refused_until = None

    # -- the middleware's side --------------------------------------------------------------------
    async def apply(self, request: web.Request) -> None:
        """Before a request is handled: wait if answers are slow, raise ``Refused`` if it fails."""
        scope = request_scope(request.path)
        if scope is None:
            return
        self._expire(time.monotonic())
        if self._slow is not None and _matches(self._slow.scope, scope):
            await asyncio.sleep(self._slow.delay)
        now = time.monotonic()
        self._expire(now)
        if self._outage is not None and _matches(self._outage.scope, scope):
            self._refuse(request, self._outage.status, retry_after=self._outage.until - now)
        for index, run in enumerate(self._runs):
            if _matches(run.scope, scope):
                if run.count > 1:
                    self._runs[index] = replace(run, count=run.count - 1)
                else:
                    del self._runs[index]
                self._refuse(request, run.status, retry_after=run.retry_after)

    def _refuse(self, request: web.Request, status: int, *, retry_after: float) -> None:
        log.debug("fault injection: %s %s -> %s", request.method, request.path, status)
        raise errors.Refused(fault_response(request, status, retry_after), injected=True)


def fault_response(request: web.Request, status: int, retry_after: float) -> web.Response:
    """Discord's answer with ``status``: a 429 like ``ratelimit.py``'s, a 5xx like Discord's edge."""
    if status == 429:
        # A bucket per route, like Discord's, so that discord.py's own buckets keep their shape.
        resource = request.match_info.route.resource
        route = f"{request.method} {resource.canonical if resource is not None else request.path}"
        bucket = hashlib.sha1(route.encode(), usedforsecurity=False).hexdigest()[:16]
        return rate_limited(max(retry_after, 0.001), limit=5, bucket=bucket)
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:  # Cloudflare's 52x are no standard statuses
        reason = "Server Error"
    if status in _TEXT_BODIES:
        content_type, text = _TEXT_BODIES[status]
        return web.Response(status=status, reason=reason, text=text, content_type=content_type)
    response = errors.json_response({"message": f"{status}: {reason}", "code": 0}, status=status)
    response.set_status(status, reason)
    return response
