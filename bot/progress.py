"""
The one coalescing message editor: at most one edit per interval per message, always the latest state.

Callers hand it the state a message should show (`update()` never awaits); one owned task per dirty
message sends the newest state once its interval has passed, skips states equal to what is shown,
backs off on 429, and posts a fresh message when the old one is too old to edit (error 30046).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord

from bot.limits import ERROR_TOO_OLD_TO_EDIT, PROGRESS_EDIT_INTERVAL_S, clamp_embeds, content

log = logging.getLogger(__name__)

#: 5xx or other transient failures: give up on one state after this many tries (a newer state restarts the count)
MAX_FAILURES = 4


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file a message shows."""

    name: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, eq=False)
class MessageState:
    """What one message should show: content, embeds, components, and (progress only) one preview image."""

    content: str | None = None
    embeds: tuple[discord.Embed, ...] = ()
    view: discord.ui.View | None = None
    #: a message that owns its attachments shows exactly `image` (or none); any other message's attachments are
    #: set when it is posted and edits leave them alone (a gallery keeps its pictures)
    owns_attachments: bool = False
    image: Attachment | None = None

    def fingerprint(self) -> str:
        """Equal fingerprints mean an edit would change nothing."""
        return json.dumps(
            {
                "c": self.content,
                "e": [e.to_dict() for e in self.embeds],
                "v": self.view.to_components() if self.view is not None else [],
                "a": [self.image.name, hashlib.blake2b(self.image.data, digest_size=8).hexdigest()]
                if self.image is not None
                else self.owns_attachments,
            },
            sort_keys=True,
            default=str,
        )

    def kwargs(self, *, editing: bool = False) -> dict[str, Any]:
        """Arguments for Message.edit (`editing`) or Messageable.send, within Discord's limits."""
        out: dict[str, Any] = {
            "content": content(self.content) if self.content is not None else None,
            "embeds": clamp_embeds(self.embeds),
        }
        if self.view is not None:
            out["view"] = self.view
        files = [discord.File(io.BytesIO(self.image.data), filename=self.image.name)] if self.image else []
        if editing and self.owns_attachments:
            out["attachments"] = files
        elif files:
            out["files"] = files
        return out


class MessageSink:
    """How edits and reposts reach Discord (a seam: unit tests pass a recording sink)."""

    async def edit(self, channel: discord.abc.Messageable, message_id: int, kwargs: dict[str, Any]) -> None:
        """Edit one message."""
        msg = discord.PartialMessage(channel=channel, id=message_id)  # type: ignore[arg-type]
        await msg.edit(**kwargs)

    async def send(self, channel: discord.abc.Messageable, kwargs: dict[str, Any]) -> discord.Message:
        """Post one message."""
        return await channel.send(**kwargs)


#: posts a replacement for a message that can no longer be edited; returns the new message
Repost = Callable[[MessageState], Awaitable[discord.Message]]
#: told about a replacement so the owner can update its references
OnReplaced = Callable[[str, discord.Message], Awaitable[None]]


