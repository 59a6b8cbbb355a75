"""Small helpers every view uses: reach the bot's services from an interaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import discord

if TYPE_CHECKING:
    from bot.client import ImGenBot
    from orchestrator.sessions.service import SessionService


def app(interaction: discord.Interaction) -> ImGenBot:
    """The ImGenBot that received the interaction."""
    return cast("ImGenBot", interaction.client)


def sessions(interaction: discord.Interaction) -> SessionService:
    """The session facade."""
    return app(interaction).sessions


def uid(interaction: discord.Interaction) -> str:
    """The acting user's id as the orchestrator knows users (a string)."""
    return str(interaction.user.id)


async def defer_update(interaction: discord.Interaction) -> None:
    """Acknowledge a component click without changing its message (within Discord's 3 s)."""
    if not interaction.response.is_done():
        await interaction.response.defer()
