"""The only code that turns errors into Discord replies: short, specific, ephemeral; reference ids if unexpected."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import discord
from discord import app_commands

from bot.limits import truncate
from orchestrator.errors import ImGenError

log = logging.getLogger(__name__)

#: what users read for anything we did not expect; the reference id finds the log line
UNEXPECTED = "Something went wrong on our side. Reference: `{ref}` (tell the bot's admin)."


# The one scrubber for text that leaves the process (errors, node and LLM reasons). Order matters: secrets first,
# then whole URLs and address tuples, then what is left of hosts, ports and paths.
_SCRUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    # a Discord bot token (three base64 parts), bearer/basic credentials, key=value secrets
    (re.compile(r"\b[\w-]{20,}\.[\w-]{6,}\.[\w-]{20,}\b"), "…"),
    (re.compile(r"\b(?:bearer|basic)\s+\S+", re.I), "…"),
    (re.compile(r"\b(token|api[_-]?key|secret|password|passwd|authorization)(\s*[=:]\s*)\S+", re.I), r"\1\2…"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I), "…"),
    # Python's address tuples in socket errors: ('127.0.0.1', 11434)
    (re.compile(r"\(\s*['\"][^'\"]*['\"]\s*,\s*\d{1,5}\s*\)"), "…"),
    # IPv6 (with "::" or at least four groups, so times such as 12:30:45 stay)
    (
        re.compile(
            r"(?<![\w:])\[?(?=[0-9a-f:]*::|(?:[0-9a-f]{1,4}:){4})(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}\]?(?::\d{1,5})?(?![\w:])",
            re.I,
        ),
        "…",
    ),
    (
        re.compile(
            r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]+\]|localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+):\d{2,5}\b", re.I
        ),
        "…",
    ),
    (re.compile(r"\b[a-z][a-z0-9-]*:\d{4,5}\b", re.I), "…"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "…"),
    (re.compile(r"\blocalhost\b", re.I), "…"),
    (re.compile(r"\bport\s+\d{2,5}\b", re.I), "port …"),
    # quoted paths (ComfyUI quotes file names and paths in its errors): any quoted text with a separator
    (re.compile(r"'[^'\n]*[/\\][^'\n]*'"), "'…'"),
    (re.compile(r'"[^"\n]*[/\\][^"\n]*"'), '"…"'),
    # unquoted absolute paths of two or more parts, home-relative paths, Windows drive and UNC paths
    (re.compile(r"(?:(?<=[\s(=,:\[])|^)(?:~|\.{1,2})?(?:/[\w.@+-]+){2,}/?"), "…"),
    (re.compile(r"(?:(?<=[\s(=,:\[])|^)~/\S+"), "…"),
    (re.compile(r"\b[A-Z]:\\\S*", re.I), "…"),
    (re.compile(r"\\\\[\w.-]+\\\S*"), "…"),
)


def scrub(text: str, limit: int = 160, *, first_line: bool = True) -> str:
    """Text from a node, a library or an error, safe to show: no URLs, hosts, ports, IPs, paths or tokens."""
    out = text.strip()
    if first_line:
        out = out.splitlines()[0] if out else ""
    for pattern, repl in _SCRUBS:
        out = pattern.sub(repl, out)
    return truncate(out, limit)


@dataclass(frozen=True, slots=True)
class UserReply:
    """What a user is told about an error."""

    text: str
    reference: str | None = None


def _unwrap(error: BaseException) -> BaseException:
    while isinstance(error, app_commands.CommandInvokeError | app_commands.TransformerError):
        inner = error.__cause__ if isinstance(error, app_commands.TransformerError) else error.original
        if inner is None:
            break
        error = inner
    return error


def translate(error: BaseException) -> UserReply:
    """Map an error to the sentence a user sees; unexpected errors are logged with a fresh reference id."""
    error = _unwrap(error)
    if isinstance(error, ImGenError):
        # User messages may quote a node's or a library's words: they go through the scrubber like everything else.
        return UserReply(scrub(error.user_message, 1800, first_line=False))
    if isinstance(error, app_commands.CommandOnCooldown):
        return UserReply(f"Slow down a little: try again in {error.retry_after:.0f} s.")
    if isinstance(error, app_commands.NoPrivateMessage):
        return UserReply("This command works in a server channel, not in direct messages.")
    if isinstance(error, app_commands.MissingPermissions | app_commands.BotMissingPermissions):
        missing = ", ".join(p.replace("_", " ") for p in error.missing_permissions)
        return UserReply(f"Missing permission: {missing}.")
    if isinstance(error, app_commands.CheckFailure):
        return UserReply("You cannot use this command here.")
    ref = secrets.token_hex(4)
    # Full context goes to the log only: exception texts can carry host names, paths and tracebacks.
    log.error("unexpected error ref=%s: %r", ref, error, exc_info=(type(error), error, error.__traceback__))
    return UserReply(UNEXPECTED.format(ref=ref), reference=ref)


#: set in Interaction.extras by commands whose deferred "thinking" reply is public
PUBLIC_DEFER = "imgen_public_defer"


async def send_ephemeral(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral reply, whether or not the interaction was already answered."""
    try:
        if interaction.extras.pop(PUBLIC_DEFER, False):
            # A public "thinking…" would turn the error public: remove it, then answer privately.
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as e:
        # The token may have expired (15 min) or the interaction been answered elsewhere.
        log.warning("could not send an ephemeral reply: %s", e.status)
    except Exception as e:  # shutting down (HTTP session closed): nothing left to tell anyone
        log.warning("could not send an ephemeral reply: %r", e)


async def reply_error(interaction: discord.Interaction, error: BaseException) -> UserReply:
    """Tell the user about `error` in an ephemeral reply; returns what was said."""
    reply = translate(error)
    await send_ephemeral(interaction, reply.text)
    return reply


@asynccontextmanager
async def guard(interaction: discord.Interaction) -> AsyncIterator[None]:
    """Run a component or modal callback; any error becomes an ephemeral reply instead of a discord.py ERROR log."""
    try:
        yield
    except Exception as e:  # the one place every callback's errors end up
        await reply_error(interaction, e)
