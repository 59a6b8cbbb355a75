"""Every number Discord imposes, in one place, plus helpers that keep renderers within them (design.md section 7)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import discord

T = TypeVar("T")

#: message content characters
MAX_CONTENT = 2000
#: embeds per message and characters over all of them
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELDS = 25
EMBED_FIELD_NAME = 256
EMBED_FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_AUTHOR = 256
#: attachments per message and the default upload size (each interaction carries the real one)
MAX_ATTACHMENTS = 10
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
#: components: 5 action rows, each 5 buttons or 1 select; select menus hold 25 options
MAX_ROWS = 5
MAX_BUTTONS_PER_ROW = 5
MAX_SELECT_OPTIONS = 25
SELECT_OPTION_LABEL = 100
SELECT_OPTION_DESCRIPTION = 100
CUSTOM_ID_MAX = 100
BUTTON_LABEL = 80
#: modals: title 45, text input label 45, value 4000
MODAL_TITLE = 45
TEXT_INPUT_LABEL = 45
TEXT_INPUT_VALUE = 4000
#: threads: name 100; auto-archive must be one of these minutes
THREAD_NAME = 100
THREAD_ARCHIVE_MINUTES = (60, 1440, 4320, 10080)
#: autocomplete: 25 choices, names and values 100 characters
AUTOCOMPLETE_CHOICES = 25
CHOICE_NAME = 100
#: an interaction must be answered within 3 s; its token lives 15 min
INTERACTION_ACK_S = 3.0
INTERACTION_TOKEN_TTL_S = 15 * 60
#: messages older than an hour can no longer be edited freely (error 30046)
MESSAGE_EDIT_AGE_S = 3600.0
#: a message nonce; with enforce_nonce Discord answers a repeated create (same author, channel and nonce, within
#: a few minutes) with the message it already made
NONCE_MAX = 25
ERROR_TOO_OLD_TO_EDIT = 30046
#: an upload over the per-file limit: HTTP 413 with JSON code 40005 ("Request entity too large")
HTTP_TOO_LARGE = 413
ERROR_TOO_LARGE = 40005
#: not published by Discord: our own pace for edits of one message
PROGRESS_EDIT_INTERVAL_S = 1.5

ELLIPSIS = "…"


def truncate(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` characters, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: limit - 1].rstrip() + ELLIPSIS


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """Split `items` into consecutive lists of at most `size` items."""
    if size < 1:
        raise ValueError("size must be >= 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def split_files(items: Sequence[T], max_per_message: int = MAX_ATTACHMENTS) -> list[list[T]]:
    """Group attachments into messages of at most `max_per_message` (Discord allows 10)."""
    return chunks(items, min(max_per_message, MAX_ATTACHMENTS))


def thread_archive_minutes(wanted: int) -> int:
    """The closest auto-archive duration Discord accepts."""
    return min(THREAD_ARCHIVE_MINUTES, key=lambda m: abs(m - wanted))


def embed_length(embed: discord.Embed) -> int:
    """Characters Discord counts against the 6000 limit."""
    return len(embed)


def clamp_embed(embed: discord.Embed) -> discord.Embed:
    """Trim an embed in place so every part and the total fit Discord's limits; returns it."""
    if embed.title:
        embed.title = truncate(embed.title, EMBED_TITLE)
    if embed.description:
        embed.description = truncate(embed.description, EMBED_DESCRIPTION)
    if embed.author.name:
        embed.set_author(name=truncate(embed.author.name, EMBED_AUTHOR), url=embed.author.url)
    if embed.footer.text:
        embed.set_footer(text=truncate(embed.footer.text, EMBED_FOOTER), icon_url=embed.footer.icon_url)
    fields = [(f.name or "", f.value or "", bool(f.inline)) for f in embed.fields][:EMBED_FIELDS]
    embed.clear_fields()
    for name, value, inline in fields:
        embed.add_field(
            name=truncate(name, EMBED_FIELD_NAME) or "\u200b",
            value=truncate(value, EMBED_FIELD_VALUE) or "\u200b",
            inline=inline,
        )
    # Over the total: drop fields from the end, then shorten the description.
    while len(embed) > MAX_EMBED_TOTAL and embed.fields:
        embed.remove_field(len(embed.fields) - 1)
    if len(embed) > MAX_EMBED_TOTAL and embed.description:
        excess = len(embed) - MAX_EMBED_TOTAL
        embed.description = truncate(embed.description, max(1, len(embed.description) - excess))
    return embed


def clamp_embeds(embeds: Sequence[discord.Embed]) -> list[discord.Embed]:
    """At most 10 clamped embeds whose combined length fits 6000 characters."""
    out: list[discord.Embed] = []
    total = 0
    for e in list(embeds)[:MAX_EMBEDS]:
        clamp_embed(e)
        if total + len(e) > MAX_EMBED_TOTAL:
            break
        out.append(e)
        total += len(e)
    return out


def content(text: str) -> str:
    """Message content within 2000 characters."""
    return truncate(text, MAX_CONTENT)


def label(text: str) -> str:
    """A button label within 80 characters."""
    return truncate(text, BUTTON_LABEL)


def thread_name(text: str) -> str:
    """A thread name within 100 characters, on one line, never empty."""
    one_line = " ".join(text.split())
    return truncate(one_line, THREAD_NAME) or "session"


def message_nonce(*parts: str) -> str:
    """A nonce derived from what a message is (session, ref), so posting it again after a crash makes no duplicate."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()
    return digest[:NONCE_MAX]
