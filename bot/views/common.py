"""Small helpers every view uses: reach the bot's services from an interaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import discord

from orchestrator.errors import NotAllowed

if TYPE_CHECKING:
    from bot.client import ImGenBot
    from orchestrator.service import Orchestrator


#: the message ref naming a session's thread (the relay writes it when it opens the thread)
THREAD = "discord.thread"


def final_ref(stage_id: str, n: int) -> str:
    """The db ref of a posted final (or upscaled) image: image `n` of a stage."""
    return f"discord.final.{stage_id}.{n}"


def app(interaction: discord.Interaction) -> ImGenBot:
    """The ImGenBot that received the interaction."""
    return cast("ImGenBot", interaction.client)


def orch(interaction: discord.Interaction) -> Orchestrator:
    """The orchestrator facade."""
    return app(interaction).orch


def uid(interaction: discord.Interaction) -> str:
    """The acting user's id as the orchestrator knows users (a string)."""
    return str(interaction.user.id)


async def defer_update(interaction: discord.Interaction) -> None:
    """Acknowledge a component click without changing its message (within Discord's 3 s)."""
    if not interaction.response.is_done():
        await interaction.response.defer()


async def require_here(interaction: discord.Interaction, session_id: str) -> None:
    """
    Refuse a component or modal submit that does not come from the session's own thread.

    A custom_id is only text: anyone can send one from any channel, so the session it names must live here.
    """
    ref = await app(interaction).orch.message_ref(session_id, THREAD)
    if ref is None or interaction.channel_id is None or int(ref) != interaction.channel_id:
        raise NotAllowed(
            f"interaction for session {session_id} from channel {interaction.channel_id}",
            user_message="That control belongs to another session's thread; use it there.",
        )
