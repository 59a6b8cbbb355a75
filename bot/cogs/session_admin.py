"""/session status | png | end | invite | rules | open | close — inside a session thread."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.posting import full_file
from bot.views.common import THREAD
from orchestrator.errors import InputError
from orchestrator.sessions.models import Visibility

if TYPE_CHECKING:
    from bot.client import ImGenBot

MAX_QUORUM = 100
MIN_DEADLINE_MINUTES = 0.5
MAX_DEADLINE_MINUTES = 7 * 24 * 60.0


class SessionCog(commands.Cog):
    """Managing the session of the current thread."""

    session = app_commands.Group(name="session", description="Manage the session of this thread.", guild_only=True)

    def __init__(self, bot: ImGenBot) -> None:
        self.bot = bot

    async def _here(self, interaction: discord.Interaction) -> str:
        channel = interaction.channel
        sid = None
        if isinstance(channel, discord.Thread):
            sid = await self.bot.orch.session_for_ref(THREAD, str(channel.id))
        if sid is None:
            raise InputError("no session", user_message="Use this inside a session's thread.")
        return sid

    @session.command(name="status", description="Where this session is, who takes part, and the votes so far.")
    async def status(self, interaction: discord.Interaction) -> None:
        sid = await self._here(interaction)
        svc = self.bot.orch
        session = await svc.session(sid)
        stage = await svc.current_stage(sid)
        await interaction.response.send_message(embed=render.status_embed(session, stage), ephemeral=True)

    @session.command(name="png", description="The full-size PNG of an image of the current stage, just for you.")
    @app_commands.describe(number="The image's number in the gallery")
    async def png(self, interaction: discord.Interaction, number: int) -> None:
        sid = await self._here(interaction)
        stage = await self.bot.orch.current_stage(sid)
        image = stage.image(number)
        if image is None:
            numbers = ", ".join(str(im.number) for im in stage.images) or "none yet"
            raise InputError("number", user_message=f"No image #{number} in this stage (delivered: {numbers}).")
        await interaction.response.defer(ephemeral=True, thinking=True)
        path = image.image.path or image.image.thumbnail
        file = await full_file(self.bot.orch, number, path, interaction.filesize_limit)
        note = "" if image.image.path else " (the full-size file was pruned; this is the thumbnail)"
        await interaction.followup.send(f"#{number} of {stage.name}{note}", file=file, ephemeral=True)

    @session.command(name="end", description="End this session.")
    async def end(self, interaction: discord.Interaction) -> None:
        sid = await self._here(interaction)
        await self.bot.orch.end(sid, str(interaction.user.id))
        # The relay posts the public "Session ended" line from the SessionEnded event.
        await interaction.response.send_message("Ending the session.", ephemeral=True)

    @session.command(name="invite", description="Let someone vote in this private session.")
    @app_commands.describe(member="Who to invite")
    async def invite(self, interaction: discord.Interaction, member: discord.Member) -> None:
        sid = await self._here(interaction)
        await self.bot.orch.invite(sid, str(interaction.user.id), str(member.id))
        # The one ping the bot means to make: the invited member learns they were invited.
        await interaction.response.send_message(
            f"{interaction.user.mention} invited {member.mention}: they can vote and give feedback here.",
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=[member]),
        )

    @session.command(name="rules", description="Continue by itself after a quorum of voters or a deadline.")
    @app_commands.describe(
        quorum="Continue once this many people have voted on the current stage",
        deadline_minutes="Continue this many minutes after each stage is ready",
    )
    async def rules(
        self,
        interaction: discord.Interaction,
        quorum: app_commands.Range[int, 1, MAX_QUORUM] | None = None,
        deadline_minutes: app_commands.Range[float, MIN_DEADLINE_MINUTES, MAX_DEADLINE_MINUTES] | None = None,
    ) -> None:
        sid = await self._here(interaction)
        deadline_s = deadline_minutes * 60 if deadline_minutes is not None else None
        session = await self.bot.orch.set_rules(sid, str(interaction.user.id), quorum=quorum, deadline_s=deadline_s)
        # Public: everyone voting here should know when the session moves on by itself.
        if quorum is None and deadline_s is None:
            text = f"{interaction.user.mention} cleared the rules: the session continues when someone presses Continue."
        else:
            text = f"{interaction.user.mention} set the rules: this session {render.rules_text(session)}."
        await interaction.response.send_message(text, allowed_mentions=discord.AllowedMentions.none())

    @session.command(name="open", description="Anyone may vote and continue.")
    async def open(self, interaction: discord.Interaction) -> None:
        sid = await self._here(interaction)
        await self.bot.orch.set_visibility(sid, str(interaction.user.id), Visibility.OPEN)
        await interaction.response.send_message("This session is now open: anyone here may vote and continue.")

    @session.command(name="close", description="Only you and invited members may vote.")
    async def close(self, interaction: discord.Interaction) -> None:
        sid = await self._here(interaction)
        await self.bot.orch.set_visibility(sid, str(interaction.user.id), Visibility.PRIVATE)
        await interaction.response.send_message(
            "This session is now private: only the owner and invited members may vote."
        )
