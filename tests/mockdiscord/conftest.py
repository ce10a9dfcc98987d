"""Fixtures for the local Discord's tests: the server and a small real bot (mockbot.EchoBot)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest_asyncio
from mockbot import EchoBot

from imaginebot.mockdiscord import MockDiscord


@pytest_asyncio.fixture
async def test_bot(mock_discord: MockDiscord, start_bot: Any) -> AsyncIterator[EchoBot]:
    bot = EchoBot(mock_discord.guild_id)

    async def on_app_command_error(interaction: discord.Interaction, error: Exception) -> None:
        bot.seen.errors.append(error)

    bot.tree.on_error = on_app_command_error  # type: ignore[method-assign]
    await start_bot(bot, wait_for_commands=True)
    yield bot
