"""Signed, expiring links: tokens, the secret on disk (created once, 0600, never shown), and the address a
link points to when the bot listens on every address."""

from __future__ import annotations

import logging
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imaginebot.errors import ConfigError
from imaginebot.web.links import (
    SECRET_FILE,
    GalleryLinks,
    LinkRefused,
    LinkSigner,
    Viewer,
    load_or_create_secret,
    public_base_url,
)

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def test_a_token_says_who_until_when_and_any_change_refuses_it() -> None:
    signer = LinkSigner(b"s" * 32)
    viewer = Viewer(10, 2**63 - 1, True, NOW + timedelta(hours=1))
    token = signer.sign(viewer)
    assert signer.verify(token, NOW) == viewer
    assert len(token) < 150 and token.isascii() and "=" not in token and "/" not in token
    for i in range(len(token)):
        for other in ("A", "_"):
            changed = token[:i] + other + token[i + 1 :]
            if changed != token:
                with pytest.raises(LinkRefused, match="not a valid gallery link"):
                    signer.verify(changed, NOW)
    with pytest.raises(LinkRefused, match="not a valid"):
        LinkSigner(b"t" * 32).verify(token, NOW)  # another bot's key
    with pytest.raises(LinkRefused, match="expired"):
        signer.verify(token, NOW + timedelta(hours=1))
    student = signer.verify(signer.sign(Viewer(10, 5, False, NOW + timedelta(hours=1))), NOW)
    assert not student.moderator and student.user_id == 5
    assert "s" * 8 not in repr(signer)
    assert (
        signer.form_key(token) != signer.form_key(signer.sign(student)) and len(signer.form_key(token)) == 32
    )


def test_gallery_links_expire_after_their_lifetime() -> None:
    links = GalleryLinks(LinkSigner(b"s" * 32), "http://lab:8081", timedelta(hours=24), clock=lambda: NOW)
    url, expires = links.link(10, 1, moderator=False)
    assert url.startswith("http://lab:8081/gallery?t=") and expires == NOW + timedelta(hours=24)
    viewer = links.signer.verify(url.split("?t=")[1], NOW + timedelta(hours=23))
    assert (viewer.guild_id, viewer.user_id, viewer.moderator) == (10, 1, False)


def test_the_secret_is_made_once_with_mode_0600_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = load_or_create_secret(tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path / "data") == first
    path.chmod(0o644)
    assert load_or_create_secret(tmp_path / "data") == first and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.hex() not in caplog.text and "0600" in caplog.text
    path.write_text("not hex\n")
    with pytest.raises(ConfigError, match=f"{SECRET_FILE} is not a gallery secret the bot made: delete it"):
        load_or_create_secret(tmp_path / "data")


def test_a_link_of_a_bot_on_every_address_names_an_address_others_reach() -> None:
    assert public_base_url("127.0.0.1", 8081) == "http://127.0.0.1:8081"
    assert public_base_url("::1", 8081) == "http://[::1]:8081"
    for everywhere in ("0.0.0.0", "::"):
        url = public_base_url(everywhere, 8081)
        assert url.startswith("http://") and url.endswith(":8081")
        assert "0.0.0.0" not in url and "[::]" not in url
