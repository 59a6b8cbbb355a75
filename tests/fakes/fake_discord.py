"""A Discord-compatible REST API + gateway on 127.0.0.1 that the real discord.py connects to (design.md section 7).

Usage::

    fake = FakeDiscord(); await fake.start()
    with fake.patch_discord():
        ... start a discord.py client with fake.token, wait for READY ...
        handle = await fake.run_slash(fake.users[0], "draft", {"prompt": "a lighthouse"})
        await handle.response()
    await fake.stop()

FakeDiscord holds the guild's state (users, channels, threads, messages) and its JSON payloads; the rest of the
server is mixed in by job: discord_gateway.py (the WebSocket), discord_members.py (what a test does as a member),
discord_transport.py (routing a request, rate limits, injected faults), discord_rest.py (the route table and
handlers); discord_models.py holds the state objects and Discord's limits. Every public name of these is importable
from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import yarl
from aiohttp import web

from tests.fakes.discord_gateway import Gateway, GatewaySession
from tests.fakes.discord_members import MemberActions
from tests.fakes.discord_models import (
    BOT_PERMS,
    EPHEMERAL,
    EVERYONE_PERMS,
    LOADING,
    FakeAttachment,
    FakeCallback,
    FakeComponent,
    FakeFile,
    FakeMessage,
    FakeThread,
    FakeUser,
    InteractionHandle,
    Json,
    SnowflakeFactory,
    check_message,
    iso_now,
    pings,
)
from tests.fakes.discord_rest import DiscordError, FakeError, Handler, RestHandlers, not_found
from tests.fakes.discord_transport import PostFailure, RateLimitInjection, RestTransport

__all__ = [
    "DiscordError",
    "DiscordErrorLogGuard",
    "FakeAttachment",
    "FakeCallback",
    "FakeComponent",
    "FakeDiscord",
    "FakeError",
    "FakeFile",
    "FakeMessage",
    "FakeThread",
    "FakeUser",
    "InteractionHandle",
    "running_client",
]

_DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


class FakeDiscord(Gateway, MemberActions, RestTransport, RestHandlers):
    """A Discord-compatible server (REST under /api/v10 + gateway WebSocket) for one guild with a few users."""

    def __init__(self, *, token: str = "fake-bot-token", attachment_size_limit: int = _DEFAULT_UPLOAD_LIMIT) -> None:
        self.token = token
        self.attachment_size_limit = attachment_size_limit
        self.heartbeat_interval_ms = 41250
        self.ratelimit_limit = 50
        self.old_message_age: float | None = None  # seconds after which edits fail with 30046
        self._snow = SnowflakeFactory()
        self.application_id = self._snow()
        self.bot_user = FakeUser(self.application_id, "vibes", bot=True)
        self.users = [FakeUser(self._snow(), n) for n in ("alice", "bob", "carol", "dave")]
        self.guild_id = self._snow()
        self.bot_role_id = self._snow()
        self.channel_id = self._snow()
        self.other_channel_id = self._snow()
        self.joined_at = iso_now()
        self.threads: list[FakeThread] = []
        self.unknown_routes: list[tuple[str, str]] = []
        self.errors: list[FakeError] = []
        self.internal_errors: list[str] = []
        self.rate_limited_count = 0
        self.edit_log: list[tuple[float, int, int]] = []
        self.typing: dict[int, int] = defaultdict(int)
        self.requests: list[tuple[str, str]] = []
        #: downloads of attachments from the fake's CDN
        self.cdn_fetches = 0
        self.global_commands: list[Json] = []
        self.guild_commands: dict[int, list[Json]] = {}
        self.identify_payloads: list[Json] = []
        self.interactions: dict[str, InteractionHandle] = {}
        self._messages: dict[int, FakeMessage] = {}
        #: (channel, author, nonce) -> (message id, when) for enforce_nonce
        self.nonces: dict[tuple[int, int, str], tuple[int, float]] = {}
        self._attachments: dict[int, FakeAttachment] = {}
        self._channel_order: dict[int, list[int]] = defaultdict(list)
        self._injections: list[RateLimitInjection] = []
        self._failures: list[PostFailure] = []
        #: message creates refused by fail_posts(), as (channel id, status)
        self.failed_posts: list[tuple[int, int]] = []
        self._sockets: list[GatewaySession] = []
        self._cond = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.url = ""
        self._add_routes()

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on 127.0.0.1 on a free port."""
        # Uploads up to the attachment limit (and over it, so the limit can be answered like Discord does).
        app = web.Application(client_max_size=self.attachment_size_limit * 12 + 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Close every gateway connection and stop serving."""
        for sess in list(self._sockets):
            await sess.ws.close(code=4000)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_base(self) -> str:
        """The REST base URL discord.py is pointed at."""
        return f"{self.url}/api/v10"

    @property
    def ws_url(self) -> str:
        """The gateway URL discord.py is pointed at."""
        return f"ws://{self.url.removeprefix('http://')}/gateway"

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's REST base and gateway URL at this server; restore both on exit."""
        import discord.gateway
        import discord.http

        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.ws_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # --- state helpers for tests --------------------------------------------------------------------------------

    async def _changed(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10) -> Any:
        """Wait until predicate() is truthy (re-checked on every state change); return its value."""
        async with self._cond:
            return await asyncio.wait_for(self._cond.wait_for(predicate), timeout)

    def messages(self, channel_id: int | None = None, *, include_ephemeral: bool = False) -> list[FakeMessage]:
        """Messages of a channel or thread in creation order (ephemeral ones live on the interaction handle)."""
        ids = self._channel_order[channel_id or self.channel_id]
        msgs = [self._messages[i] for i in ids]
        return [m for m in msgs if not m.deleted and (include_ephemeral or not m.ephemeral)]

    def message(self, message_id: int) -> FakeMessage:
        """A message by id, deleted and ephemeral ones included."""
        return self._messages[message_id]

    def thread(self, thread_id: int) -> FakeThread:
        """A thread by id."""
        return next(t for t in self.threads if t.id == thread_id)

    def user(self, name: str) -> FakeUser:
        """A member by name (alice, bob, carol, dave)."""
        return next(u for u in self.users if u.name == name)

    def make_message_old(self, message_id: int) -> None:
        """Edits of this message now fail with 30046, as Discord does for old messages."""
        self._messages[message_id].old = True

    def expire_interaction(self, handle: InteractionHandle) -> None:
        """The token of this interaction is now past its 15 minutes."""
        handle.expired = True

    def edit_intervals(self, message_id: int) -> list[float]:
        """Seconds between consecutive edits of one message."""
        times = [t for t, _, mid in self.edit_log if mid == message_id]
        return [b - a for a, b in itertools.pairwise(times)]

    def all_bot_messages(self) -> list[FakeMessage]:
        """Every message the bot made anywhere, ephemeral and deleted ones included."""
        return [m for m in self._messages.values() if m.author.id == self.bot_user.id]

    def bot_pings(self) -> set[str]:
        """Everyone the bot's messages (creates, edits, interaction replies) notified so far."""
        out: set[str] = set()
        for msg in self.all_bot_messages():
            out |= msg.pings
            for _, edit in msg.edits:
                if "content" in edit:
                    allowed = edit.get("allowed_mentions", msg.allowed_mentions)
                    out |= pings(edit.get("content") or "", allowed)
        return out

    # --- payloads ----------------------------------------------------------------------------------------------

    def _text_channel(self, cid: int, name: str, position: int) -> Json:
        return {
            "id": str(cid),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "default_auto_archive_duration": 1440,
            "flags": 0,
        }

    def _channels(self) -> list[Json]:
        return [
            self._text_channel(self.channel_id, "imagine", 0),
            self._text_channel(self.other_channel_id, "general", 1),
        ]

    def channel_payload(self, channel_id: int) -> Json:
        """A text channel's or a thread's JSON; 404 Unknown Channel for any other id."""
        for ch in self._channels():
            if int(ch["id"]) == channel_id:
                return ch
        for th in self.threads:
            if th.id == channel_id:
                return th.payload()
        raise not_found("Channel", 10003)

    def _member(self, user: FakeUser, *, with_user: bool = True) -> Json:
        roles = [self.bot_role_id] if user.bot else []
        return user.member_payload(self.joined_at, roles, with_user=with_user)

    def _find_user(self, user_id: int) -> FakeUser:
        for u in [self.bot_user, *self.users]:
            if u.id == user_id:
                return u
        raise not_found("User", 10013)

    def guild_payload(self) -> Json:
        """The guild as GUILD_CREATE and GET /guilds/{id} carry it: roles, members, channels."""
        everyone = {"id": str(self.guild_id), "name": "@everyone", "permissions": str(EVERYONE_PERMS)}
        bot_role = {"id": str(self.bot_role_id), "name": "Vibes", "permissions": str(BOT_PERMS), "managed": True}
        for role, pos in ((everyone, 0), (bot_role, 1)):
            role.update(color=0, hoist=False, position=pos, mentionable=False, flags=0)
        return {
            "id": str(self.guild_id),
            "name": "Vibes Test Guild",
            "icon": None,
            "owner_id": str(self.users[0].id),
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [everyone, bot_role],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": str(self.channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "preferred_locale": "en-US",
            "premium_tier": 0,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": self.joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(self.users) + 1,
            "members": [self._member(u) for u in [self.bot_user, *self.users]],
            "channels": self._channels(),
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _application_payload(self) -> Json:
        return {
            "id": str(self.application_id),
            "name": "Vibes ImGen",
            "icon": None,
            "description": "",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.users[0].payload(),
            "summary": "",
            "verify_key": "0" * 64,
            "team": None,
            "flags": 0,
            "bot": self.bot_user.payload(),
        }

    # --- message storage ------------------------------------------------------------------------------------------

    def _store_attachment(self, channel_id: int, upload: FakeFile, description: str | None = None) -> FakeAttachment:
        aid = self._snow()
        url = f"{self.url}/attachments/{channel_id}/{aid}/{upload.filename}"
        att = FakeAttachment(
            aid, upload.filename, upload.content, url, upload.content_type, description, upload.declared_size
        )
        self._attachments[aid] = att
        return att

    async def _add_message(self, msg: FakeMessage) -> None:
        self._messages[msg.id] = msg
        self._channel_order[msg.channel_id].append(msg.id)
        if not msg.ephemeral:
            data = msg.payload()
            if msg.author.id != self.bot_user.id:
                data["member"] = self._member(msg.author, with_user=False)
            await self.dispatch("MESSAGE_CREATE", data)
        await self._changed()

    def _new_message(self, channel_id: int, payload: Json, files: dict[int, FakeFile], **kw: Any) -> FakeMessage:
        flags = int(payload.get("flags") or 0)
        msg = FakeMessage(
            id=self._snow(),
            channel_id=channel_id,
            guild_id=self.guild_id,
            author=self.bot_user,
            content=payload.get("content") or "",
            embeds=list(payload.get("embeds") or []),
            raw_components=list(payload.get("components") or []),
            flags=flags & (EPHEMERAL | LOADING | (1 << 12) | (1 << 15) | (1 << 2)),
            **kw,
        )
        msg.attachments = self._attachments_for(channel_id, payload, files, [])
        msg.allowed_mentions = payload.get("allowed_mentions")
        if payload.get("message_reference"):
            msg.message_reference = payload["message_reference"]
        return msg

    def _attachments_for(
        self, channel_id: int, payload: Json, files: dict[int, FakeFile], existing: list[FakeAttachment]
    ) -> list[FakeAttachment]:
        if "attachments" not in payload:
            kept = list(existing)
            return kept + [self._store_attachment(channel_id, f) for _, f in sorted(files.items())]
        by_id = {a.id: a for a in existing}
        out: list[FakeAttachment] = []
        for item in payload["attachments"] or []:
            ref = int(item["id"])
            if ref in files:
                upload = files[ref]
                if item.get("filename"):
                    upload = FakeFile(item["filename"], upload.content, upload.content_type)
                out.append(self._store_attachment(channel_id, upload, item.get("description")))
            elif ref in by_id:
                out.append(by_id[ref])
        return out

    def _check(self, payload: Json, files: dict[int, FakeFile], existing: int = 0, *, creating: bool) -> None:
        for f in files.values():
            if len(f.content) > self.attachment_size_limit:
                raise DiscordError(413, 40005, "Request entity too large")
        count = len(payload["attachments"]) if "attachments" in payload else existing + len(files)
        errors = check_message(payload, attachment_count=count, creating=creating)
        if errors:
            raise DiscordError(400, 50035, "Invalid Form Body", errors)
        empty = not any(payload.get(k) for k in ("content", "embeds", "components", "sticker_ids", "poll"))
        if creating and empty and not files:
            raise DiscordError(400, 50006, "Cannot send an empty message")

    async def _edit_message(self, msg: FakeMessage, payload: Json, files: dict[int, FakeFile]) -> FakeMessage:
        if msg.deleted:
            raise not_found("Message", 10008)
        age_limit = self.old_message_age
        if msg.old or (age_limit is not None and time.monotonic() - msg.created_at > age_limit):
            raise DiscordError(400, 30046, "Maximum number of edits to messages older than 1 hour reached.")
        self._check(payload, files, len(msg.attachments), creating=False)
        now = time.monotonic()
        if "content" in payload:
            msg.content = payload["content"] or ""
        if "allowed_mentions" in payload:
            msg.allowed_mentions = payload["allowed_mentions"]
        if "embeds" in payload:
            msg.embeds = list(payload["embeds"] or [])
        if "components" in payload:
            msg.raw_components = list(payload["components"] or [])
        if "attachments" in payload or files:
            msg.attachments = self._attachments_for(msg.channel_id, payload, files, msg.attachments)
        if "flags" in payload and payload["flags"] is not None:
            msg.flags = (msg.flags & (EPHEMERAL | LOADING)) | (int(payload["flags"]) & ~(EPHEMERAL | LOADING))
        msg.edited_timestamp = iso_now()
        msg.edits.append((now, payload))
        self.edit_log.append((now, msg.channel_id, msg.id))
        if not msg.ephemeral:
            await self.dispatch("MESSAGE_UPDATE", msg.payload())
        await self._changed()
        return msg


# --- helpers for fixtures ---------------------------------------------------------------------------------------


class DiscordErrorLogGuard(logging.Handler):
    """Collects ERROR records of the `discord` logger (discord.py logs exceptions of callbacks instead of raising)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record for the test's teardown to report."""
        self.records.append(record)

    @contextlib.contextmanager
    def installed(self) -> Iterator[DiscordErrorLogGuard]:
        """Collect while inside the block."""
        logger = logging.getLogger("discord")
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)

    def report(self) -> str:
        """One line a collected record, with its exception."""
        lines = []
        for rec in self.records:
            text = f"{rec.name}: {rec.getMessage()}"
            if rec.exc_info and rec.exc_info[1] is not None:
                text += f" ({rec.exc_info[1]!r})"
            lines.append(text)
        return "\n".join(lines)


@contextlib.asynccontextmanager
async def running_client(fake: FakeDiscord, client: Any, timeout: float = 10) -> AsyncIterator[Any]:
    """Start a discord.py client against the fake, wait for READY (+ GUILD_CREATE), close it on exit."""
    task = asyncio.create_task(client.start(fake.token), name="fake-discord-client")
    ready = asyncio.create_task(client.wait_until_ready())
    done, _ = await asyncio.wait({task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        if task in done:
            task.result()  # surfaces a login/connect failure
        await client.close()
        task.cancel()
        raise TimeoutError("discord.py client did not become ready against the fake")
    try:
        yield client
    finally:
        await client.close()
        try:
            await asyncio.wait_for(task, timeout)
        except asyncio.CancelledError:
            pass
