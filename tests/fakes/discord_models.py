"""State objects of the fake Discord server, their JSON payloads, and Discord's limits as 400 error bodies."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
COMPONENTS_V2 = 1 << 15
MESSAGE_CONTENT_INTENT = 1 << 15
THREAD_ARCHIVE_MINUTES = (60, 1440, 4320, 10080)
#: permissions the fake grants: view, send, embed, attach, history, app commands, threads, manage messages/threads
EVERYONE_PERMS = (1 << 6) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)
EVERYONE_PERMS |= (1 << 35) | (1 << 36) | (1 << 38)
BOT_PERMS = EVERYONE_PERMS | (1 << 13) | (1 << 34)

Json = dict[str, Any]


class SnowflakeFactory:
    """Unique, increasing snowflakes whose timestamp part is the current time (so created_at looks right)."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(self._last + 1, now)
        return self._last


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass(frozen=True)
class FakeUser:
    """A user of the fake guild (or the bot itself)."""

    id: int
    name: str
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> Json:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.name.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    def member_payload(self, joined_at: str, roles: list[int] | None = None, *, with_user: bool = True) -> Json:
        data: Json = {
            "roles": [str(r) for r in roles or []],
            "joined_at": joined_at,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
        }
        if with_user:
            data["user"] = self.payload()
        return data


@dataclass(frozen=True)
class FakeFile:
    """A file a test user uploads (slash command attachment option, or a message attachment)."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    #: what the attachment's metadata claims (a lying client); None: the real byte count
    declared_size: int | None = None


@dataclass
class FakeAttachment:
    """An attachment stored by the fake; `content` holds the uploaded bytes."""

    id: int
    filename: str
    content: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    declared_size: int | None = None

    @property
    def size(self) -> int:
        return len(self.content) if self.declared_size is None else self.declared_size

    def payload(self) -> Json:
        data: Json = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.description:
            data["description"] = self.description
        return data


@dataclass(frozen=True)
class FakeComponent:
    """One interactive or layout component of a message, parsed from the bot's payload."""

    type: int
    custom_id: str | None = None
    label: str | None = None
    style: int | None = None
    disabled: bool = False
    url: str | None = None
    emoji: str | None = None
    options: tuple[Json, ...] = ()
    placeholder: str | None = None
    min_values: int | None = None
    max_values: int | None = None
    value: str | None = None
    children: tuple[FakeComponent, ...] = ()

    @property
    def is_button(self) -> bool:
        return self.type == 2

    @classmethod
    def from_payload(cls, data: Json) -> FakeComponent:
        kids = [*data.get("components", [])]
        for key in ("component", "accessory"):
            if isinstance(data.get(key), dict):
                kids.append(data[key])
        emoji = data.get("emoji")
        return cls(
            type=int(data.get("type", 0)),
            custom_id=data.get("custom_id"),
            label=data.get("label"),
            style=data.get("style"),
            disabled=bool(data.get("disabled", False)),
            url=data.get("url"),
            emoji=(emoji.get("name") if isinstance(emoji, dict) else None),
            options=tuple(data.get("options", [])),
            placeholder=data.get("placeholder"),
            min_values=data.get("min_values"),
            max_values=data.get("max_values"),
            value=data.get("value"),
            children=tuple(cls.from_payload(k) for k in kids),
        )

    def walk(self) -> list[FakeComponent]:
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


