"""The websocket gateway: HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeats, RESUME with replay.

discord.py asks for ``compress=zlib-stream`` but only decompresses *binary* frames, so plain text
JSON frames are fine (gateway.py:508). Each connection has one writer task fed by a queue, so
dispatches leave in sequence order. A session outlives its connection: dispatches made while the
bot is away are kept and replayed after RESUME, as Discord does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .models import iso
from .state import MockState, StateEvent

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT = 0, 1, 2, 6, 7
REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 8, 9, 10, 11
REPLAY_LIMIT = 2000
GUILD_MEMBERS = 1 << 1


@dataclass(eq=False)
class Connection:
    ws: web.WebSocketResponse
    resume_url: str
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    session: Session | None = None


@dataclass(eq=False)
class Session:
    id: str
    intents: int
    seq: int = 0
    sent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REPLAY_LIMIT))
    conn: Connection | None = None


class GatewayHub:
    """Every bot session; implements ``state.Dispatcher``."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self.identifies = 0
        self.resumes = 0
        self.refused = 0  # websocket upgrades answered 503 during a gateway drop

    @property
    def connected(self) -> bool:
        return any(s.conn is not None for s in self.sessions.values())

    @property
    def has_session(self) -> bool:
        return bool(self.sessions)

    def dispatch(self, event: str, data: Mapping[str, Any], *, intent: int | None = None) -> None:
        for session in list(self.sessions.values()):
            if intent is None or session.intents & intent:
                self._send_dispatch(session, event, data)

    def _send_dispatch(self, session: Session, event: str, data: Mapping[str, Any]) -> None:
        session.seq += 1
        payload = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.sent.append(payload)
        if session.conn is not None:
            session.conn.queue.put_nowait(payload)

    # -- forcing the bot to reconnect -------------------------------------------------------------
    async def disconnect(self, code: int = 4000) -> None:
        """Close every connection. Codes other than 4004 and 4010-4014 make discord.py RESUME."""
        await asyncio.gather(*(c.ws.close(code=code) for c in list(self.connections)))

    def request_reconnect(self) -> None:
        """op 7 RECONNECT: the client closes and RESUMEs."""
        for conn in self.connections:
            conn.queue.put_nowait({"op": RECONNECT, "d": None})

    def invalidate_sessions(self) -> None:
        """op 9 with d=false: the client forgets its session and IDENTIFYs again."""
        for conn in self.connections:
            conn.queue.put_nowait({"op": INVALID_SESSION, "d": False})
        self.sessions.clear()

    # -- the websocket ----------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        if self.state.faults.gateway_refused:
            # An HTTP error to the upgrade, which discord.py retries with backoff (faults.py says why
            # accepting and closing at once would not do).
            self.refused += 1
            raise web.HTTPServiceUnavailable(text="gateway unavailable (fault injection)")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        resume_url = str(request.url.with_scheme("wss" if request.secure else "ws").with_query(None))
        conn = Connection(ws, resume_url)
        self.connections.add(conn)
        writer = asyncio.create_task(self._writer(conn))
        conn.queue.put_nowait(
            {"op": HELLO, "d": {"heartbeat_interval": int(self.state.heartbeat_interval * 1000)}}
        )
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                await self._on_payload(conn, payload)
        finally:
            conn.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer
            self.connections.discard(conn)
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
        return ws

    async def _writer(self, conn: Connection) -> None:
        while (payload := await conn.queue.get()) is not None:
            if conn.ws.closed:
                break
            try:
                await conn.ws.send_str(json.dumps(payload))
            except ConnectionError:
                break

    async def _on_payload(self, conn: Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == HEARTBEAT:
            conn.queue.put_nowait({"op": HEARTBEAT_ACK, "d": None})
        elif op == IDENTIFY and isinstance(data, dict):
            await self._identify(conn, data)
        elif op == RESUME and isinstance(data, dict):
            await self._resume(conn, data)
        elif op == REQUEST_MEMBERS and isinstance(data, dict) and conn.session is not None:
            self._send_members(conn.session, data)
        elif op not in (3, 4):  # presence and voice updates are accepted and ignored
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        if data.get("token") != self.state.bot_token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        # A new IDENTIFY replaces sessions nobody can resume any more (a restarted bot).
        for stale in [s for s in self.sessions.values() if s.conn is None]:
            del self.sessions[stale.id]
        session = Session(secrets.token_hex(16), int(data.get("intents") or 0), conn=conn)
        conn.session = session
        self.sessions[session.id] = session
        self.identifies += 1
        self._send_dispatch(session, "READY", self._ready(session, conn))
        self._send_dispatch(session, "GUILD_CREATE", self.guild_payload(session.intents))
        self.state.emit(StateEvent("gateway_ready", detail=session.id))

    async def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != self.state.bot_token or session is None:
            conn.queue.put_nowait({"op": INVALID_SESSION, "d": False})
            return
        if session.conn is not None and session.conn is not conn:
            await session.conn.ws.close(code=4000)
        session.conn, conn.session = conn, session
        seq = int(data.get("seq") or 0)
        for missed in [p for p in session.sent if p["s"] > seq]:
            conn.queue.put_nowait(missed)
        self.resumes += 1
        self._send_dispatch(session, "RESUMED", {})
        self.state.emit(StateEvent("gateway_resumed", detail=session.id))

    def _ready(self, session: Session, conn: Connection) -> dict[str, Any]:
        user = {**self.state.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0}
        return {
            "v": 10,
            "user": user,
            "guilds": [{"id": str(self.state.guild_id), "unavailable": True}],
            "session_id": session.id,
            "resume_gateway_url": conn.resume_url,
            "application": {"id": str(self.state.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
        }

    def guild_payload(self, intents: int) -> dict[str, Any]:
        state = self.state
        # Without the privileged GUILD_MEMBERS intent Discord sends only the bot's own member.
        shown = state.members if intents & GUILD_MEMBERS else [state.bot]
        members = [u.member_payload() for u in shown]
        return {
            "id": str(state.guild_id),
            "name": state.guild_name,
            "owner_id": str(next(u.id for u in state.members if state.is_moderator(u) and not u.bot)),
            "icon": None,
            "roles": [r.payload() for r in state.roles],
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": len(state.members),
            "members": members,
            "channels": [c.payload() for c in state.channels.values()],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "large": False,
            "unavailable": False,
            "joined_at": iso(state.bot.joined_at),
            "preferred_locale": "en-US",
            "mfa_level": 0,
            "verification_level": 0,
            "premium_tier": 0,
        }

    def _send_members(self, session: Session, data: dict[str, Any]) -> None:
        query = str(data.get("query") or "").lower()
        ids = {int(i) for i in data.get("user_ids") or []}
        members = self.state.members
        users = (
            [u for u in members if u.id in ids]
            if ids
            else [u for u in members if u.username.startswith(query)]
        )
        chunk: dict[str, Any] = {
            "guild_id": str(self.state.guild_id),
            "members": [u.member_payload() for u in users],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if "nonce" in data:
            chunk["nonce"] = data["nonce"]
        self._send_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)
