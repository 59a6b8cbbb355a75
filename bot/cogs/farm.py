"""/gpus: the farm at a glance."""

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
