"""Fixtures for the local Discord's tests: the server and small real bots (mockbot.EchoBot,
editbot.EditBot)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest_asyncio
from editbot import EditBot, app_command_errors
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


@pytest_asyncio.fixture
async def edit_bot(mock_discord: MockDiscord, start_bot: Any) -> AsyncIterator[EditBot]:
    """editbot.EditBot (modals, an attachment option, a multi-select), connected and synced."""
    bot = EditBot()
    bot.tree.on_error = app_command_errors(bot)  # type: ignore[method-assign]
    await start_bot(bot, wait_for_commands=True)
    yield bot
