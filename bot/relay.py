"""
Dispatch: the orchestrator's events -> what each session's thread needs (posting.py sends it).

Every event of a session is routed here one at a time: a stage that starts gets a progress message, job events
fold into its tracker, a delivered stage gets its gallery (or its final images), votes refresh the gallery,
the end of a session is said once. `sync()` is idempotent: after a restart, or when a thread is bound after
its first stage already moved on, it posts what is missing exactly once and resumes what is live. No single
event can end the consumer task; a post Discord refuses goes to posting.py's retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import TYPE_CHECKING

import discord

from bot import render
from bot.limits import (
    message_nonce,
    thread_archive_minutes,
    thread_name,
)
from bot.posting import POST_ERRORS, LiveSession, Poster
from bot.progress import CoalescingEditor
from bot.views.common import THREAD
from orchestrator.errors import SessionNotFound
from orchestrator.events import (
    DeadlineMissed,
    Event,
    JobFailed,
    JobFinished,
    JobPreview,
    JobProgress,
    JobQueued,
    JobRetried,
    JobStarted,
    SessionEnded,
    SessionEvent,
    SpeculationChanged,
    StageDone,
    StageStarted,
    VotesChanged,
)
from orchestrator.sessions.models import Session, SessionState, StageStatus

if TYPE_CHECKING:
    from bot.client import ImGenBot

log = logging.getLogger(__name__)

JOB_EVENTS = (JobQueued, JobStarted, JobProgress, JobPreview, JobRetried, JobFinished, JobFailed)
HEADER = "discord.header"
#: on shutdown, how long the event in hand may take to finish (a gallery upload) before it is cancelled
CLOSE_TIMEOUT_S = 10.0


def _accept(event: Event) -> bool:
    return isinstance(event, SessionEvent) or (
        isinstance(event, JOB_EVENTS) and event.session_id is not None and event.stage_id is not None
    )


class Relay:
    """Subscribes to the bus and keeps every session thread in step with the orchestrator."""

    def __init__(self, bot: ImGenBot) -> None:
        self.bot = bot
        ds = bot.orch.settings.discord
        self.editor = CoalescingEditor(interval_s=ds.progress_interval_s, max_age_s=ds.max_edit_age_s)
        self.poster = Poster(bot, self.editor)
        self._live: dict[str, LiveSession] = {}
        #: ended sessions' state, kept only while something still holds it (a retry, a sync under way): a bot up
        #: for weeks keeps nothing per session it has finished with
        self._ended: weakref.WeakValueDictionary[str, LiveSession] = weakref.WeakValueDictionary()
        self._sub = bot.orch.bus.subscribe(maxsize=10_000, accept=_accept)
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: set once the resume pass after a (re)start is done; tests wait on it
        self.resumed = asyncio.Event()
        self._handling = False
        self._handled = asyncio.Condition()

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start consuming events; they wait in the subscription until `set_ready()`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="relay")

    def set_ready(self) -> None:
        """The gateway is ready: resume sessions, then handle events."""
        self._ready.set()

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Finish the event in hand (so a posted message gets its ref recorded), then stop; cancel pending edits."""
        self._stopping = True
        self._sub.close()
        task, self._task = self._task, None
        if task is not None:
            if not self._ready.is_set():
                task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        retries = [live.retry for live in self._sessions() if live.retry is not None]
        for retry in retries:
            retry.cancel()
        for retry in retries:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await retry
        await self.editor.close()

    async def _run(self) -> None:
        await self._ready.wait()
        try:
            await self.resume()
        except Exception:
            log.exception("resuming sessions failed")
        self.resumed.set()
        async for event in self._sub:
            if self._stopping:
                break
            self._handling = True
            try:
                await self.handle(event)
            except Exception:
                # One bad event (a DB hiccup, an odd reply from Discord) must not end the thread updates of
                # every session: log it with its traceback and go on with the next.
                log.exception("relay failed on %s session=%s", type(event).__name__, getattr(event, "session_id", "?"))
            finally:
                self._handling = False
                async with self._handled:
                    self._handled.notify_all()

    async def wait_retries(self) -> None:
        """Wait until no session has a refused post being tried again (tests and shutdown)."""
        while pending := [live.retry for live in self._sessions() if live.retry and not live.retry.done()]:
            await asyncio.wait(pending)

    async def settled(self) -> None:
        """Wait until every event published so far is handled and no refused post is being retried."""
        while True:
            await self.wait_retries()
            async with self._handled:
                if not self._handling and self._sub.pending() == 0:
                    break
                await self._handled.wait()
        await self.editor.wait_idle()

    async def resume(self) -> None:
        """After a start: bring every active session thread up to date."""
        for session in await self.bot.orch.active_sessions():
            if await self.bot.orch.message_ref(session.id, THREAD) is not None:
                await self.sync(session.id)

    # ------------------------------------------------------------------ threads

    async def open_session(
        self,
        session: Session,
        channel: discord.TextChannel,
        header: discord.Message | None = None,
        *,
        title: str | None = None,
    ) -> discord.Thread:
        """Post the header (unless given) in `channel`, start the session's thread from it, bind and sync."""
        if header is None:
            header = await channel.send(embed=render.header_embed(session), nonce=message_nonce(session.id, HEADER))
        minutes = thread_archive_minutes(self.bot.orch.settings.discord.thread_auto_archive_minutes)
        thread = await channel.create_thread(
            name=thread_name(title or session.prompt or render.flow_label(session.flow)),
            message=header,
            auto_archive_duration=minutes,  # type: ignore[arg-type]
        )
        await self.bot.orch.set_message_ref(session.id, THREAD, str(thread.id))
        await self.bot.orch.set_message_ref(session.id, HEADER, f"{channel.id}:{header.id}")
        live = self._get(session.id)
        live.thread, live.unbound = thread, False
        log.info("session=%s thread=%s opened", session.id, thread.id)
        await self.sync(session.id)
        return thread

    def _get(self, session_id: str) -> LiveSession:
        live = self._live.get(session_id)
        if live is None:
            # One state per session at any time: an ended one that hears of itself again (an upscale of one of its
            # images) takes its old state back while anything still holds it.
            live = self._ended.pop(session_id, None) or LiveSession(session_id)
            self._live[session_id] = live
        return live

    def _sessions(self) -> list[LiveSession]:
        return [*self._live.values(), *self._ended.values()]

    # ------------------------------------------------------------------ events

    async def handle(self, event: Event) -> None:
        """Route one event."""
        session_id = getattr(event, "session_id", None)
        if session_id is None:
            return
        live = self._get(session_id)
        try:
            await self._route(live, event)
        except POST_ERRORS as e:
            self.poster.refused(live, e, self._sync)

    async def _route(self, live: LiveSession, event: Event) -> None:
        match event:
            case StageStarted(stage_id=stage_id):
                await self.poster.tracker(live, stage_id)
                async with live.lock:
                    thread = await self.poster.thread(live, refresh=True)
                    if thread is not None:
                        await self.poster.ensure_progress(live, thread, stage_id)
            case StageDone(stage_id=stage_id):
                tracker = await self.poster.tracker(live, stage_id)
                tracker.finished = True
                async with live.lock:
                    thread = await self.poster.thread(live, refresh=True)
                    if thread is not None:
                        await self.poster.finish_stage(live, thread, stage_id)
                    # Its last state is handed to the editor; a later sync rebuilds it from the DB if needed.
                    live.trackers.pop(stage_id, None)
            case VotesChanged(stage_id=stage_id, image_id=image_id):
                thread = await self.poster.thread(live)
                if thread is not None:
                    await self.poster.refresh_gallery(live, thread, stage_id, image_id)
            case SpeculationChanged(stage_id=stage_id, active=active):
                async with live.lock:
                    thread = await self.poster.thread(live)
                    if thread is None:
                        return
                    tracker = await self.poster.tracker(live, stage_id)
                    if not tracker.finished:
                        return  # the stage itself is still rendering; its own progress says so
                    tracker.speculating = active
                    await self.poster.ensure_progress(live, thread, stage_id)
                    self.poster.push_progress(live, tracker, final=True)
                    live.trackers.pop(stage_id, None)
            case DeadlineMissed(reason=reason):
                thread = await self.poster.thread(live)
                if thread is not None:
                    await thread.send(content=render.deadline_missed_text(reason))
            case SessionEnded(reason=reason):
                async with live.lock:
                    thread = await self.poster.thread(live, refresh=True)
                    if thread is not None:
                        await self.poster.post_ended(live, thread, reason)
                    live.trackers.clear()
                if self._live.get(live.session_id) is live:
                    del self._live[live.session_id]
                    self._ended[live.session_id] = live
            case JobQueued() | JobStarted() | JobProgress() | JobPreview() | JobRetried() | JobFinished() | JobFailed():
                job_stage = event.stage_id
                if job_stage is None:
                    return
                tracker = await self.poster.tracker(live, job_stage)
                if tracker.apply(event):
                    self.poster.push_progress(live, tracker)

    # ------------------------------------------------------------------ sync (bind / restart)

    async def sync(self, session_id: str) -> None:
        """
        Post whatever the thread misses for the current stage, exactly once; resume live progress.

        A post Discord refuses is handed to the session's retry task instead of failing the caller.
        """
        live = self._get(session_id)
        try:
            await self._sync(live)
        except POST_ERRORS as e:
            self.poster.refused(live, e, self._sync)

    async def _sync(self, live: LiveSession) -> None:
        session_id = live.session_id
        async with live.lock:
            thread = await self.poster.thread(live, refresh=True)
            if thread is None:
                return
            try:
                session = await self.bot.orch.session(session_id)
                stage = await self.bot.orch.current_stage(session_id)
            except SessionNotFound:
                return
            tracker = await self.poster.tracker(live, stage.id)
            if stage.status is StageStatus.GENERATING:
                await self.poster.ensure_progress(live, thread, stage.id)
                self.poster.push_progress(live, tracker)
            elif stage.status is not StageStatus.CANCELLED:
                tracker.finished = True
                await self.poster.finish_stage(live, thread, stage.id)
            if session.state is SessionState.ENDED:
                await self.poster.post_ended(live, thread, "")