@dataclass(slots=True)
class _Entry:
    key: str
    channel: discord.abc.Messageable
    message_id: int
    created_at: datetime
    repost: Repost | None
    on_replaced: OnReplaced | None
    last_edit: float
    shown: str | None = None
    pending: MessageState | None = None
    final: bool = False
    failures: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class CoalescingEditor:
    """Edits tracked messages at a bounded rate with the latest state; never awaited by event producers."""

    def __init__(
        self,
        *,
        interval_s: float = PROGRESS_EDIT_INTERVAL_S,
        max_age_s: float = 3300.0,
        clock: Callable[[], float] = time.monotonic,
        sink: MessageSink | None = None,
    ) -> None:
        self._sink = sink or MessageSink()
        self.interval_s = interval_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        #: counters for tests and logs
        self.edits = 0
        self.reposts = 0
        self.rate_limited = 0

    def track(
        self,
        key: str,
        channel: discord.abc.Messageable,
        message_id: int,
        *,
        shown: MessageState | None = None,
        fresh: bool = True,
        repost: Repost | None = None,
        on_replaced: OnReplaced | None = None,
    ) -> None:
        """Start editing a message under `key`; `fresh` when it was just posted (its first edit waits an interval)."""
        old = self._entries.get(key)
        if old is not None and old.message_id == message_id:
            return
        now = self._clock()
        self._entries[key] = _Entry(
            key=key,
            channel=channel,
            message_id=message_id,
            created_at=discord.utils.snowflake_time(message_id),
            repost=repost,
            on_replaced=on_replaced,
            last_edit=now if fresh else now - self.interval_s,
            shown=shown.fingerprint() if shown is not None else None,
            pending=old.pending if old is not None else None,
            task=old.task if old is not None else None,
        )
        if self._entries[key].pending is not None:
            self._kick(self._entries[key])

    def tracks(self, key: str) -> bool:
        """True while `key` is tracked."""
        return key in self._entries

    def message_id(self, key: str) -> int | None:
        """The message currently shown under `key`."""
        e = self._entries.get(key)
        return e.message_id if e is not None else None

    def update(self, key: str, state: MessageState, *, final: bool = False) -> bool:
        """Ask for `state` to be shown (replacing any unsent one); `final` forgets the message once it is shown."""
        entry = self._entries.get(key)
        if entry is None or self._closed:
            return False
        entry.pending = state
        entry.failures = 0
        entry.final = entry.final or final
        self._kick(entry)
        return True

    def forget(self, key: str) -> None:
        """Stop tracking `key` (an unsent state is dropped)."""
        entry = self._entries.pop(key, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()

    def _kick(self, entry: _Entry) -> None:
        if entry.task is None or entry.task.done():
            self._idle.clear()
            entry.task = asyncio.create_task(self._run(entry), name=f"edit:{entry.key}")
            entry.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("message editor task failed", exc_info=task.exception())
        if all(e.task is None or e.task.done() for e in self._entries.values()):
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once every tracked message shows its latest state (tests, shutdown)."""
        while True:
            await self._idle.wait()
            if all(e.task is None or e.task.done() for e in self._entries.values()):
                return
            self._idle.clear()

    async def close(self) -> None:
        """Cancel every pending edit."""
        self._closed = True
        tasks = [e.task for e in self._entries.values() if e.task is not None and not e.task.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._entries.clear()
        self._idle.set()

    # ------------------------------------------------------------------ worker

    def _too_old(self, entry: _Entry) -> bool:
        return (datetime.now(UTC) - entry.created_at).total_seconds() > self.max_age_s

    async def _run(self, entry: _Entry) -> None:
        while self._entries.get(entry.key) is entry:
            wait = entry.last_edit + self.interval_s - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)  # the rate limit itself, not synchronisation
            state = entry.pending
            if state is None:
                break
            entry.pending = None
            fp = state.fingerprint()
            if fp == entry.shown:
                if entry.final:
                    self._entries.pop(entry.key, None)
                break
            retry_after = await self._send(entry, state)
            if retry_after is None:
                entry.shown = fp
                entry.last_edit = self._clock()
                if entry.final and entry.pending is None:
                    self._entries.pop(entry.key, None)
                    break
            else:
                # Keep the newest state: a newer one may have arrived while we waited.
                if entry.pending is None:
                    entry.pending = state
                entry.last_edit = self._clock() + retry_after - self.interval_s
                if entry.failures > MAX_FAILURES:
                    log.warning("giving up an edit of %s after %d failures", entry.key, entry.failures)
                    entry.pending = None
                    break
        entry.task = None

    async def _send(self, entry: _Entry, state: MessageState) -> float | None:
        """Edit (or replace) the message; None on success, else seconds to wait before retrying."""
        if self._too_old(entry):
            return await self._replace(entry, state)
        try:
            await self._sink.edit(entry.channel, entry.message_id, state.kwargs(editing=True))
        except discord.RateLimited as e:
            self.rate_limited += 1
            entry.failures += 1
            log.warning("edit of %s rate limited; retry in %.2f s", entry.key, e.retry_after)
            return max(e.retry_after, 0.05)
        except discord.NotFound:
            return await self._replace(entry, state)
        except discord.HTTPException as e:
            if e.code == ERROR_TOO_OLD_TO_EDIT:
                return await self._replace(entry, state)
            if e.status == 429:
                self.rate_limited += 1
                entry.failures += 1
                retry = _retry_after(e, self.interval_s)
                log.warning("edit of %s got 429; retry in %.2f s", entry.key, retry)
                return retry
            if e.status == 403:
                log.warning("no permission to edit %s; dropping it", entry.key)
                self._entries.pop(entry.key, None)
                return None
            entry.failures += 1
            log.warning("edit of %s failed (%s %s); will retry", entry.key, e.status, e.code)
            return self.interval_s * entry.failures
        self.edits += 1
        return None

    async def _replace(self, entry: _Entry, state: MessageState) -> float | None:
        """Post a new message with the state; the old one stays as it was."""
        try:
            if entry.repost is not None:
                new = await entry.repost(state)
            else:
                new = await self._sink.send(entry.channel, state.kwargs())
        except discord.HTTPException as e:
            entry.failures += 1
            log.warning("could not repost %s (%s); will retry", entry.key, e.status)
            return self.interval_s * entry.failures
        self.reposts += 1
        log.info("message %s too old to edit; posted %s instead", entry.key, new.id)
        entry.message_id = new.id
        entry.created_at = new.created_at
        if entry.on_replaced is not None:
            try:
                await entry.on_replaced(entry.key, new)
            except Exception:
                log.exception("on_replaced failed for %s", entry.key)
        return None


def _retry_after(e: discord.HTTPException, default: float) -> float:
    try:
        return max(float(e.response.headers.get("Retry-After", default)), 0.05)
    except (AttributeError, TypeError, ValueError):
        return default
