"""Start-up of the bot: token handling, endpoint overrides, command sync, intents."""

from __future__ import annotations

import argparse

import discord
import pytest

from bot.client import ImGenBot, apply_endpoint_overrides, guild_id_from_env, intents
from orchestrator.cli import bot_cmd
from tests.bot.helpers import make_config, make_orchestrator, running_bot

COMMANDS = {"draft", "concept", "explore", "gpus", "session", "server"}


def test_missing_token_exits_2_with_a_clear_message(monkeypatch, capsys):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert bot_cmd.run(argparse.Namespace(config=None, sim=True)) == 2
    err = capsys.readouterr().err
    assert "DISCORD_TOKEN is not set" in err and "developers/applications" in err


def test_bad_guild_id_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    monkeypatch.setenv("DISCORD_GUILD_ID", "my-server")
    assert bot_cmd.run(argparse.Namespace(config=None, sim=True)) == 2
    assert "DISCORD_GUILD_ID" in capsys.readouterr().err


def test_guild_id_from_env():
    assert guild_id_from_env({}) is None
    assert guild_id_from_env({"DISCORD_GUILD_ID": " 123 "}) == 123
    with pytest.raises(ValueError):
        guild_id_from_env({"DISCORD_GUILD_ID": "abc"})


def test_endpoint_overrides_are_honoured(monkeypatch):
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    )
    apply_endpoint_overrides(
        {"DISCORD_API_BASE": "http://127.0.0.1:9/api/v10/", "DISCORD_GATEWAY_URL": "ws://127.0.0.1:9/gw"}
    )
    assert discord.http.Route.BASE == "http://127.0.0.1:9/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/gw"
    before = discord.http.Route.BASE
    apply_endpoint_overrides({})
    after = discord.http.Route.BASE
    assert after == before


def test_intents_are_the_three_needed():
    it = intents()
    assert it.guilds and it.guild_messages and it.message_content
    assert not it.members and not it.presences


async def test_commands_sync_to_the_guild_at_once(fake_discord, tmp_path):
    """With DISCORD_GUILD_ID the commands land in that guild; the identify asks for message content."""
    fake = fake_discord
    async with running_bot(fake, make_config(tmp_path)):
        names = {c["name"] for c in fake.guild_commands[fake.guild_id]}
        assert names == COMMANDS
        session = next(c for c in fake.guild_commands[fake.guild_id] if c["name"] == "session")
        assert {o["name"] for o in session["options"]} == {"status", "png", "end", "invite", "rules", "open", "close"}
        server = next(c for c in fake.guild_commands[fake.guild_id] if c["name"] == "server")
        assert {o["name"] for o in server["options"]} == {"speculation"}
        assert int(server["default_member_permissions"]) == 1 << 5, "Manage Server only"
        assert fake.identify_payloads[-1]["intents"] & (1 << 15), "message content intent"


async def test_commands_sync_globally_without_a_guild(fake_discord, start_client, tmp_path):
    """Without a guild id the commands are synced globally."""
    fake = fake_discord
    bot = ImGenBot(make_orchestrator(make_config(tmp_path)), guild_ready_timeout=0.01)
    await start_client(bot)
    assert {c["name"] for c in fake.global_commands} == COMMANDS
