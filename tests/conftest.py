"""Fixtures shared by every test folder: the local Discord (mock_discord, start_bot)."""

pytest_plugins = ["imaginebot.mockdiscord.testing"]
