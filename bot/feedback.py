"""Feedback text -> the session's prompt pipeline -> a suggestion message with Use / Edit / Discard."""

from __future__ import annotations

import contextlib
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
    """
    Run the pipeline within the budgets and post its suggestion in the thread.

    The member's cooldown and the session's one refine slot are taken first (LimitExceeded says when to try
    again); then the refine waits its turn for the model. While it waits, one message says so, and that same
    message becomes the suggestion: a queue of refines does not become a stack of status messages.
    """
    budgets = bot.budgets
    async with budgets.refine(session_id, str(user.id)):
        waiting: discord.Message | None = None
        if budgets.model_busy:
            waiting = await thread.send(content=render.waiting_for_model_text(user.display_name))
        try:
            async with budgets.llm, thread.typing():
                result = await bot.orch.refine(session_id, str(user.id), text)
        except BaseException:
            # No "waiting for the model…" may stay behind a refine that will never come.
            if waiting is not None:
                with contextlib.suppress(discord.HTTPException):
                    await waiting.delete()
            raise
        log.info("suggestion session=%s user=%s source=%s", session_id, user.id, result.source)
        embed = render.suggestion_embed(result, by=user.display_name)
        view = suggestion_view(session_id)
        if waiting is not None:
            return await waiting.edit(content=None, embed=embed, view=view)
        return await thread.send(embed=embed, view=view)
