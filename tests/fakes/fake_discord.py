"""A Discord-compatible REST API + gateway on 127.0.0.1 that the real discord.py connects to (design.md section 7).

Usage::

    fake = FakeDiscord(); await fake.start()
    with fake.patch_discord():
        ... start a discord.py client with fake.token, wait for READY ...
        handle = await fake.run_slash(fake.users[0], "draft", {"prompt": "a lighthouse"})
        await handle.response()
    await fake.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl
from aiohttp import web

from tests.fakes.discord_models import (
    EPHEMERAL,
    LOADING,
    MESSAGE_CONTENT_INTENT,
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
    route_bucket,
)
from tests.fakes.discord_rest import DiscordError, FakeError, Handler, Request, RestHandlers, json_response, not_found

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

log = logging.getLogger(__name__)

# Permissions the fake grants: view, send, embed, attach, history, app commands, threads, manage messages/threads.
_EVERYONE_PERMS = (1 << 6) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)
_EVERYONE_PERMS |= (1 << 35) | (1 << 36) | (1 << 38)
_BOT_PERMS = _EVERYONE_PERMS | (1 << 13) | (1 << 34)
_DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


@dataclass
class _Inject:
    pattern: re.Pattern[str]
    times: int
    retry_after: float


@dataclass
class _Failure:
    """The next `times` message creates in a channel are answered with this error instead."""

    channel_id: int | None
    times: int
    status: int
    code: int
    message: str
    with_files: bool


class FakeDiscord(RestHandlers):
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
        self._injections: list[_Inject] = []
        self._failures: list[_Failure] = []
        #: message creates refused by fail_posts(), as (channel id, status)
        self.failed_posts: list[tuple[int, int]] = []
        self._sockets: list[_GatewaySession] = []
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
        for sess in list(self._sockets):
            await sess.ws.close(code=4000)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def ws_url(self) -> str:
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
        return self._messages[message_id]

    def thread(self, thread_id: int) -> FakeThread:
        return next(t for t in self.threads if t.id == thread_id)

    def user(self, name: str) -> FakeUser:
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

    def inject_429(self, route_pattern: str, times: int = 1, retry_after: float = 0.05) -> None:
        """Answer the next `times` requests whose "METHOD /path" (path after /api/v10) matches the regex with 429."""
        self._injections.append(_Inject(re.compile(route_pattern), times, retry_after))

    def fail_posts(
        self,
        channel_id: int | None,
        times: int = 1,
        status: int = 503,
        code: int = 0,
        message: str = "Service Unavailable",
        *,
        with_files: bool = False,
    ) -> None:
        """Answer the next `times` message POSTs to a channel (None: any) with `status` and Discord's JSON `code`.

        with_files: only posts that upload files count (galleries, final images), so the switch can be armed
        before the thread that will receive them exists.
        """
        self._failures.append(_Failure(channel_id, times, status, code, message, with_files))

    def take_failure(self, channel_id: int, has_files: bool) -> _Failure | None:
        """The failure the next post to `channel_id` gets, if fail_posts() armed one (counted down)."""
        for failure in self._failures:
            if failure.channel_id not in (None, channel_id) or (failure.with_files and not has_files):
                continue
            if failure.times > 0:
                failure.times -= 1
                self.failed_posts.append((channel_id, failure.status))
                return failure
        return None

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
        everyone = {"id": str(self.guild_id), "name": "@everyone", "permissions": str(_EVERYONE_PERMS)}
        bot_role = {"id": str(self.bot_role_id), "name": "Vibes", "permissions": str(_BOT_PERMS), "managed": True}
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

    # --- gateway --------------------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sess = _GatewaySession(ws)
        self._sockets.append(sess)
        try:
            await sess.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                await self._on_gateway_message(sess, json.loads(msg.data))
        finally:
            self._sockets.remove(sess)
        return ws

    async def _on_gateway_message(self, sess: _GatewaySession, msg: Json) -> None:
        op, data = msg.get("op"), msg.get("d")
        if op == 1:
            await sess.send({"op": 11})
        elif op == 2:
            if data["token"] != self.token:
                await sess.ws.close(code=4004, message=b"Authentication failed.")
                return
            self.identify_payloads.append(data)
            sess.intents = int(data.get("intents", 0))
            ready = {
                "v": 10,
                "user": self.bot_user.payload(),
                "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                "session_id": secrets.token_hex(16),
                "resume_gateway_url": self.ws_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
            }
            if "shard" in data:
                ready["shard"] = data["shard"]
            await sess.dispatch("READY", ready)
            await sess.dispatch("GUILD_CREATE", self.guild_payload() | {"threads": [t.payload() for t in self.threads]})
            sess.identified = True
        elif op == 6:
            sess.identified = True
            await sess.dispatch("RESUMED", {})
        elif op == 8:
            members = [self._member(u) for u in [self.bot_user, *self.users]]
            chunk = {"guild_id": str(self.guild_id), "members": members, "chunk_index": 0, "chunk_count": 1}
            if data.get("nonce"):
                chunk["nonce"] = data["nonce"]
            await sess.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def dispatch(self, event: str, data: Json) -> None:
        """Send a DISPATCH event to every identified gateway connection."""
        for sess in list(self._sockets):
            if sess.identified:
                payload = data
                foreign = data.get("author", {}).get("id") != str(self.bot_user.id)
                if event == "MESSAGE_CREATE" and foreign and not sess.intents & MESSAGE_CONTENT_INTENT:
                    # Without the privileged intent Discord blanks other people's message content.
                    payload = data | {"content": "", "embeds": [], "attachments": [], "components": []}
                await sess.dispatch(event, payload)

    async def drop_gateway(self) -> None:
        """Close every gateway connection with 4000 (discord.py reconnects and RESUMEs)."""
        for sess in list(self._sockets):
            await sess.ws.close(code=4000)

    # --- interactions driven by tests --------------------------------------------------------------------------

    def _find_command(self, name: str) -> tuple[Json, bool]:
        for cmd in self.guild_commands.get(self.guild_id, []):
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd, True
        for cmd in self.global_commands:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd, False
        known = [c["name"] for c in [*self.global_commands, *self.guild_commands.get(self.guild_id, [])]]
        raise ValueError(f"command {name!r} was not synced; synced commands: {known}")

    def _build_options(
        self, schema: list[Json], values: dict[str, Any], resolved: Json, focused: str | None
    ) -> list[Json]:
        by_name = {o["name"]: o for o in schema}
        unknown = set(values) - set(by_name)
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; the command has {sorted(by_name)}")
        out: list[Json] = []
        for opt in schema:
            name, kind = opt["name"], opt["type"]
            if name not in values:
                if opt.get("required") and name != focused:
                    raise ValueError(f"required option {name!r} missing")
                continue
            value = values[name]
            item: Json = {"name": name, "type": kind}
            if kind in (6, 9) and isinstance(value, FakeUser):
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
                member = self._member(value, with_user=False) | {"permissions": str(_EVERYONE_PERMS)}
                resolved.setdefault("members", {})[str(value.id)] = member
                value = str(value.id)
            elif kind == 11:
                upload = value if isinstance(value, FakeFile) else FakeFile(*value)
                att = self._store_attachment(self.channel_id, upload)
                resolved.setdefault("attachments", {})[str(att.id)] = att.payload() | {"ephemeral": True}
                value = str(att.id)
            elif kind == 7:
                value = str(value)
                resolved.setdefault("channels", {})[value] = self.channel_payload(int(value)) | {"permissions": "0"}
            item["value"] = value
            if name == focused:
                item["focused"] = True
            out.append(item)
        return out

    def _interaction_base(self, kind: int, user: FakeUser, channel_id: int, data: Json) -> Json:
        return {
            "id": str(self._snow()),
            "application_id": str(self.application_id),
            "type": kind,
            "token": secrets.token_urlsafe(24),
            "version": 1,
            "guild_id": str(self.guild_id),
            "channel_id": str(channel_id),
            "channel": self.channel_payload(channel_id) | {"permissions": str(_EVERYONE_PERMS)},
            "member": self._member(user) | {"permissions": str(_EVERYONE_PERMS)},
            "app_permissions": str(_BOT_PERMS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": self.attachment_size_limit,
            "data": data,
        }

    async def _send_interaction(
        self, kind: int, user: FakeUser, channel_id: int | None, data: Json, message: FakeMessage | None = None
    ) -> InteractionHandle:
        cid = channel_id or (message.channel_id if message else self.channel_id)
        payload = self._interaction_base(kind, user, cid, data)
        if message is not None:
            payload["message"] = message.payload()
        handle = InteractionHandle(
            id=int(payload["id"]),
            token=payload["token"],
            type=kind,
            user=user,
            channel_id=cid,
            payload=payload,
            waiter=self.wait_for,
            message=message,
        )
        self.interactions[handle.token] = handle
        await self.dispatch("INTERACTION_CREATE", payload)
        return handle

    def _command_data(self, name: str, options: dict[str, Any], focused: str | None) -> Json:
        root, *subs = name.split()
        cmd, in_guild = self._find_command(root)
        resolved: Json = {}
        schema = cmd.get("options", [])
        chain: list[Json] = []
        for sub in subs:
            found = next((o for o in schema if o["name"] == sub and o["type"] in (1, 2)), None)
            if found is None:
                raise ValueError(f"/{root} has no subcommand {sub!r}")
            chain.append(found)
            schema = found.get("options", [])
        built = self._build_options(schema, options, resolved, focused)
        for sub_opt in reversed(chain):
            built = [{"name": sub_opt["name"], "type": sub_opt["type"], "options": built}]
        data: Json = {"id": cmd["id"], "name": root, "type": 1, "options": built}
        if resolved:
            data["resolved"] = resolved
        if in_guild:
            data["guild_id"] = str(self.guild_id)
        return data

    async def run_slash(
        self,
        user: FakeUser,
        name: str,
        options: dict[str, Any] | None = None,
        channel_id: int | None = None,
        attachments: dict[str, FakeFile] | None = None,
    ) -> InteractionHandle:
        """Invoke `/name` (subcommands as "session invite"); user options take FakeUser, attachments FakeFile."""
        data = self._command_data(name, {**(options or {}), **(attachments or {})}, None)
        return await self._send_interaction(2, user, channel_id, data)

    async def autocomplete(
        self, user: FakeUser, name: str, options: dict[str, Any], focused: str, channel_id: int | None = None
    ) -> list[Json]:
        """Ask the bot for autocomplete choices of the focused option; returns [{"name", "value"}, ...]."""
        data = self._command_data(name, options, focused)
        handle = await self._send_interaction(4, user, channel_id, data)
        await handle.response()
        return handle.choices

    def _resolve_message(self, message: FakeMessage | int) -> FakeMessage:
        return self._messages[message] if isinstance(message, int) else message

    async def click(
        self, user: FakeUser, message: FakeMessage | int, custom_id: str, *, channel_id: int | None = None
    ) -> InteractionHandle:
        """Press a button on a message (component interaction, component_type 2).

        channel_id: claim another channel than the message's, as a forged interaction can.
        """
        msg = self._resolve_message(message)
        comp = msg.component(custom_id)
        if comp.disabled:
            raise ValueError(f"button {custom_id!r} is disabled")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._send_interaction(3, user, channel_id, data, msg)

    async def select(
        self, user: FakeUser, message: FakeMessage | int, custom_id: str, values: list[str]
    ) -> InteractionHandle:
        """Choose values in a select menu of a message."""
        msg = self._resolve_message(message)
        comp = msg.component(custom_id)
        data = {"custom_id": custom_id, "component_type": comp.type, "values": list(values)}
        return await self._send_interaction(3, user, None, data, msg)

    async def submit_modal(
        self,
        user: FakeUser,
        channel_id: int | None,
        custom_id: str,
        values: dict[str, str],
        *,
        opened_by: InteractionHandle | None = None,
    ) -> InteractionHandle:
        """Submit a modal (type 5); the shape mirrors the modal the bot opened when `opened_by` is given."""
        rows: list[Json] = []
        shape = opened_by.modal["components"] if opened_by is not None and opened_by.modal else None
        if shape is None:
            rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()]
        else:
            for top in shape:
                inner = top.get("component") or (top.get("components") or [{}])[0]
                cid = inner.get("custom_id")
                if cid not in values:
                    continue
                item = {"type": inner.get("type", 4), "custom_id": cid, "value": values[cid]}
                rows.append(
                    {"type": 18, "component": item} if top.get("type") == 18 else {"type": 1, "components": [item]}
                )
        message = opened_by.message if opened_by is not None else None
        return await self._send_interaction(5, user, channel_id, {"custom_id": custom_id, "components": rows}, message)

    async def say(
        self, user: FakeUser, channel_id: int | None, content: str, files: list[FakeFile] | None = None
    ) -> FakeMessage:
        """A user posts a message (MESSAGE_CREATE reaches the bot's on_message)."""
        cid = channel_id or self.channel_id
        self.channel_payload(cid)
        msg = FakeMessage(id=self._snow(), channel_id=cid, guild_id=self.guild_id, author=user, content=content)
        msg.attachments = [self._store_attachment(cid, f) for f in files or []]
        await self._add_message(msg)
        return msg

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

    # --- REST plumbing --------------------------------------------------------------------------------------------

    def _route(self, method: str, template: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self._routes.append((method, re.compile(f"^{regex}$"), handler))

    def _ratelimit_headers(self, bucket: str, remaining: int, reset_after: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.ratelimit_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }

    async def _read_body(self, request: web.Request) -> tuple[Json, dict[int, FakeFile]]:
        files: dict[int, FakeFile] = {}
        if request.content_type.startswith("multipart/"):
            payload: Json = {}
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader):
                    continue
                name = part.name or ""
                if name == "payload_json":
                    payload = json.loads(await part.text())
                elif m := re.fullmatch(r"files\[(\d+)\]", name):
                    ctype = part.headers.get("Content-Type", "application/octet-stream")
                    files[int(m.group(1))] = FakeFile(part.filename or "file", bytes(await part.read()), ctype)
            return payload, files
        raw = await request.read()
        return (json.loads(raw) if raw else {}), files

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        method, full = request.method, request.path
        if full.startswith("/attachments/"):
            self.cdn_fetches += 1
            return self._cdn(full)
        path = full.removeprefix("/api/v10")
        self.requests.append((method, path))
        for inject in self._injections:
            if inject.times > 0 and inject.pattern.search(f"{method} {path}"):
                inject.times -= 1
                self.rate_limited_count += 1
                body = {"message": "You are being rate limited.", "retry_after": inject.retry_after, "global": False}
                headers = self._ratelimit_headers(route_bucket(path), 0, inject.retry_after)
                # discord.py retries a 429 only when it carries a Via header (otherwise it assumes Cloudflare).
                headers |= {"Via": "1.1 google", "Retry-After": str(inject.retry_after), "X-RateLimit-Scope": "user"}
                return json_response(body | {"code": 0}, 429, headers)
        for route_method, regex, handler in self._routes:
            match = regex.match(path)
            if match is None or route_method != method:
                continue
            try:
                if not path.startswith(("/webhooks/", "/interactions/")):
                    self._check_auth(request)
                payload, files = await self._read_body(request)
                req = Request(method, path, match, request.query, payload, files, request.headers)
                response = await handler(req)
            except DiscordError as exc:
                self.errors.append(FakeError(exc.status, method, path, exc.code, exc.message, exc.errors))
                body = {"code": exc.code, "message": exc.message}
                if exc.errors:
                    body["errors"] = exc.errors
                return json_response(body, exc.status)
            except Exception as exc:  # a bug in the fake must fail the test, not hang discord.py in 500 retries
                log.exception("fake discord failed on %s %s", method, path)
                self.internal_errors.append(f"{method} {path}: {exc!r}")
                return json_response({"code": 0, "message": f"fake internal error: {exc!r}"}, 400)
            response.headers.update(self._ratelimit_headers(route_bucket(regex.pattern), self.ratelimit_limit - 1, 1.0))
            return response
        self.unknown_routes.append((method, path))
        self.errors.append(FakeError(404, method, path, 0, "404: Not Found", {}))
        return json_response({"code": 0, "message": "404: Not Found"}, 404)

    def _check_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, 0, "401: Unauthorized")

    def _cdn(self, path: str) -> web.Response:
        parts = path.split("/")
        att = self._attachments.get(int(parts[3])) if len(parts) > 3 and parts[3].isdigit() else None
        if att is None:
            return web.Response(status=404)
        return web.Response(body=att.content, content_type=att.content_type or "application/octet-stream")

    def _add_routes(self) -> None:
        r = self._route
        r("GET", "/users/@me", self._get_me)
        r("GET", "/users/{uid}", self._get_user)
        r("GET", "/oauth2/applications/@me", self._get_application)
        r("GET", "/applications/@me", self._get_application)
        r("GET", "/gateway", self._get_gateway)
        r("GET", "/gateway/bot", self._get_gateway)
        r("PUT", "/applications/{app}/commands", self._put_commands)
        r("GET", "/applications/{app}/commands", self._get_commands)
        r("PUT", "/applications/{app}/guilds/{gid}/commands", self._put_commands)
        r("GET", "/applications/{app}/guilds/{gid}/commands", self._get_commands)
        r("POST", "/interactions/{iid}/{token}/callback", self._callback)
        r("POST", "/webhooks/{app}/{token}", self._followup)
        r("GET", "/webhooks/{app}/{token}/messages/{mid}", self._webhook_get)
        r("PATCH", "/webhooks/{app}/{token}/messages/{mid}", self._webhook_edit)
        r("DELETE", "/webhooks/{app}/{token}/messages/{mid}", self._webhook_delete)
        r("GET", "/channels/{cid}", self._get_channel)
        r("PATCH", "/channels/{cid}", self._patch_channel)
        r("POST", "/channels/{cid}/messages", self._post_message)
        r("GET", "/channels/{cid}/messages", self._history)
        r("GET", "/channels/{cid}/messages/{mid}", self._get_message)
        r("PATCH", "/channels/{cid}/messages/{mid}", self._patch_message)
        r("DELETE", "/channels/{cid}/messages/{mid}", self._delete_message)
        r("POST", "/channels/{cid}/messages/{mid}/threads", self._thread_from_message)
        r("POST", "/channels/{cid}/threads", self._thread_standalone)
        r("PUT", "/channels/{cid}/thread-members/{uid}", self._thread_member_add)
        r("DELETE", "/channels/{cid}/thread-members/{uid}", self._thread_member_remove)
        r("POST", "/channels/{cid}/typing", self._typing)
        r("GET", "/guilds/{gid}", self._get_guild)
        r("GET", "/guilds/{gid}/channels", self._get_guild_channels)
        r("GET", "/guilds/{gid}/members/{uid}", self._get_member)


class _GatewaySession:
    """One gateway connection: its sequence numbers and the intents it identified with."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0
        self.intents = 0
        self.identified = False

    async def send(self, payload: Json) -> None:
        if not self.ws.closed:
            # Text frames: discord.py only zlib-decompresses binary frames.
            await self.ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: Json) -> None:
        self.seq += 1
        await self.send({"op": 0, "t": event, "s": self.seq, "d": data})


# --- helpers for fixtures ---------------------------------------------------------------------------------------


class DiscordErrorLogGuard(logging.Handler):
    """Collects ERROR records of the `discord` logger (discord.py logs exceptions of callbacks instead of raising)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @contextlib.contextmanager
    def installed(self) -> Iterator[DiscordErrorLogGuard]:
        logger = logging.getLogger("discord")
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)

    def report(self) -> str:
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
