"""`vibes bot [--sim] [--config DIR]`: run the Discord bot (bot/ is imported only here, inside run())."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from orchestrator.cli.common import add_config_arg, load
from orchestrator.config import Config
from orchestrator.db import is_postgres_url, redact
from orchestrator.db.url import scrub

MISSING_TOKEN = (
    "vibes bot: DISCORD_TOKEN is not set.\n"
    "Create an application at https://discord.com/developers/applications, add a bot, copy its token, then:\n"
    "  export DISCORD_TOKEN=...   (optionally DISCORD_GUILD_ID=<server id> to sync commands there at once)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bot", help="run the Discord bot", description="Run the Discord bot (needs DISCORD_TOKEN).")
    add_config_arg(p)
    p.add_argument("--sim", action="store_true", help="serve the config's simulated GPU nodes in this process")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        print(MISSING_TOKEN, file=sys.stderr)
        return 2
    # Imported here so the rest of `vibes` never needs discord.py loaded (orchestrator/ never imports it).
    from bot.client import guild_id_from_env, run_bot, setup_logging
    from orchestrator.service import Orchestrator

    try:
        guild_id = guild_id_from_env()
    except ValueError as e:
        print(f"vibes bot: {e}", file=sys.stderr)
        return 2
    config = load(args)
    setup_logging(verbose=bool(getattr(args, "verbose", False)))
    url = postgres_url(config)
    if url is not None:
        return _run_with_leadership(args, config, url, token, guild_id)
    orch = Orchestrator(config, sim=bool(args.sim), ephemeral_ports=True)
    try:
        asyncio.run(run_bot(orch, token, guild_id=guild_id))
    except KeyboardInterrupt:
        return 130
    return 0


def postgres_url(config: Config) -> str | None:
    """The PostgreSQL URL the instances share, or None (SQLite: one instance, no lock)."""
    url = config.settings.storage.database
    return url if is_postgres_url(url) else None


def _run_with_leadership(args: argparse.Namespace, config: Config, url: str, token: str, guild_id: int | None) -> int:
    from bot.standby import run_bot_with_leadership
    from orchestrator.leadership import CONNECTION_ERRORS, Leadership
    from orchestrator.service import Orchestrator

    def make_orchestrator() -> Orchestrator:
        return Orchestrator(config, sim=bool(args.sim), ephemeral_ports=True)

    leadership = Leadership(url, config.settings.leadership)
    try:
        return asyncio.run(run_bot_with_leadership(make_orchestrator, leadership, token, guild_id=guild_id))
    except KeyboardInterrupt:
        return 130
    except CONNECTION_ERRORS as e:
        print(f"vibes bot: cannot reach the database at {redact(url)}: {scrub(str(e), url)}", file=sys.stderr)
        return 2
