"""
Routes the orchestrator's events to sessions' threads: progress messages, galleries, final images.

Everything posted is recorded with db refs ("discord.progress.<stage>", "discord.gallery.<stage>.<page>",
"discord.final.<stage>.<n>"), and `sync()` is idempotent: after a restart, or when a thread is bound after
its first stage already moved on, it posts what is missing exactly once and resumes what is live. Each post
carries a nonce derived from its ref, so a crash between posting and recording the ref does not make a
second copy when the post is repeated (Discord returns the first one for a few minutes).

A post Discord refuses (a 5xx, 413 "too large", a timeout) is not lost: the session is handed to a retry task
that runs `sync()` again with a growing wait (uploads shrink after a 413), and after the last try the thread
gets a plain note saying what could not be posted and why. No single event can end the consumer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot import render
from bot.limits import (
    DEFAULT_UPLOAD_LIMIT,
    ERROR_TOO_LARGE,
    HTTP_TOO_LARGE,
    MAX_ATTACHMENTS,
    message_nonce,
    thread_archive_minutes,
    thread_name,
)
from bot.progress import Attachment, CoalescingEditor, MessageState, OnReplaced
from bot.tracker import StageProgress
from bot.views.common import THREAD, final_ref
from bot.views.final import final_view
from bot.views.gallery import gallery_view, mode_for
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
    StageDone,
    StageStarted,
    VotesChanged,
)
from orchestrator.sessions.models import Flow, Session, SessionState, StageStatus, StageView

if TYPE_CHECKING:
    from bot.client import ImGenBot
    from orchestrator.store import ImageStore

log = logging.getLogger(__name__)

JOB_EVENTS = (JobQueued, JobStarted, JobProgress, JobPreview, JobRetried, JobFinished, JobFailed)
HEADER = "discord.header"
ENDED = "discord.ended"
#: gallery thumbnails: a long side that reads well in Discord's grid, and a JPEG quality that keeps 10 well under limits
GALLERY_SIDE = 768
GALLERY_QUALITY = 85
#: on shutdown, how long the event in hand may take to finish (a gallery upload) before it is cancelled
CLOSE_TIMEOUT_S = 10.0
#: what a refused or failed post raises: Discord's answer, the connection, or discord.py's own timeout
POST_ERRORS = (discord.HTTPException, aiohttp.ClientError, TimeoutError, OSError)
#: the longest wait between two retries of a refused post
MAX_RETRY_WAIT_S = 60.0
POST_FAILED = "discord.postfail"


def progress_ref(stage_id: str) -> str:
    return f"discord.progress.{stage_id}"


def gallery_ref(stage_id: str, page: int) -> str:
    return f"discord.gallery.{stage_id}.{page}"


def _accept(event: Event) -> bool:
    return isinstance(event, SessionEvent) or (
        isinstance(event, JOB_EVENTS) and event.session_id is not None and event.stage_id is not None
    )


@dataclass(slots=True)
class _Live:
    """What the relay knows about one session in this process."""

    session_id: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    thread: discord.Thread | None = None
    #: the DB said there is no thread (yet): job events then only fold into trackers
    unbound: bool = False
    trackers: dict[str, StageProgress] = field(default_factory=dict)
    #: uploads are scaled by this after Discord refused one as too large (halved on each 413)
    upload_scale: float = 1.0
    #: what the relay is posting right now, named for the note when it cannot be posted
    posting: str = ""
    #: the task trying again after a refused post (one per session; it syncs everything missing)
    retry: asyncio.Task[None] | None = None


class Relay:
    """Subscribes to the bus and keeps every session thread in step with the orchestrator."""

    def __init__(self, bot: ImGenBot) -> None:
        self.bot = bot
        ds = bot.orch.settings.discord
        self.editor = CoalescingEditor(interval_s=ds.progress_interval_s, max_age_s=ds.max_edit_age_s)
        self._live: dict[str, _Live] = {}
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
        retries = [live.retry for live in self._live.values() if live.retry is not None]
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
        while pending := [live.retry for live in self._live.values() if live.retry and not live.retry.done()]:
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
        for session in await self.bot.sessions.active_sessions():
            if await self.bot.orch.db.get_ref(session.id, THREAD) is not None:
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
        db = self.bot.orch.db
        await db.set_ref(session.id, THREAD, str(thread.id))
        await db.set_ref(session.id, HEADER, f"{channel.id}:{header.id}")
        live = self._get(session.id)
        live.thread, live.unbound = thread, False
        log.info("session=%s thread=%s opened", session.id, thread.id)
        await self.sync(session.id)
        return thread

    def _get(self, session_id: str) -> _Live:
        live = self._live.get(session_id)
        if live is None:
            live = self._live[session_id] = _Live(session_id)
        return live

    async def _thread(self, live: _Live, *, refresh: bool = False) -> discord.Thread | None:
        if live.thread is not None or (live.unbound and not refresh):
            return live.thread
        ref = await self.bot.orch.db.get_ref(live.session_id, THREAD)
        if ref is None:
            live.unbound = True
            return None
        channel = self.bot.get_channel(int(ref))
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(int(ref))
            except discord.HTTPException as e:
                log.warning("session=%s thread %s unreachable (%s)", live.session_id, ref, e.status)
                live.unbound = True
                return None
        if not isinstance(channel, discord.Thread):
            live.unbound = True
            return None
        live.thread, live.unbound = channel, False
        return channel

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
            self._post_refused(live, e)

    async def _route(self, live: _Live, event: Event) -> None:
        match event:
            case StageStarted(stage_id=stage_id):
                await self._tracker(live, stage_id)
                async with live.lock:
                    thread = await self._thread(live, refresh=True)
                    if thread is not None:
                        await self._ensure_progress(live, thread, stage_id)
            case StageDone(stage_id=stage_id):
                tracker = await self._tracker(live, stage_id)
                tracker.finished = True
                async with live.lock:
                    thread = await self._thread(live, refresh=True)
                    if thread is not None:
                        await self._finish_stage(live, thread, stage_id)
                    # Its last state is handed to the editor; a later sync rebuilds it from the DB if needed.
                    live.trackers.pop(stage_id, None)
            case VotesChanged(stage_id=stage_id, image_id=image_id):
                thread = await self._thread(live)
                if thread is not None:
                    await self._refresh_gallery(live, thread, stage_id, image_id)
            case DeadlineMissed(reason=reason):
                thread = await self._thread(live)
                if thread is not None:
                    await thread.send(content=render.deadline_missed_text(reason))
            case SessionEnded(reason=reason):
                async with live.lock:
                    thread = await self._thread(live, refresh=True)
                    if thread is not None:
                        await self._post_ended(live, thread, reason)
                    live.trackers.clear()
            case JobQueued() | JobStarted() | JobProgress() | JobPreview() | JobRetried() | JobFinished() | JobFailed():
                job_stage = event.stage_id
                if job_stage is None:
                    return
                tracker = await self._tracker(live, job_stage)
                if tracker.apply(event):
                    self._push_progress(live, tracker)

    async def _tracker(self, live: _Live, stage_id: str) -> StageProgress:
        tracker = live.trackers.get(stage_id)
        if tracker is None:
            stage = await self.bot.sessions.stage(stage_id)
            tracker = StageProgress(live.session_id, stage_id, stage.name, stage.index, stage.total)
            tracker.seed((im.image for im in stage.images), stage.failed)
            tracker.finished = stage.status is not StageStatus.GENERATING
            live.trackers.setdefault(stage_id, tracker)
            tracker = live.trackers[stage_id]
        return tracker

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
            self._post_refused(live, e)

    async def _sync(self, live: _Live) -> None:
        session_id = live.session_id
        async with live.lock:
            thread = await self._thread(live, refresh=True)
            if thread is None:
                return
            try:
                session = await self.bot.sessions.get(session_id)
                stage = await self.bot.sessions.current_stage(session_id)
            except SessionNotFound:
                return
            tracker = await self._tracker(live, stage.id)
            if stage.status is StageStatus.GENERATING:
                await self._ensure_progress(live, thread, stage.id)
                self._push_progress(live, tracker)
            elif stage.status is not StageStatus.CANCELLED:
                tracker.finished = True
                await self._finish_stage(live, thread, stage.id)
            if session.state is SessionState.ENDED:
                await self._post_ended(live, thread, "")

    # ------------------------------------------------------------------ refused posts

    def _post_refused(self, live: _Live, error: BaseException) -> None:
        """A post failed: shrink uploads after a 413, and let the session's retry task sync it again later."""
        log.warning("session=%s could not post %s: %s", live.session_id, live.posting or "a message", _why(error))
        if _too_large(error):
            live.upload_scale /= 2
        if live.retry is None or live.retry.done():
            live.retry = asyncio.create_task(self._retry(live, error), name=f"relay-retry:{live.session_id}")

    async def _retry(self, live: _Live, error: BaseException) -> None:
        ds = self.bot.orch.settings.discord
        wait = ds.post_retry_s
        for attempt in range(1, ds.post_retries + 1):
            await asyncio.sleep(min(wait, MAX_RETRY_WAIT_S))
            wait *= 2
            try:
                await self._sync(live)
            except POST_ERRORS as e:
                error = e
                log.warning("session=%s retry %d of %s failed: %s", live.session_id, attempt, live.posting, _why(e))
                if _too_large(e):
                    live.upload_scale /= 2
                continue
            except Exception:
                log.exception("session=%s retrying its posts failed", live.session_id)
                return
            log.info("session=%s posted on retry %d", live.session_id, attempt)
            return
        await self._note_failure(live, error)

    async def _note_failure(self, live: _Live, error: BaseException) -> None:
        """Tell the thread, in plain text and once per thing, what could not be posted and why."""
        what = live.posting or "a message"
        ref_key = f"{POST_FAILED}.{what}"
        db = self.bot.orch.db
        thread = live.thread
        if thread is None or await db.get_ref(live.session_id, ref_key) is not None:
            return
        try:
            msg = await thread.send(
                content=render.post_failed_text(what, _why(error)),
                nonce=message_nonce(live.session_id, ref_key),
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except POST_ERRORS as e:
            log.error("session=%s could not post %s, nor say so: %s", live.session_id, what, _why(e))
            return
        await db.set_ref(live.session_id, ref_key, str(msg.id))

    # ------------------------------------------------------------------ progress

    async def _ensure_progress(self, live: _Live, thread: discord.Thread, stage_id: str) -> None:
        key = f"progress:{stage_id}"
        if self.editor.tracks(key):
            return
        tracker = await self._tracker(live, stage_id)
        db = self.bot.orch.db
        ref = await db.get_ref(live.session_id, progress_ref(stage_id))
        live.posting = f"the progress message of {tracker.name}"
        on_replaced = self._on_replaced(live.session_id, progress_ref(stage_id))
        if ref is not None:
            self.editor.track(key, thread, int(ref), fresh=False, on_replaced=on_replaced)
            return
        state = self._progress_state(tracker)
        msg = await thread.send(**state.kwargs(), nonce=message_nonce(live.session_id, progress_ref(stage_id)))
        await db.set_ref(live.session_id, progress_ref(stage_id), str(msg.id))
        self.editor.track(key, thread, msg.id, shown=state, on_replaced=on_replaced)

    def _push_progress(self, live: _Live, tracker: StageProgress, *, final: bool = False) -> None:
        if live.thread is None:
            return
        self.editor.update(f"progress:{tracker.stage_id}", self._progress_state(tracker), final=final)

    def _progress_state(self, tracker: StageProgress) -> MessageState:
        # The preview goes once the stage is done: its gallery follows.
        preview = tracker.preview if self.bot.orch.settings.discord.live_previews and not tracker.finished else None
        image = Attachment(f"preview.{preview[0]}", preview[1]) if preview is not None else None
        return MessageState(content=render.progress_content(tracker.snapshot()), owns_attachments=True, image=image)

    def _on_replaced(self, session_id: str, ref_key: str) -> OnReplaced:
        async def replaced(_key: str, message: discord.Message) -> None:
            await self.bot.orch.db.set_ref(session_id, ref_key, str(message.id))

        return replaced

    # ------------------------------------------------------------------ results

    async def _finish_stage(self, live: _Live, thread: discord.Thread, stage_id: str) -> None:
        session = await self.bot.sessions.get(live.session_id)
        stage = await self.bot.sessions.stage(stage_id)
        if stage.status is StageStatus.CANCELLED:
            self.editor.forget(f"progress:{stage_id}")
            return
        db = self.bot.orch.db
        posted = await db.refs(live.session_id, f"discord.gallery.{stage_id}.") or await db.refs(
            live.session_id, f"discord.final.{stage_id}."
        )
        tracker = await self._tracker(live, stage_id)
        tracker.finished = True
        if not posted or self.editor.tracks(f"progress:{stage_id}"):
            await self._ensure_progress(live, thread, stage_id)
            self._push_progress(live, tracker, final=True)
        if _is_final(session, stage, self.bot.orch.settings.funnel.stages[-1].name):
            await self._post_final(live, thread, session, stage)
        else:
            await self._post_gallery(live, thread, session, stage)

    def _upload_limit(self, thread: discord.Thread) -> int:
        guild = thread.guild
        return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT

    async def _gallery_file(self, number: int, path: str, per_file: int) -> discord.File:
        data = await self.bot.orch.store.jpeg(
            Path(path), max_side=GALLERY_SIDE, quality=GALLERY_QUALITY, max_bytes=per_file
        )
        return discord.File(io.BytesIO(data), filename=render.image_filename(number))

    def _gallery_state(self, session: Session, stage: StageView, page: render.GalleryPage) -> MessageState:
        mode = mode_for(session)
        content = render.gallery_content(stage, page, session=session)
        return MessageState(content=content, view=gallery_view(session.id, stage, page, mode))

    async def _post_gallery(self, live: _Live, thread: discord.Thread, session: Session, stage: StageView) -> None:
        db = self.bot.orch.db
        pages = render.gallery_pages(stage) or [render.GalleryPage(page=0, pages=1, images=())]
        per_file = int(self._upload_limit(thread) * live.upload_scale) // MAX_ATTACHMENTS
        for page in pages:
            ref_key = gallery_ref(stage.id, page.page)
            key = f"gallery:{stage.id}:{page.page}"
            ref = await db.get_ref(live.session_id, ref_key)
            if ref is not None:
                self._track_gallery(live, thread, key, ref_key, int(ref))
                continue
            live.posting = f"the gallery of {stage.name}" + (f" (part {page.page + 1})" if len(pages) > 1 else "")
            state = self._gallery_state(session, stage, page)
            if page.images:
                files = [
                    await self._gallery_file(im.number, im.image.path or im.image.thumbnail, per_file)
                    for im in page.images
                ]
            else:
                files = []
                state = MessageState(content=render.no_images_text(stage), view=state.view)
            sent_at = discord.utils.utcnow()
            msg = await thread.send(**state.kwargs(), files=files, nonce=message_nonce(live.session_id, ref_key))
            await db.set_ref(live.session_id, ref_key, str(msg.id))
            # An older message back for our nonce is what a process that died mid-post sent: show it today's votes.
            earlier = msg.created_at < sent_at - datetime.timedelta(seconds=1)
            self._track_gallery(live, thread, key, ref_key, msg.id, shown=None if earlier else state)
            if earlier:
                self.editor.update(key, state)
        log.info("session=%s stage=%s gallery posted (%d images)", live.session_id, stage.id, len(stage.images))

    def _track_gallery(
        self,
        live: _Live,
        thread: discord.Thread,
        key: str,
        ref_key: str,
        message_id: int,
        shown: MessageState | None = None,
    ) -> None:
        if self.editor.tracks(key):
            return

        async def repost(state: MessageState) -> discord.Message:
            # Too old to edit: the images stay above; their buttons continue in a new message.
            note = (state.content or "") + "\n(the buttons for the images above continue here)"
            return await thread.send(**MessageState(content=note, view=state.view).kwargs())

        self.editor.track(
            key,
            thread,
            message_id,
            shown=shown,
            fresh=shown is not None,
            repost=repost,
            on_replaced=self._on_replaced(live.session_id, ref_key),
        )

    async def _refresh_gallery(self, live: _Live, thread: discord.Thread, stage_id: str, image_id: str) -> None:
        stage = await self.bot.sessions.stage(stage_id)
        image = next((im for im in stage.images if im.image.id == image_id), None)
        if image is None:
            return
        page_no = render.page_of(image.number)
        pages = render.gallery_pages(stage)
        if page_no >= len(pages):
            return
        ref_key = gallery_ref(stage_id, page_no)
        key = f"gallery:{stage_id}:{page_no}"
        if not self.editor.tracks(key):
            ref = await self.bot.orch.db.get_ref(live.session_id, ref_key)
            if ref is None:
                return
            self._track_gallery(live, thread, key, ref_key, int(ref))
        session = await self.bot.sessions.get(live.session_id)
        self.editor.update(key, self._gallery_state(session, stage, pages[page_no]))

    async def _post_final(self, live: _Live, thread: discord.Thread, session: Session, stage: StageView) -> None:
        db = self.bot.orch.db
        limit = int(self._upload_limit(thread) * live.upload_scale)
        upscaled = stage.name.startswith("upscale")
        # With the automatic final upscale, a 4x of this image is already on its way: no button for a second one.
        no_upscale = upscaled or self.bot.orch.settings.funnel.final_upscale
        for im in sorted(stage.images, key=lambda i: i.number):
            ref_key = final_ref(stage.id, im.number)
            if await db.get_ref(live.session_id, ref_key) is not None:
                continue
            live.posting = f"image #{im.number} of {stage.name}"
            file = await full_file(self.bot.orch.store, im.number, im.image.path or im.image.thumbnail, limit)
            msg = await thread.send(
                content=render.final_content(stage, im),
                file=file,
                view=final_view(session.id, im.image.id, upscaled=no_upscale),
                nonce=message_nonce(live.session_id, ref_key),
            )
            await db.set_ref(live.session_id, ref_key, str(msg.id))
        if not stage.images:
            ref_key = final_ref(stage.id, 0)
            if await db.get_ref(live.session_id, ref_key) is None:
                msg = await thread.send(
                    content=render.no_images_text(stage), nonce=message_nonce(live.session_id, ref_key)
                )
                await db.set_ref(live.session_id, ref_key, str(msg.id))
        log.info("session=%s stage=%s final posted", live.session_id, stage.id)

    async def _post_ended(self, live: _Live, thread: discord.Thread, reason: str) -> None:
        db = self.bot.orch.db
        if await db.get_ref(live.session_id, ENDED) is not None:
            return
        msg = await thread.send(content=render.ended_text(reason), nonce=message_nonce(live.session_id, ENDED))
        await db.set_ref(live.session_id, ENDED, str(msg.id))


async def full_file(store: ImageStore, number: int, path: str, limit: int) -> discord.File:
    """The full-size PNG as an attachment, or a high-quality JPEG of the same pixels when the PNG is over `limit`."""
    data = await store.read(Path(path))
    name = render.image_filename(number, "png")
    if len(data) > limit:
        data = await store.jpeg(Path(path), max_side=16384, quality=92, max_bytes=limit)
        name = render.image_filename(number, "jpg")
    return discord.File(io.BytesIO(data), filename=name)


def _too_large(error: BaseException) -> bool:
    if not isinstance(error, discord.HTTPException):
        return False
    return error.status == HTTP_TOO_LARGE or error.code == ERROR_TOO_LARGE


def _why(error: BaseException) -> str:
    """A short reason for a refused post, in words a member understands (no addresses, no tracebacks)."""
    if _too_large(error):
        return "the files were larger than this server's upload limit"
    if isinstance(error, discord.Forbidden):
        return "the bot is missing a permission in this channel (Attach Files or Send Messages in Threads)"
    if isinstance(error, discord.HTTPException):
        if error.status >= 500:
            return f"Discord had a server error ({error.status})"
        return f"Discord refused it ({error.status}, code {error.code})"
    if isinstance(error, TimeoutError):
        return "Discord did not answer in time"
    return "the connection to Discord failed"


def _is_final(session: Session, stage: StageView, last_recipe: str) -> bool:
    """A final render or an upscale: posted full size with final actions instead of a voting gallery."""
    if stage.name.startswith("upscale"):
        return True
    if session.final_image_id is not None and any(im.image.id == session.final_image_id for im in stage.images):
        return True
    if session.flow is Flow.CONCEPT:
        return stage.name == "final"
    return session.flow is Flow.DRAFT_GRID and stage.name == last_recipe
