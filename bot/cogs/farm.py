"""/gpus: the farm at a glance; /server: per-server options (admins only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render

if TYPE_CHECKING:
    from bot.client import ImGenBot


class FarmCog(commands.Cog):
    """Farm status."""

    def __init__(self, bot: ImGenBot) -> None:
        self.bot = bot

    @app_commands.command(name="gpus", description="The GPU farm: health, loaded model, queue, speed, failures.")
    async def gpus(self, interaction: discord.Interaction) -> None:
        orch = self.bot.orch
        lead = self.bot.leadership
        instances = await lead.instances() if lead is not None else []
        embed = render.gpus_embed(orch.farm_status(), orch.farm_health(), instances)
        await interaction.response.send_message(embed=embed)

    server = app_commands.Group(
        name="server",
        description="Options for this server (members with Manage Server only).",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @server.command(name="speculation", description="Prepare the next stage on idle GPUs while people vote.")
    @app_commands.describe(enabled="On: run what Continue would ask for while votes settle; off: wait for Continue")
    async def speculation(self, interaction: discord.Interaction, enabled: bool) -> None:
        perms = interaction.permissions
        if interaction.guild_id is None or not (perms.manage_guild or perms.administrator):
            await interaction.response.send_message("Only members with Manage Server can change this.", ephemeral=True)
            return
        await self.bot.orch.set_server_speculation(str(interaction.guild_id), enabled)
        state = "on" if enabled else "off"
        await interaction.response.send_message(f"Speculative stages are {state} for this server.", ephemeral=True)
