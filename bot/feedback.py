"""Feedback text -> the session's prompt pipeline -> a suggestion message with Use / Edit / Discard."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from bot import render
from bot.views.suggestion import suggestion_view

if TYPE_CHECKING:
    from bot.client import ImGenBot

log = logging.getLogger(__name__)


async def suggest(
    bot: ImGenBot, thread: discord.Thread, session_id: str, user: discord.abc.User, text: str
) -> discord.Message:
    """Run the pipeline (typing indicator while it works) and post its suggestion in the thread."""
    async with thread.typing():
        result = await bot.sessions.refine(session_id, str(user.id), text)
    log.info("suggestion session=%s user=%s source=%s", session_id, user.id, result.source)
    return await thread.send(
        embed=render.suggestion_embed(result, by=user.display_name), view=suggestion_view(session_id)
    )
