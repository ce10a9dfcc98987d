"""Who sees what in the gallery: signed, expiring links, which ``/gallery`` hands out in Discord.

A link carries a token: the server, the user, whether they moderate, and when it expires, signed with
HMAC-SHA256 under a secret the bot creates on its first start (``<data_dir>/gallery.secret``, mode 0600,
never logged). A moderator's token opens the whole server's gallery with its moderation actions; a
student's only their own images. Nothing in the token is secret but the signature; changing any byte of
it, or using it after it expired, gets 403.

Hand-written on the standard library's ``hmac``: the token is four fields and a MAC, and checking it is
``hmac.compare_digest``; itsdangerous would add a dependency for the same few lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from imaginebot.errors import ConfigError
from imaginebot.store_models import Job

log = logging.getLogger(__name__)

SECRET_FILE = "gallery.secret"
SECRET_BYTES = 32
_CONTEXT = b"imaginebot gallery link v1\n"  # what this key signs; a token from another use never verifies
_FORM_CONTEXT = b"imaginebot gallery form v1\n"


def utc_now() -> datetime:
    return datetime.now(UTC)


class LinkRefused(Exception):
    """A token that was changed, is malformed, or has expired (403). ``str(e)`` is the sentence to show."""


@dataclass(frozen=True)
class Viewer:
    """Whom a valid token speaks for."""

    guild_id: int
    user_id: int
    moderator: bool
    expires_at: datetime

    def may_see(self, job: Job) -> bool:
        """A job of this server that the viewer may look at (a student: only their own)."""
        return job.guild_id == self.guild_id and (self.moderator or job.user_id == self.user_id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # one form per token: a changed character is a changed token, even in spare bits
        raise ValueError("not canonical base64")
    return data


class LinkSigner:
    """Signs viewers into tokens and checks tokens back into viewers."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"the gallery's secret must be at least {SECRET_BYTES} bytes")
        self._secret = secret

    def __repr__(self) -> str:  # never show the secret, even in a traceback's locals
        return "LinkSigner(<secret>)"

    def _mac(self, context: bytes, data: bytes) -> bytes:
        return hmac.new(self._secret, context + data, hashlib.sha256).digest()

    def sign(self, viewer: Viewer) -> str:
        role = "m" if viewer.moderator else "s"
        payload = f"{viewer.guild_id}.{viewer.user_id}.{role}.{int(viewer.expires_at.timestamp())}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(_CONTEXT, payload))}"

    def verify(self, token: str, now: datetime) -> Viewer:
        """The viewer ``token`` speaks for; LinkRefused when it was changed or has expired."""
        try:
            encoded, signature = token.split(".")
            payload, mac = _unb64(encoded), _unb64(signature)
        except (ValueError, binascii.Error):
            raise LinkRefused("This link is not a valid gallery link.") from None
        if not hmac.compare_digest(mac, self._mac(_CONTEXT, payload)):
            raise LinkRefused("This link is not a valid gallery link.")
        guild, user, role, expires = payload.decode().split(".")  # signed by us: well formed
        viewer = Viewer(int(guild), int(user), role == "m", datetime.fromtimestamp(int(expires), UTC))
        if now >= viewer.expires_at:
            raise LinkRefused("This gallery link has expired.")
        return viewer

    def form_key(self, token: str) -> str:
        """What the gallery's forms carry along with the session's token: a page of another site can't know
        it, so it can't post a takedown in a moderator's name (on top of the cookie's SameSite=Lax)."""
        return _b64(self._mac(_FORM_CONTEXT, token.encode()))[:32]


def load_or_create_secret(data_dir: Path) -> bytes:
    """The gallery's signing secret from ``<data_dir>/gallery.secret``, created (mode 0600) on first start."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(SECRET_BYTES) + "\n")
        log.info("created the gallery's signing secret in %s", path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s could be read by others (mode %o); it is 0600 now", path, mode)
    try:
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (ValueError, UnicodeDecodeError):
        secret = b""
    if len(secret) < SECRET_BYTES:
        raise ConfigError(
            f"{path} is not a gallery secret the bot made: delete it, and the bot makes a new one at its "
            "next start (links handed out before stop working)."
        )
    return secret


@dataclass(frozen=True)
class GalleryLinks:
    """What ``/gallery`` hands out: links to ``base_url`` that work for ``lifetime``."""

    signer: LinkSigner
    base_url: str
    lifetime: timedelta
    clock: Callable[[], datetime] = utc_now

    def link(self, guild_id: int, user_id: int, *, moderator: bool) -> tuple[str, datetime]:
        """(the link, when it expires)."""
        expires = (self.clock() + self.lifetime).replace(microsecond=0)
        token = self.signer.sign(Viewer(guild_id, user_id, moderator, expires))
        return f"{self.base_url}/gallery?t={token}", expires


def public_base_url(host: str, port: int) -> str:
    """The gallery's address as others reach it when the operator did not say (IMAGINEBOT_WEB_URL): the host
    it listens on, or, when that is every address (0.0.0.0, ::), this machine's address on its network."""
    if host in ("", "0.0.0.0", "::"):
        host = _network_address()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _network_address() -> str:
    # The address this machine's outgoing route uses: connect() on a UDP socket sends nothing, it only picks
    # the route (any private address will do). Without a route, the host name is the best guess left.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 9))
            address = str(probe.getsockname()[0])
    except OSError:
        address = ""
    return address if address and not address.startswith("0.") else socket.gethostname()
