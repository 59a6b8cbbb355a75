"""REST routes of the fake Discord server: plumbing shared with it and the route handlers (a mixin of FakeDiscord)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.discord_models import (
    LOADING,
    NONCE_WINDOW_S,
    THREAD_ARCHIVE_MINUTES,
    ErrorTree,
    FakeCallback,
    FakeFile,
    FakeMessage,
    FakeThread,
    InteractionHandle,
    Json,
    check_modal,
)


@dataclass(frozen=True)
class FakeError:
    """A 4xx the fake returned (tests assert none happened unexpectedly)."""

    status: int
    method: str
    path: str
    code: int
    message: str
    errors: Json


class DiscordError(Exception):
    """Raised inside a route handler to answer with Discord's error body."""

    def __init__(self, status: int, code: int, message: str, errors: ErrorTree | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors = errors.tree if errors else {}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    match: re.Match[str]
    query: Any
    payload: Json
    files: dict[int, FakeFile]
    headers: Any


Handler = Callable[[Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json": discord.py compares the header verbatim and treats anything else as text.
    return web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json", headers=headers or {}
    )


def not_found(kind: str, code: int) -> DiscordError:
    return DiscordError(404, code, f"Unknown {kind}")


class RestHandlers:
    """Route handlers; FakeDiscord supplies the state and the message helpers they call."""

    # State (self.interactions, self.threads, ...) and helpers (self._check, self._new_message, ...) live on
    # FakeDiscord; only the per-route logic is here.

    # --- the route table ------------------------------------------------------------------------------------

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

    # --- handlers --------------------------------------------------------------------------------------------

    async def _get_me(self, req: Request) -> web.Response:
        return json_response(self.bot_user.payload() | {"verified": True, "mfa_enabled": False, "flags": 0})

    async def _get_user(self, req: Request) -> web.Response:
        return json_response(self._find_user(int(req.match["uid"])).payload())

    async def _get_application(self, req: Request) -> web.Response:
        return json_response(self._application_payload())

    async def _get_gateway(self, req: Request) -> web.Response:
        limits = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self.ws_url, "shards": 1, "session_start_limit": limits})

    def _commands_list(self, req: Request) -> list[Json]:
        if req.match["app"] != str(self.application_id):
            raise not_found("Application", 10002)
        gid = req.match.groupdict().get("gid")
        if gid is None:
            return self.global_commands
        if int(gid) != self.guild_id:
            raise DiscordError(403, 50001, "Missing Access")
        return self.guild_commands.setdefault(int(gid), [])

    async def _put_commands(self, req: Request) -> web.Response:
        target = self._commands_list(req)
        body = req.payload if isinstance(req.payload, list) else []
        errors = ErrorTree()
        for i, cmd in enumerate(body):
            errors.max_len([i, "name"], cmd.get("name"), 32, 1)
            if cmd.get("type", 1) == 1:
                errors.max_len([i, "description"], cmd.get("description"), 100, 1)
            errors.max_len([i, "options"], cmd.get("options") or [], 25)
        if len(body) > 100 or errors:
            raise DiscordError(400, 50035, "Invalid Form Body", errors)
        old = {c["name"]: c["id"] for c in target}
        synced = []
        for cmd in body:
            cid = old.get(cmd["name"]) or str(self._snow())
            out = cmd | {"id": cid, "application_id": str(self.application_id), "version": str(self._snow())}
            out.setdefault("type", 1)
            out.setdefault("description", "")
            if "gid" in req.match.groupdict() and req.match["gid"]:
                out["guild_id"] = req.match["gid"]
            synced.append(out)
        target[:] = synced
        await self._changed()
        return json_response(synced)

    async def _get_commands(self, req: Request) -> web.Response:
        return json_response(self._commands_list(req))

    def _handle(self, req: Request) -> InteractionHandle:
        handle = self.interactions.get(req.match["token"])
        if handle is None:
            raise not_found("Webhook", 10015)
        if handle.expired:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        return handle

    async def _callback(self, req: Request) -> web.Response:
        handle = self._handle(req)
        if str(handle.id) != req.match["iid"]:
            raise not_found("interaction", 10062)
        if handle.callback is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        kind, data = int(req.payload.get("type", 0)), req.payload.get("data") or {}
        resource: Json = {"type": kind}
        if kind in (4, 5):
            if kind == 4:
                self._check(data, req.files, creating=True)
            else:
                data = {"flags": int(data.get("flags") or 0)}
            msg = self._new_message(
                handle.channel_id,
                data if kind == 4 else {"flags": data["flags"] | LOADING},
                req.files,
                type=20 if handle.type == 2 else 0,
                webhook_id=self.application_id,
                application_id=self.application_id,
                interaction_metadata=self._metadata(handle),
            )
            handle.original = msg
            await self._add_message(msg)
            resource["message"] = msg.payload()
        elif kind in (6, 7):
            if handle.message is None:
                raise DiscordError(400, 40043, "This interaction type does not support an update response")
            handle.original = handle.message
            if kind == 7:
                await self._edit_message(handle.message, data, req.files)
                resource["message"] = handle.message.payload()
        elif kind == 8:
            choices = data.get("choices") or []
            errors = ErrorTree()
            errors.max_len(["data", "choices"], choices, 25)
            if errors:
                raise DiscordError(400, 50035, "Invalid Form Body", errors)
        elif kind == 9:
            errors = check_modal(data)
            if errors:
                raise DiscordError(400, 50035, "Invalid Form Body", errors)
        else:
            raise DiscordError(400, 50035, f"Invalid interaction response type {kind}")
        handle.callback = FakeCallback(kind, data)
        handle._responded.set()
        await self._changed()
        interaction = {"id": str(handle.id), "type": handle.type}
        if handle.original is not None:
            interaction["response_message_id"] = str(handle.original.id)
            interaction["response_message_loading"] = kind == 5
            interaction["response_message_ephemeral"] = handle.original.ephemeral
        return json_response({"interaction": interaction, "resource": resource})

    def _metadata(self, handle: InteractionHandle) -> Json:
        meta: Json = {
            "id": str(handle.id),
            "type": handle.type,
            "user": handle.user.payload(),
            "authorizing_integration_owners": {"0": str(self.guild_id)},
        }
        if handle.type == 2:
            meta["name"] = handle.payload["data"].get("name")
        if handle.message is not None:
            meta["interacted_message_id"] = str(handle.message.id)
        return meta

    async def _followup(self, req: Request) -> web.StreamResponse:
        handle = self._handle(req)
        if handle.callback is None:
            raise not_found("Webhook", 10015)
        original = handle.original
        if original is not None and original.loading and not original.deleted and handle.callback.type == 5:
            # After a "thinking" defer, Discord turns the first followup into the edit of that message;
            # once that message is deleted, a followup is a new message like any other.
            original.flags &= ~LOADING
            msg = await self._edit_message(original, req.payload, req.files)
        else:
            self._check(req.payload, req.files, creating=True)
            msg = self._new_message(
                handle.channel_id,
                req.payload,
                req.files,
                webhook_id=self.application_id,
                application_id=self.application_id,
                interaction_metadata=self._metadata(handle),
            )
            await self._add_message(msg)
        handle.followups.append(msg)
        await self._changed()
        if req.query.get("wait") in ("1", "true", "True"):
            return json_response(msg.payload())
        return web.Response(status=204)

    def _webhook_message(self, req: Request) -> tuple[InteractionHandle, FakeMessage]:
        handle = self._handle(req)
        mid = req.match["mid"]
        if mid == "@original":
            if handle.original is None:
                raise not_found("Message", 10008)
            return handle, handle.original
        msg = self._messages.get(int(mid))
        if msg is None or msg.deleted or all(msg is not m for m in [handle.original, *handle.followups]):
            raise not_found("Message", 10008)
        return handle, msg

    async def _webhook_get(self, req: Request) -> web.Response:
        return json_response(self._webhook_message(req)[1].payload())

    async def _webhook_edit(self, req: Request) -> web.Response:
        _, msg = self._webhook_message(req)
        if msg.loading:
            msg.flags &= ~LOADING
        return json_response((await self._edit_message(msg, req.payload, req.files)).payload())

    async def _webhook_delete(self, req: Request) -> web.Response:
        _, msg = self._webhook_message(req)
        await self._delete(msg)
        return web.Response(status=204)

    async def _delete(self, msg: FakeMessage) -> None:
        msg.deleted = True
        if not msg.ephemeral:
            event = {"id": str(msg.id), "channel_id": str(msg.channel_id), "guild_id": str(self.guild_id)}
            await self.dispatch("MESSAGE_DELETE", event)
        await self._changed()

    def _channel_id(self, req: Request) -> int:
        cid = int(req.match["cid"])
        self.channel_payload(cid)
        return cid

    def _channel_message(self, req: Request) -> FakeMessage:
        cid = self._channel_id(req)
        msg = self._messages.get(int(req.match["mid"]))
        if msg is None or msg.deleted or msg.channel_id != cid or msg.ephemeral:
            raise not_found("Message", 10008)
        return msg

    async def _get_channel(self, req: Request) -> web.Response:
        return json_response(self.channel_payload(int(req.match["cid"])))

    async def _patch_channel(self, req: Request) -> web.Response:
        cid = int(req.match["cid"])
        thread = next((t for t in self.threads if t.id == cid), None)
        if thread is None:
            raise DiscordError(403, 50013, "Missing Permissions")
        body = req.payload
        thread.name = body.get("name", thread.name)
        thread.archived = body.get("archived", thread.archived)
        thread.locked = body.get("locked", thread.locked)
        thread.auto_archive_duration = body.get("auto_archive_duration", thread.auto_archive_duration)
        await self.dispatch("THREAD_UPDATE", thread.payload())
        await self._changed()
        return json_response(thread.payload())

    async def _post_message(self, req: Request) -> web.Response:
        cid = self._channel_id(req)
        failure = self.take_failure(cid, bool(req.files))
        if failure is not None:
            raise DiscordError(failure.status, failure.code, failure.message)
        self._check_thread_open(cid)
        self._check(req.payload, req.files, creating=True)
        nonce = req.payload.get("nonce")
        key = (cid, self.bot_user.id, str(nonce))
        if nonce is not None and req.payload.get("enforce_nonce"):
            seen = self.nonces.get(key)
            if seen is not None and time.monotonic() - seen[1] < NONCE_WINDOW_S:
                earlier = self.message(seen[0])
                if not earlier.deleted:
                    return json_response(earlier.payload())
        msg = self._new_message(cid, req.payload, req.files)
        if nonce is not None:
            self.nonces[key] = (msg.id, time.monotonic())
        await self._add_message(msg)
        return json_response(msg.payload())

    def _check_thread_open(self, cid: int) -> None:
        thread = next((t for t in self.threads if t.id == cid), None)
        if thread is not None and thread.locked:
            raise DiscordError(400, 50083, "Thread is archived")

    async def _history(self, req: Request) -> web.Response:
        cid = self._channel_id(req)
        limit = int(req.query.get("limit", 50))
        msgs = list(reversed(self.messages(cid)))
        if "before" in req.query:
            msgs = [m for m in msgs if m.id < int(req.query["before"])]
        if "after" in req.query:
            msgs = [m for m in msgs if m.id > int(req.query["after"])]
        return json_response([m.payload() for m in msgs[:limit]])

    async def _get_message(self, req: Request) -> web.Response:
        return json_response(self._channel_message(req).payload())

    async def _patch_message(self, req: Request) -> web.Response:
        msg = self._channel_message(req)
        if msg.author.id != self.bot_user.id and set(req.payload) - {"flags"}:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        return json_response((await self._edit_message(msg, req.payload, req.files)).payload())

    async def _delete_message(self, req: Request) -> web.Response:
        await self._delete(self._channel_message(req))
        return web.Response(status=204)

    def _thread_args(self, body: Json) -> tuple[str, int]:
        errors = ErrorTree()
        name = body.get("name") or ""
        errors.max_len(["name"], name, 100, 1)
        duration = int(body.get("auto_archive_duration") or 1440)
        if duration not in THREAD_ARCHIVE_MINUTES:
            errors.add(["auto_archive_duration"], "BASE_TYPE_CHOICES", f"Value must be one of {THREAD_ARCHIVE_MINUTES}")
        if errors:
            raise DiscordError(400, 50035, "Invalid Form Body", errors)
        return name, duration

    async def _create_thread(self, thread: FakeThread) -> web.Response:
        thread.member_ids.add(self.bot_user.id)
        self.threads.append(thread)
        await self.dispatch("THREAD_CREATE", thread.payload() | {"newly_created": True})
        await self._changed()
        return json_response(thread.payload())

    async def _thread_from_message(self, req: Request) -> web.Response:
        msg = self._channel_message(req)
        if msg.thread_id is not None:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        if msg.channel_id not in (self.channel_id, self.other_channel_id):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        name, duration = self._thread_args(req.payload)
        # Discord gives a thread started from a message the id of that message.
        msg.thread_id = msg.id
        thread = FakeThread(msg.id, name, msg.channel_id, self.guild_id, self.bot_user.id, duration, 11, msg.id)
        return await self._create_thread(thread)

    async def _thread_standalone(self, req: Request) -> web.Response:
        cid = self._channel_id(req)
        name, duration = self._thread_args(req.payload)
        kind = int(req.payload.get("type") or 12)
        return await self._create_thread(
            FakeThread(self._snow(), name, cid, self.guild_id, self.bot_user.id, duration, kind)
        )

    def _thread_for(self, req: Request) -> tuple[FakeThread, int]:
        cid = int(req.match["cid"])
        thread = next((t for t in self.threads if t.id == cid), None)
        if thread is None:
            raise not_found("Channel", 10003)
        uid = self.bot_user.id if req.match["uid"] == "@me" else self._find_user(int(req.match["uid"])).id
        return thread, uid

    async def _thread_member_add(self, req: Request) -> web.Response:
        thread, uid = self._thread_for(req)
        thread.member_ids.add(uid)
        await self._changed()
        return web.Response(status=204)

    async def _thread_member_remove(self, req: Request) -> web.Response:
        thread, uid = self._thread_for(req)
        thread.member_ids.discard(uid)
        await self._changed()
        return web.Response(status=204)

    async def _typing(self, req: Request) -> web.Response:
        self.typing[self._channel_id(req)] += 1
        await self._changed()
        return web.Response(status=204)

    async def _get_guild(self, req: Request) -> web.Response:
        if int(req.match["gid"]) != self.guild_id:
            raise not_found("Guild", 10004)
        return json_response(self.guild_payload())

    async def _get_guild_channels(self, req: Request) -> web.Response:
        return json_response(self._channels())

    async def _get_member(self, req: Request) -> web.Response:
        user = self._find_user(int(req.match["uid"]))
        return json_response(self._member(user))