@dataclass
class FakeMessage:
    """A message the fake holds; mutated in place by edits (every edit also lands in `edits`)."""

    id: int
    channel_id: int
    guild_id: int
    author: FakeUser
    content: str = ""
    embeds: list[Json] = field(default_factory=list)
    raw_components: list[Json] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    created_at: float = field(default_factory=time.monotonic)
    timestamp: str = field(default_factory=iso_now)
    edited_timestamp: str | None = None
    edits: list[tuple[float, Json]] = field(default_factory=list)
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: Json | None = None
    message_reference: Json | None = None
    thread_id: int | None = None
    deleted: bool = False
    old: bool = False
    #: the allowed_mentions of the create (or of the last edit that carried one); None: Discord's default
    allowed_mentions: Json | None = None

    @property
    def pings(self) -> set[str]:
        """Who this message notifies, as Discord decides it: "everyone", "user:<id>", "role:<id>"."""
        return pings(self.content, self.allowed_mentions)

    @property
    def components(self) -> list[FakeComponent]:
        """Top-level components (action rows), parsed."""
        return [FakeComponent.from_payload(c) for c in self.raw_components]

    @property
    def all_components(self) -> list[FakeComponent]:
        """Every component at any depth."""
        return [c for top in self.components for c in top.walk()]

    @property
    def buttons(self) -> list[FakeComponent]:
        return [c for c in self.all_components if c.is_button]

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    def component(self, custom_id: str | None = None, *, label: str | None = None) -> FakeComponent:
        """The component with this custom_id (or label); ValueError listing what exists when absent."""
        for comp in self.all_components:
            if (custom_id is not None and comp.custom_id == custom_id) or (label is not None and comp.label == label):
                return comp
        have = [(c.custom_id, c.label) for c in self.all_components if c.custom_id]
        raise ValueError(f"message {self.id} has no component {custom_id or label!r}; it has {have}")

    def payload(self) -> Json:
        data: Json = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "guild_id": str(self.guild_id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.raw_components,
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
        }
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = self.interaction_metadata
        if self.message_reference is not None:
            data["message_reference"] = self.message_reference
        return data


@dataclass
class FakeThread:
    """A thread created by the bot (from a message or standalone)."""

    id: int
    name: str
    parent_id: int
    guild_id: int
    owner_id: int
    auto_archive_duration: int
    type: int = 11
    starter_message_id: int | None = None
    archived: bool = False
    locked: bool = False
    created: str = field(default_factory=iso_now)
    member_ids: set[int] = field(default_factory=set)

    def payload(self) -> Json:
        return {
            "id": str(self.id),
            "guild_id": str(self.guild_id),
            "parent_id": str(self.parent_id),
            "owner_id": str(self.owner_id),
            "name": self.name,
            "type": self.type,
            "last_message_id": None,
            "message_count": 0,
            "member_count": len(self.member_ids),
            "total_message_sent": 0,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": self.archived,
                "auto_archive_duration": self.auto_archive_duration,
                "archive_timestamp": self.created,
                "locked": self.locked,
                "create_timestamp": self.created,
            },
        }


@dataclass(frozen=True)
class FakeCallback:
    """The bot's answer to an interaction: POST interactions/{id}/{token}/callback."""

    type: int
    data: Json

    @property
    def flags(self) -> int:
        return int(self.data.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)


@dataclass
class InteractionHandle:
    """A test's view of one interaction it sent: the callback, the messages it produced, a modal, choices."""

    id: int
    token: str
    type: int
    user: FakeUser
    channel_id: int
    payload: Json
    waiter: Callable[..., Any]
    message: FakeMessage | None = None
    callback: FakeCallback | None = None
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    expired: bool = False
    _responded: asyncio.Event = field(default_factory=asyncio.Event)

    async def response(self, timeout: float = 10) -> FakeCallback:
        """Wait for the bot's callback (fails with TimeoutError if it never answers)."""
        await asyncio.wait_for(self._responded.wait(), timeout)
        assert self.callback is not None
        return self.callback

    async def wait_followups(self, count: int, timeout: float = 10) -> list[FakeMessage]:
        """Wait until the bot has sent at least `count` followups."""
        await self.waiter(lambda: len(self.followups) >= count, timeout=timeout)
        return list(self.followups)

    @property
    def deferred(self) -> bool:
        return self.callback is not None and self.callback.type in (5, 6)

    @property
    def ephemeral(self) -> bool:
        return self.callback is not None and self.callback.ephemeral

    @property
    def messages(self) -> list[FakeMessage]:
        """Original response (when it is a new message) plus followups, ephemeral ones included."""
        first = [self.original] if self.original is not None and self.original is not self.message else []
        return [*first, *(m for m in self.followups if m is not self.original)]

    @property
    def modal(self) -> Json | None:
        """The modal the bot opened (type 9 callback data), if any."""
        return self.callback.data if self.callback is not None and self.callback.type == 9 else None

    @property
    def choices(self) -> list[Json]:
        """Autocomplete choices (type 8 callback)."""
        if self.callback is None or self.callback.type != 8:
            return []
        return list(self.callback.data.get("choices", []))


