from __future__ import annotations

import discord.gateway
import discord.http
import pytest
import yarl

from imaginebot.discord_url import DEFAULT_DISCORD_URL, current_discord_url, use_discord_url


@pytest.fixture(autouse=True)
def restore_discord_url():
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


def test_points_rest_and_gateway_at_the_url() -> None:
    use_discord_url("http://127.0.0.1:8765/")
    assert discord.http.Route.BASE == "http://127.0.0.1:8765/api/v10"
    assert yarl.URL("ws://127.0.0.1:8765/") == discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    assert discord.http.Route("GET", "/users/@me").url == "http://127.0.0.1:8765/api/v10/users/@me"
    assert current_discord_url() == "http://127.0.0.1:8765"


def test_https_gives_wss_and_the_default_restores_discord() -> None:
    use_discord_url("https://discord.example.org")
    assert yarl.URL("wss://discord.example.org/") == discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    use_discord_url(DEFAULT_DISCORD_URL)
    assert discord.http.Route.BASE == "https://discord.com/api/v10"
    assert yarl.URL("wss://gateway.discord.gg/") == discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


@pytest.mark.parametrize("bad", ["127.0.0.1:8765", "ws://127.0.0.1:8765", "http://"])
def test_rejects_what_is_not_an_http_url(bad: str) -> None:
    with pytest.raises(ValueError, match="absolute http"):
        use_discord_url(bad)
