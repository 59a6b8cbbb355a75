"""ImGenBot: the discord.py bot around one Orchestrator; its start-up, command sync and shutdown."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import errors
from bot.budgets import Budgets
from bot.cogs.create import CreateCog
from bot.cogs.farm import FarmCog
from bot.cogs.session_admin import SessionCog
from bot.cogs.threads import ThreadCog
from bot.relay import Relay
from bot.views.final import BranchSelect, FinalButton
from bot.views.gallery import ControlButton, PickButton, VoteButton
from bot.views.suggestion import SuggestionButton

if TYPE_CHECKING:
    from orchestrator.leadership import Leadership
    from orchestrator.service import Orchestrator

log = logging.getLogger(__name__)

DYNAMIC_ITEMS = (VoteButton, PickButton, ControlButton, FinalButton, BranchSelect, SuggestionButton)


def intents() -> discord.Intents:
    """Guilds, guild messages and message content (privileged: thread replies are feedback)."""
    it = discord.Intents.none()
    it.guilds = True
    it.guild_messages = True
    it.message_content = True
    return it


def apply_endpoint_overrides(env: Mapping[str, str] | None = None) -> None:
    """Honour DISCORD_API_BASE / DISCORD_GATEWAY_URL (a REST/gateway proxy or a local Discord-compatible server)."""
    env = os.environ if env is None else env
    api = env.get("DISCORD_API_BASE", "").strip()
    gateway = env.get("DISCORD_GATEWAY_URL", "").strip()
    if api:
        # Route.BASE covers REST, interaction callbacks and webhook followups.
        discord.http.Route.BASE = api.rstrip("/")
    if gateway:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)


def guild_id_from_env(env: Mapping[str, str] | None = None) -> int | None:
    """DISCORD_GUILD_ID as an int, or None (commands are then synced globally)."""
    env = os.environ if env is None else env
    raw = env.get("DISCORD_GUILD_ID", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ValueError("DISCORD_GUILD_ID must be a server id (digits only)")
    return int(raw)


class ImGenTree(app_commands.CommandTree["ImGenBot"]):
    """The command tree; every command error goes through bot/errors.py."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        await errors.reply_error(interaction, error)


class ImGenBot(commands.Bot):
    """The Discord front end of one Orchestrator (started in setup_hook, stopped in close)."""

    def __init__(self, orchestrator: Orchestrator, *, guild_id: int | None = None, **options: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents(),
            help_command=None,
            tree_cls=ImGenTree,
            # Nobody is pinged unless a message opts in (an invite pings the invited member): members' text is
            # echoed in many places, and a bot that can ping @everyone is a megaphone for anyone in the server.
            allowed_mentions=options.pop("allowed_mentions", discord.AllowedMentions.none()),
            **options,
        )
        self.orch = orchestrator
        self.guild_id = guild_id
        #: cooldowns, one refine per session and the LLM's line, shared by every command and reply
        self.budgets = Budgets(orchestrator.settings.limits)
        self._relay: Relay | None = None
        self._closing = False
        self._orch_started = False
        #: set when instances share a PostgreSQL database (/gpus names the active one and the standbys)
        self.leadership: Leadership | None = None

    @property
    def relay(self) -> Relay:
        """Routes orchestrator events to threads."""
        if self._relay is None:
            raise RuntimeError("bot not set up")
        return self._relay

    async def setup_hook(self) -> None:
        await self.orch.start()
        self._orch_started = True
        # Uploads still in quarantine belong to commands that died with the last process: nobody will answer them.
        await self.orch.uploads.purge()
        # Subscribe before anything can publish session events we must not miss.
        self._relay = Relay(self)
        for cog in (CreateCog(self), FarmCog(self), SessionCog(self), ThreadCog(self)):
            await self.add_cog(cog)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        self._relay.start()
        await self.sync_commands()
        log.info("bot set up: %d commands", len(self.tree.get_commands()))

    async def sync_commands(self) -> None:
        """Sync slash commands to DISCORD_GUILD_ID at once, else globally (may take a while to appear)."""
        if self.guild_id is not None:
            guild = discord.Object(id=self.guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    async def on_ready(self) -> None:
        log.info("connected as %s", self.user)
        if self._relay is not None:
            self._relay.set_ready()

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        # Our own logger, with the traceback: discord.py's default handler would log to `discord` at ERROR.
        log.exception("unhandled error in %s", event_method)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            if self._relay is not None:
                await self._relay.close()
            await super().close()
        finally:
            if self._orch_started:
                self._orch_started = False
                await self.orch.stop()


def setup_logging(verbose: bool = False) -> None:
    """Our loggers at INFO (DEBUG when verbose); discord.http kept quiet."""
    logging.getLogger("bot").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("orchestrator").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("discord").setLevel(logging.INFO)
    logging.getLogger("discord.http").setLevel(logging.WARNING)
    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)


async def run_bot(orchestrator: Orchestrator, token: str, *, guild_id: int | None = None) -> None:
    """Log in and serve until closed."""
    apply_endpoint_overrides()
    bot = ImGenBot(orchestrator, guild_id=guild_id)
    async with bot:
        await bot.start(token)