# --- mentions ------------------------------------------------------------------------------------------------

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_EVERYONE = re.compile(r"@(everyone|here)")


def pings(content: str, allowed: Json | None) -> set[str]:
    """Mentions in `content` that notify someone under `allowed` (absent: Discord parses every kind)."""
    users = set(_USER_MENTION.findall(content))
    roles = set(_ROLE_MENTION.findall(content))
    everyone = bool(_EVERYONE.search(content))
    if allowed is None:
        parse = {"users", "roles", "everyone"}
        allowed = {}
    else:
        parse = set(allowed.get("parse") or [])
    out = {f"user:{u}" for u in users if "users" in parse or u in {str(x) for x in allowed.get("users") or []}}
    out |= {f"role:{r}" for r in roles if "roles" in parse or r in {str(x) for x in allowed.get("roles") or []}}
    if everyone and "everyone" in parse:
        out.add("everyone")
    return out


# --- Discord limits -------------------------------------------------------------------------------------------


class ErrorTree:
    """Collects errors in Discord's nested `{"field": {"0": {"_errors": [...]}}}` shape."""

    def __init__(self) -> None:
        self.tree: Json = {}

    def add(self, path: list[str | int], code: str, message: str) -> None:
        node = self.tree
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_len(self, path: list[str | int], value: Any, limit: int, minimum: int = 0) -> None:
        if value is None:
            return
        n = len(value)
        if n > limit or n < minimum:
            lo = f"between {minimum} and {limit}" if minimum else f"{limit} or fewer"
            self.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be {lo} in length.")

    def __bool__(self) -> bool:
        return bool(self.tree)


