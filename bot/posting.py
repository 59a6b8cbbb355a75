"""
Posting to a session's thread: progress messages, galleries, final images, and trying again when Discord refuses.

Everything posted is recorded with message refs ("discord.progress.<stage>", "discord.gallery.<stage>.<page>",
"discord.final.<stage>.<n>") through the facade, so a post is made exactly once. Each post carries a nonce
derived from its ref, so a crash between posting and recording the ref does not make a second copy when the post
is repeated (Discord returns the first one for a few minutes).

A post Discord refuses (a 5xx, 413 "too large", a timeout) is not lost: the session is handed to a retry task
that syncs it again with a growing wait (uploads shrink after a 413), and after the last try the thread gets a
plain note saying what could not be posted and why. What to post when is decided in relay.py.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot import render
from bot.limits import DEFAULT_UPLOAD_LIMIT, ERROR_TOO_LARGE, HTTP_TOO_LARGE, MAX_ATTACHMENTS, message_nonce
from bot.progress import Attachment, CoalescingEditor, MessageState, OnReplaced
from bot.tracker import StageProgress
from bot.views.common import THREAD, final_ref
from bot.views.final import final_view
from bot.views.gallery import gallery_view, mode_for
from orchestrator.sessions.models import Session, StageKind, StageStatus, StageView

if TYPE_CHECKING:
    from bot.client import ImGenBot
    from orchestrator.service import Orchestrator

log = logging.getLogger(__name__)

ENDED = "discord.ended"
#: gallery thumbnails: a long side that reads well in Discord's grid, and a JPEG quality that keeps 10 well under limits
GALLERY_SIDE = 768
GALLERY_QUALITY = 85
#: what a refused or failed post raises: Discord's answer, the connection, or discord.py's own timeout
POST_ERRORS = (discord.HTTPException, aiohttp.ClientError, TimeoutError, OSError)
#: the longest wait between two retries of a refused post
MAX_RETRY_WAIT_S = 60.0
POST_FAILED = "discord.postfail"


def progress_ref(stage_id: str) -> str:
    """The message ref of a stage's progress message."""
    return f"discord.progress.{stage_id}"


def gallery_ref(stage_id: str, page: int) -> str:
    """The message ref of one page of a stage's gallery."""
    return f"discord.gallery.{stage_id}.{page}"


@dataclass(slots=True, weakref_slot=True)
class LiveSession:
    """What the bot knows about one session's thread in this process."""

    session_id: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    thread: discord.Thread | None = None
    #: the facade said there is no thread (yet): job events then only fold into trackers
    unbound: bool = False
    trackers: dict[str, StageProgress] = field(default_factory=dict)
    #: uploads are scaled by this after Discord refused one as too large (halved on each 413)
    upload_scale: float = 1.0
    #: what is being posted right now, named for the note when it cannot be posted
    posting: str = ""
    #: the task trying again after a refused post (one per session; it syncs everything missing)
    retry: asyncio.Task[None] | None = None
    #: what the thread was told could not be posted: a later event may try it once more, but no new retry round
    given_up: set[str] = field(default_factory=set)


#: posts whatever a session's thread misses (the relay's sync), for a retry
Resync = Callable[[LiveSession], Awaitable[None]]


class Poster:
    """Sends and edits the messages of session threads, and retries what Discord refused."""

    def __init__(self, bot: ImGenBot, editor: CoalescingEditor) -> None:
        self.bot = bot
        self.editor = editor

    async def tracker(self, live: LiveSession, stage_id: str) -> StageProgress:
        """The stage's progress tracker, rebuilt from the stage when this process has none."""
        tracker = live.trackers.get(stage_id)
        if tracker is None:
            stage = await self.bot.orch.stage(stage_id)
            tracker = StageProgress(live.session_id, stage_id, stage.name, stage.index, stage.total)
            tracker.seed((im.image for im in stage.images), stage.failed)
            tracker.finished = stage.status is not StageStatus.GENERATING
            live.trackers.setdefault(stage_id, tracker)
            tracker = live.trackers[stage_id]
        return tracker

    async def thread(self, live: LiveSession, *, refresh: bool = False) -> discord.Thread | None:
        """The session's thread, looked up once (None while it has none or it is unreachable)."""
        if live.thread is not None or (live.unbound and not refresh):
            return live.thread
        ref = await self.bot.orch.message_ref(live.session_id, THREAD)
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

    def refused(self, live: LiveSession, error: BaseException, resync: Resync) -> None:
        """A post failed: shrink uploads after a 413, and let the session's retry task sync it again later."""
        log.warning("session=%s could not post %s: %s", live.session_id, live.posting or "a message", why(error))
        if too_large(error):
            live.upload_scale /= 2
        if live.posting in live.given_up:
            return  # its retries ran out and the thread was told; retrying again would only repeat that
        if live.retry is None or live.retry.done():
            live.retry = asyncio.create_task(self._retry(live, error, resync), name=f"relay-retry:{live.session_id}")

    async def _retry(self, live: LiveSession, error: BaseException, resync: Resync) -> None:
        ds = self.bot.orch.settings.discord
        wait = ds.post_retry_s
        for attempt in range(1, ds.post_retries + 1):
            await asyncio.sleep(min(wait, MAX_RETRY_WAIT_S))
            wait *= 2
            try:
                await resync(live)
            except POST_ERRORS as e:
                error = e
                log.warning("session=%s retry %d of %s failed: %s", live.session_id, attempt, live.posting, why(e))
                if too_large(e):
                    live.upload_scale /= 2
                continue
            except Exception:
                log.exception("session=%s retrying its posts failed", live.session_id)
                return
            log.info("session=%s posted on retry %d", live.session_id, attempt)
            return
        await self._note_failure(live, error)

    async def _note_failure(self, live: LiveSession, error: BaseException) -> None:
        """Tell the thread, in plain text and once per thing, what could not be posted and why."""
        what = live.posting or "a message"
        live.given_up.add(live.posting)
        ref_key = f"{POST_FAILED}.{what}"
        orch = self.bot.orch
        thread = live.thread
        if thread is None or await orch.message_ref(live.session_id, ref_key) is not None:
            return
        try:
            msg = await thread.send(
                content=render.post_failed_text(what, why(error)),
                nonce=message_nonce(live.session_id, ref_key),
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except POST_ERRORS as e:
            log.error("session=%s could not post %s, nor say so: %s", live.session_id, what, why(e))
            return
        await orch.set_message_ref(live.session_id, ref_key, str(msg.id))

    async def ensure_progress(self, live: LiveSession, thread: discord.Thread, stage_id: str) -> None:
        """Post the stage's progress message unless it exists, and keep editing it."""
        key = f"progress:{stage_id}"
        if self.editor.tracks(key):
            return
        tracker = await self.tracker(live, stage_id)
        orch = self.bot.orch
        ref = await orch.message_ref(live.session_id, progress_ref(stage_id))
        live.posting = f"the progress message of {tracker.name}"
        on_replaced = self._on_replaced(live.session_id, progress_ref(stage_id))
        if ref is not None:
            self.editor.track(key, thread, int(ref), fresh=False, on_replaced=on_replaced)
            return
        state = self._progress_state(live, tracker)
        msg = await thread.send(**state.kwargs(), nonce=message_nonce(live.session_id, progress_ref(stage_id)))
        await orch.set_message_ref(live.session_id, progress_ref(stage_id), str(msg.id))
        self.editor.track(key, thread, msg.id, shown=state, on_replaced=on_replaced)

    def push_progress(self, live: LiveSession, tracker: StageProgress, *, final: bool = False) -> None:
        """Show the tracker's state in the progress message (coalesced edits)."""
        if live.thread is None:
            return
        self.editor.update(f"progress:{tracker.stage_id}", self._progress_state(live, tracker), final=final)

    def _progress_state(self, live: LiveSession, tracker: StageProgress) -> MessageState:
        # The preview goes once the stage is done: its gallery follows.
        # After Discord refused an upload of this session as too large, the optional preview is left out rather
        # than risk the progress message itself.
        previews = self.bot.orch.settings.discord.live_previews and live.upload_scale == 1.0
        preview = tracker.preview if previews and not tracker.finished else None
        image = Attachment(f"preview.{preview[0]}", preview[1]) if preview is not None else None
        return MessageState(content=render.progress_content(tracker.snapshot()), owns_attachments=True, image=image)

    def _on_replaced(self, session_id: str, ref_key: str) -> OnReplaced:
        async def replaced(_key: str, message: discord.Message) -> None:
            await self.bot.orch.set_message_ref(session_id, ref_key, str(message.id))

        return replaced

    async def finish_stage(self, live: LiveSession, thread: discord.Thread, stage_id: str) -> None:
        """A delivered stage: the last progress, then its gallery, or its images full size when it is final."""
        session = await self.bot.orch.session(live.session_id)
        stage = await self.bot.orch.stage(stage_id)
        if stage.status is StageStatus.CANCELLED:
            self.editor.forget(f"progress:{stage_id}")
            return
        orch = self.bot.orch
        posted = await orch.message_refs(live.session_id, f"discord.gallery.{stage_id}.") or await orch.message_refs(
            live.session_id, f"discord.final.{stage_id}."
        )
        tracker = await self.tracker(live, stage_id)
        tracker.finished = True
        if not posted or self.editor.tracks(f"progress:{stage_id}"):
            await self.ensure_progress(live, thread, stage_id)
            self.push_progress(live, tracker, final=True)
        if stage.is_final:
            await self._post_final(live, thread, session, stage)
        else:
            await self._post_gallery(live, thread, session, stage)

    def _upload_limit(self, thread: discord.Thread) -> int:
        guild = thread.guild
        return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT

    async def _gallery_file(self, number: int, path: str, per_file: int) -> discord.File:
        data = await self.bot.orch.image_jpeg(path, max_side=GALLERY_SIDE, quality=GALLERY_QUALITY, max_bytes=per_file)
        return discord.File(io.BytesIO(data), filename=render.image_filename(number))

    def _gallery_state(self, session: Session, stage: StageView, page: render.GalleryPage) -> MessageState:
        mode = mode_for(session)
        content = render.gallery_content(stage, page, session=session)
        return MessageState(content=content, view=gallery_view(session.id, stage, page, mode))

    async def _post_gallery(
        self, live: LiveSession, thread: discord.Thread, session: Session, stage: StageView
    ) -> None:
        orch = self.bot.orch
        pages = render.gallery_pages(stage) or [render.GalleryPage(page=0, pages=1, images=())]
        per_file = int(self._upload_limit(thread) * live.upload_scale) // MAX_ATTACHMENTS
        for page in pages:
            ref_key = gallery_ref(stage.id, page.page)
            key = f"gallery:{stage.id}:{page.page}"
            ref = await orch.message_ref(live.session_id, ref_key)
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
            await orch.set_message_ref(live.session_id, ref_key, str(msg.id))
            # An older message back for our nonce is what a process that died mid-post sent: show it today's votes.
            earlier = msg.created_at < sent_at - datetime.timedelta(seconds=1)
            self._track_gallery(live, thread, key, ref_key, msg.id, shown=None if earlier else state)
            if earlier:
                self.editor.update(key, state)
        log.info("session=%s stage=%s gallery posted (%d images)", live.session_id, stage.id, len(stage.images))

    def _track_gallery(
        self,
        live: LiveSession,
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

    async def refresh_gallery(self, live: LiveSession, thread: discord.Thread, stage_id: str, image_id: str) -> None:
        """Show an image's new tally on its gallery page."""
        stage = await self.bot.orch.stage(stage_id)
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
            ref = await self.bot.orch.message_ref(live.session_id, ref_key)
            if ref is None:
                return
            self._track_gallery(live, thread, key, ref_key, int(ref))
        session = await self.bot.orch.session(live.session_id)
        self.editor.update(key, self._gallery_state(session, stage, pages[page_no]))

    async def _post_final(self, live: LiveSession, thread: discord.Thread, session: Session, stage: StageView) -> None:
        orch = self.bot.orch
        limit = int(self._upload_limit(thread) * live.upload_scale)
        upscaled = stage.kind is StageKind.UPSCALE
        # With the automatic final upscale, a 4x of this image is already on its way: no button for a second one.
        no_upscale = upscaled or self.bot.orch.settings.funnel.final_upscale
        for im in sorted(stage.images, key=lambda i: i.number):
            ref_key = final_ref(stage.id, im.number)
            if await orch.message_ref(live.session_id, ref_key) is not None:
                continue
            live.posting = f"image #{im.number} of {stage.name}"
            file = await full_file(self.bot.orch, im.number, im.image.path or im.image.thumbnail, limit)
            msg = await thread.send(
                content=render.final_content(stage, im),
                file=file,
                view=final_view(session.id, im.image.id, upscaled=no_upscale),
                nonce=message_nonce(live.session_id, ref_key),
            )
            await orch.set_message_ref(live.session_id, ref_key, str(msg.id))
        if not stage.images:
            ref_key = final_ref(stage.id, 0)
            if await orch.message_ref(live.session_id, ref_key) is None:
                msg = await thread.send(
                    content=render.no_images_text(stage), nonce=message_nonce(live.session_id, ref_key)
                )
                await orch.set_message_ref(live.session_id, ref_key, str(msg.id))
        log.info("session=%s stage=%s final posted", live.session_id, stage.id)

    async def post_ended(self, live: LiveSession, thread: discord.Thread, reason: str) -> None:
        """Say once in the thread that the session ended."""
        orch = self.bot.orch
        if await orch.message_ref(live.session_id, ENDED) is not None:
            return
        msg = await thread.send(content=render.ended_text(reason), nonce=message_nonce(live.session_id, ENDED))
        await orch.set_message_ref(live.session_id, ENDED, str(msg.id))


async def full_file(orch: Orchestrator, number: int, path: str, limit: int) -> discord.File:
    """The full-size PNG as an attachment, or a high-quality JPEG of the same pixels when the PNG is over `limit`."""
    image = await orch.full_size_image(path, limit)
    return discord.File(io.BytesIO(image.data), filename=render.image_filename(number, image.ext))


def too_large(error: BaseException) -> bool:
    """Discord refused a post as over the upload limit."""
    if not isinstance(error, discord.HTTPException):
        return False
    return error.status == HTTP_TOO_LARGE or error.code == ERROR_TOO_LARGE


def why(error: BaseException) -> str:
    """A short reason for a refused post, in words a member understands (no addresses, no tracebacks)."""
    if too_large(error):
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