def check_embeds(errors: ErrorTree, embeds: list[Json]) -> None:
    errors.max_len(["embeds"], embeds, 10)
    total = 0
    for i, embed in enumerate(embeds):
        base: list[str | int] = ["embeds", i]
        errors.max_len([*base, "title"], embed.get("title"), 256)
        errors.max_len([*base, "description"], embed.get("description"), 4096)
        fields = embed.get("fields") or []
        errors.max_len([*base, "fields"], fields, 25)
        for j, f in enumerate(fields):
            errors.max_len([*base, "fields", j, "name"], f.get("name"), 256, 1)
            errors.max_len([*base, "fields", j, "value"], f.get("value"), 1024, 1)
            total += len(f.get("name") or "") + len(f.get("value") or "")
        footer = (embed.get("footer") or {}).get("text")
        author = (embed.get("author") or {}).get("name")
        errors.max_len([*base, "footer", "text"], footer, 2048)
        errors.max_len([*base, "author", "name"], author, 256)
        total += sum(len(x or "") for x in (embed.get("title"), embed.get("description"), footer, author))
    if total > 6000:
        errors.add(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")


def _check_custom_id(errors: ErrorTree, path: list[str | int], comp: Json, seen: set[str]) -> None:
    cid = comp.get("custom_id")
    if cid is None:
        errors.add([*path, "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
        return
    errors.max_len([*path, "custom_id"], cid, 100, 1)
    if cid in seen:
        errors.add([*path, "custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated")
    seen.add(cid)


def _check_component(errors: ErrorTree, path: list[str | int], comp: Json, seen: set[str]) -> None:
    kind = comp.get("type")
    if kind == 2:
        errors.max_len([*path, "label"], comp.get("label"), 80)
        if comp.get("style") == 5:
            if not comp.get("url") or comp.get("custom_id"):
                errors.add(path, "BUTTON_COMPONENT_INVALID", "Link buttons need a url and no custom_id")
        elif comp.get("style") != 6:
            _check_custom_id(errors, path, comp, seen)
    elif kind in (3, 5, 6, 7, 8):
        _check_custom_id(errors, path, comp, seen)
        errors.max_len([*path, "placeholder"], comp.get("placeholder"), 150)
        options = comp.get("options") or []
        if kind == 3:
            errors.max_len([*path, "options"], options, 25, 1)
        for k, opt in enumerate(options):
            errors.max_len([*path, "options", k, "label"], opt.get("label"), 100, 1)
            errors.max_len([*path, "options", k, "value"], opt.get("value"), 100, 1)
            errors.max_len([*path, "options", k, "description"], opt.get("description"), 100)
        if int(comp.get("max_values", 1)) > 25 or int(comp.get("min_values", 1)) > int(comp.get("max_values", 1)):
            errors.add([*path, "max_values"], "BASE_TYPE_BAD_INT", "min_values/max_values out of range")
    elif kind == 4:
        _check_custom_id(errors, path, comp, seen)
        errors.max_len([*path, "label"], comp.get("label"), 45)
        errors.max_len([*path, "value"], comp.get("value"), 4000)
        errors.max_len([*path, "placeholder"], comp.get("placeholder"), 100)
    for key in ("component", "accessory"):
        if isinstance(comp.get(key), dict):
            _check_component(errors, [*path, key], comp[key], seen)
    if kind != 1:
        for k, child in enumerate(comp.get("components") or []):
            _check_component(errors, [*path, "components", k], child, seen)


def check_components(errors: ErrorTree, rows: list[Json], *, v2: bool = False, key: str = "components") -> None:
    seen: set[str] = set()
    if not v2:
        errors.max_len([key], rows, 5)
    for i, row in enumerate(rows):
        if row.get("type") != 1:
            if not v2 and row.get("type") != 18:
                errors.add([key, i, "type"], "UNION_TYPE_CHOICES", "Top-level components must be action rows")
            _check_component(errors, [key, i], row, seen)
            continue
        children = row.get("components") or []
        selects = [c for c in children if c.get("type") in (3, 5, 6, 7, 8)]
        if not children:
            errors.add([key, i, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        elif selects and len(children) > 1:
            errors.add([key, i, "components"], "COMPONENT_LAYOUT_WIDTH_EXCEEDED", "A select menu must be alone")
        errors.max_len([key, i, "components"], children, 5)
        for j, comp in enumerate(children):
            _check_component(errors, [key, i, "components", j], comp, seen)


#: a message nonce is at most 25 characters; with enforce_nonce, Discord returns the message it already created
#: for the same author, channel and nonce within a few minutes instead of creating another
NONCE_MAX = 25
NONCE_WINDOW_S = 5 * 60


def check_message(payload: Json, *, attachment_count: int, creating: bool) -> ErrorTree:
    """Validate a message create/edit body as Discord does (limits discord.py does not check itself)."""
    errors = ErrorTree()
    content = payload.get("content")
    errors.max_len(["content"], content, 2000)
    check_embeds(errors, payload.get("embeds") or [])
    flags = int(payload.get("flags") or 0)
    check_components(errors, payload.get("components") or [], v2=bool(flags & COMPONENTS_V2))
    if attachment_count > 10:
        errors.add(["attachments"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    nonce = payload.get("nonce")
    if isinstance(nonce, str):
        errors.max_len(["nonce"], nonce, NONCE_MAX)
    return errors


def check_modal(data: Json) -> ErrorTree:
    errors = ErrorTree()
    errors.max_len(["data", "title"], data.get("title"), 45, 1)
    errors.max_len(["data", "custom_id"], data.get("custom_id"), 100, 1)
    rows = data.get("components") or []
    errors.max_len(["data", "components"], rows, 5, 1)
    sub = ErrorTree()
    check_components(sub, rows, v2=True)
    if sub:
        errors.tree.setdefault("data", {}).update(sub.tree)
    return errors


def route_bucket(pattern: str) -> str:
    """A stable fake X-RateLimit-Bucket hash per route template."""
    return f"fake{abs(hash(pattern)) % 10**12:012d}"
