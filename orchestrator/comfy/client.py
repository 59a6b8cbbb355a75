"""
One ComfyUI server: its HTTP calls (http.py) and one WebSocket that streams every prompt's events.

Events are routed by prompt_id to PromptWatch iterators. Events that arrive before anyone watches a prompt are
buffered (a cached prompt can finish before POST /prompt has even answered). After the socket was down, every
watched prompt that is not finished is confirmed from /history, because ComfyUI does not resend lost messages.

Nothing a node sends can end the listener or grow memory without bound: a malformed message is dropped with a
(rate-limited) warning; buffered events are capped per prompt and in total, and previews nobody watches are
dropped (the buffers: watch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from orchestrator.backoff import Backoff
from orchestrator.comfy.http import DEFAULT_MAX_TRANSFER_BYTES, DEFAULT_TRANSFER_TIMEOUT_S, ComfyHttp
from orchestrator.comfy.parsing import (
    parse_ws_binary,
    parse_ws_text,
)
from orchestrator.comfy.protocol import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    HistoryEntry,
    PreviewFrame,
    ProgressMsg,
    PromptEvent,
    StatusMsg,
    WsMessage,
)
from orchestrator.comfy.watch import (
    MAX_PENDING_EVENTS,
    MAX_PENDING_TOTAL,
    MAX_UNWATCHED,
    TERMINAL,
    BufferStats,
    Pending,
    PromptWatch,
    trim_events,
)
from orchestrator.errors import ComfyError
from orchestrator.supervisor import Supervisor

log = logging.getLogger(__name__)

#: previews of large images are a few hundred KB; ComfyUI's own limit is generous too
WS_MAX_SIZE = 64 * 1024 * 1024
#: at most one warning about dropped WebSocket messages per node this often; the rest are counted
DROP_WARNING_INTERVAL_S = 10.0


class ComfyClient(ComfyHttp):
    """A connection to one ComfyUI server: its HTTP calls (ComfyHttp) and one WebSocket."""

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        http_timeout: float = 30.0,
        ws_backoff: tuple[float, float] = (0.2, 10.0),
        name: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
        max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
        transfer_timeout: float = DEFAULT_TRANSFER_TIMEOUT_S,
    ) -> None:
        super().__init__(
            base_url,
            client_id=client_id,
            http_timeout=http_timeout,
            name=name,
            transport=transport,
            max_transfer_bytes=max_transfer_bytes,
            transfer_timeout=transfer_timeout,
        )
        #: WebSocket messages dropped because they were malformed
        self.dropped_messages = 0
        #: events dropped by the buffer caps (previews nobody watches, progress past a cap)
        self.dropped_events = 0
        #: at most one warning about dropped messages this often (a flood of garbage must not flood the log)
        self.drop_warning_interval_s = DROP_WARNING_INTERVAL_S
        self._drops_unlogged = 0
        self._next_drop_warning = 0.0
        self._backoff = Backoff(*ws_backoff)
        self._listener: asyncio.Task[None] | None = None
        self._supervisor: Supervisor | None = None
        self._reconcilers: set[asyncio.Task[None]] = set()
        self._connected_event = asyncio.Event()
        self._watches: dict[str, PromptWatch] = {}
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._pending_total = 0
        self._finished: OrderedDict[str, None] = OrderedDict()
        #: prompts whose follower gave up before their end: what the node still says about them has no reader
        self._abandoned: OrderedDict[str, None] = OrderedDict()
        #: the prompt this client's server is executing now (previews and old progress messages belong to it)
        self._current: str | None = None
        self._ws: ClientConnection | None = None
        self._closing = False

    # --- life cycle

    async def start(self, supervisor: Supervisor | None = None) -> None:
        """Start the WebSocket listener (it reconnects with backoff until close()), under `supervisor` if given."""
        if self._listener is None and self._supervisor is None:
            self._closing = False
            if supervisor is not None:
                self._supervisor = supervisor
                supervisor.spawn(self.listener_name, self._listen)
            else:
                self._listener = asyncio.create_task(self._listen(), name=self.listener_name)

    @property
    def listener_name(self) -> str:
        """The name of this client's WebSocket listener task (supervised tasks are counted by name)."""
        return f"comfy-ws-{self.name}"

    async def close(self) -> None:
        """Stop the listener, end every watch and close the HTTP client."""
        self._closing = True
        if self._supervisor is not None:
            await self._supervisor.cancel(self.listener_name)
            self._supervisor = None
        tasks = [t for t in (self._listener, *self._reconcilers) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._listener = None
        for w in list(self._watches.values()):
            w.close()
        await self._http.aclose()

    async def wait_connected(self, timeout: float) -> bool:
        """True once the WebSocket is up (False after `timeout` seconds)."""
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def ws_url(self) -> str:
        """The WebSocket address with this client's id."""
        scheme, _, rest = self.base_url.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws?clientId={self.client_id}"

    async def _listen(self) -> None:
        ever_connected = False
        while not self._closing:
            try:
                async with connect(
                    self.ws_url, max_size=WS_MAX_SIZE, open_timeout=self.http_timeout, ping_interval=20
                ) as ws:
                    self._ws = ws
                    self.connected = True
                    self._connected_event.set()
                    self._backoff.reset()
                    log.debug("comfy node=%s WebSocket up", self.name)
                    if ever_connected:
                        self._spawn_reconcile()
                    ever_connected = True
                    async for raw in ws:
                        self._dispatch_raw(raw)
            except (OSError, WebSocketException, TimeoutError) as e:
                log.debug("comfy node=%s WebSocket: %s", self.name, e)
            except Exception as e:
                # Only close() ends this loop: whatever went wrong with this connection, make a new one.
                log.warning("comfy node=%s WebSocket failed (%s: %s); reconnecting", self.name, type(e).__name__, e)
            finally:
                was_up = self.connected
                self.connected = False
                self._ws = None
                self._connected_event.clear()
                if was_up:
                    log.info("comfy node=%s WebSocket dropped", self.name)
                    for w in self._watches.values():
                        w.disconnects += 1
            if not self._closing:
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), self._backoff.delay())

    # --- routing of WebSocket messages

    def _dispatch_raw(self, raw: str | bytes) -> None:
        """Parse and route one frame; a frame that cannot be handled is dropped, whatever went wrong."""
        try:
            msg: WsMessage | None = parse_ws_text(raw) if isinstance(raw, str) else parse_ws_binary(raw)
            if msg is not None:
                self.dispatch(msg)
        except Exception as e:
            self._dropped_message(e)

    def _dropped_message(self, e: Exception) -> None:
        self.dropped_messages += 1
        now = time.monotonic()
        if now < self._next_drop_warning:
            self._drops_unlogged += 1
            return
        more = f" ({self._drops_unlogged} more since the last warning)" if self._drops_unlogged else ""
        self._drops_unlogged = 0
        self._next_drop_warning = now + self.drop_warning_interval_s
        what = str(e) if isinstance(e, ComfyError) else f"{type(e).__name__}: {e}"
        log.warning("comfy node=%s dropped a WebSocket message: %s%s", self.name, what[:300], more)

    def dispatch(self, msg: WsMessage) -> None:
        """Route one message to the watch (or buffer) of its prompt."""
        if isinstance(msg, PreviewFrame):
            if self._current is not None:
                self._route(self._current, msg)
            return
        if isinstance(msg, ProgressMsg):
            pid = msg.prompt_id or self._current
            if pid is not None:
                self._route(pid, msg)
            return
        if isinstance(msg, Executing):
            pid = msg.prompt_id or self._current
            if pid is None:
                return
            if msg.node is None:
                if self._current == pid:
                    self._current = None
                # Servers older than execution_success end a prompt with `executing` node None only.
                self._route(pid, ExecutionSuccess(prompt_id=pid))
                return
            self._current = pid
            self._route(pid, Executing(prompt_id=pid, node=msg.node))
            return
        if isinstance(msg, ExecutionStart):
            self._current = msg.prompt_id
            self._route(msg.prompt_id, msg)
            return
        if isinstance(msg, (ExecutionCached, Executed)):
            self._route(msg.prompt_id, msg)
            return
        if isinstance(msg, TERMINAL):
            if self._current == msg.prompt_id:
                self._current = None
            self._route(msg.prompt_id, msg)
            return
        if isinstance(msg, StatusMsg):
            log.debug("comfy node=%s queue_remaining=%d", self.name, msg.queue_remaining)

    def _route(self, prompt_id: str, ev: PromptEvent) -> None:
        if prompt_id in self._finished:
            return  # late duplicates, e.g. `executing` None after execution_success
        if prompt_id in self._abandoned:
            return  # e.g. the interrupt of a backup copy that lost its race: buffered, it would wait for no one
        watch = self._watches.get(prompt_id)
        if watch is not None:
            before = watch.dropped
            watch._put(ev)
            self.dropped_events += watch.dropped - before
        elif isinstance(ev, PreviewFrame):
            self.dropped_events += 1
            return
        else:
            self._buffer(prompt_id, ev)
        if isinstance(ev, TERMINAL):
            self._mark_finished(prompt_id)

    def _buffer(self, prompt_id: str, ev: PromptEvent) -> None:
        """Keep an event of an unwatched prompt for its watcher, within the per-prompt and total caps."""
        pending = self._pending.get(prompt_id)
        if pending is None:
            pending = self._pending[prompt_id] = Pending()
        if pending.terminal:
            return
        if isinstance(ev, TERMINAL):
            pending.terminal = True
        pending.events.append(ev)
        self._pending_total += 1
        dropped = trim_events(pending.events, MAX_PENDING_EVENTS)
        self._pending_total -= dropped
        self.dropped_events += dropped
        # The oldest prompts' buffers go first; a watcher that comes later confirms its prompt from /history.
        while self._pending and (len(self._pending) > MAX_UNWATCHED or self._pending_total > MAX_PENDING_TOTAL):
            _, old = self._pending.popitem(last=False)
            self._pending_total -= len(old.events)
            self.dropped_events += len(old.events)

    def buffer_stats(self) -> BufferStats:
        """What this client holds for prompts now."""
        watches = list(self._watches.values())
        return BufferStats(
            pending_prompts=len(self._pending),
            pending_events=sum(len(p.events) for p in self._pending.values()),
            watched_prompts=len(watches),
            watched_events=sum(w.queued for w in watches),
            preview_bytes=sum(w.preview_bytes for w in watches),
        )

    def _mark_finished(self, prompt_id: str) -> None:
        pending = self._pending.get(prompt_id)
        if pending is not None:
            pending.terminal = True
        self._finished[prompt_id] = None
        while len(self._finished) > 4 * MAX_UNWATCHED:
            old, _ = self._finished.popitem(last=False)
            if old not in self._watches:
                self._forget_pending(old)

    def _forget_pending(self, prompt_id: str) -> Pending | None:
        pending = self._pending.pop(prompt_id, None)
        if pending is not None:
            self._pending_total -= len(pending.events)
        return pending

    def watch(self, prompt_id: str) -> PromptWatch:
        """Events of one prompt, including any that arrived before this call."""
        old = self._watches.get(prompt_id)
        if old is not None:
            old.close()
        w = PromptWatch(prompt_id, self._unwatch)
        self._abandoned.pop(prompt_id, None)
        pending = self._forget_pending(prompt_id)
        if pending is not None:
            for ev in pending.events:
                w._put(ev)
        self._watches[prompt_id] = w
        return w

    def _unwatch(self, w: PromptWatch) -> None:
        if self._watches.get(w.prompt_id) is w:
            del self._watches[w.prompt_id]
            if not w.terminal and w.prompt_id not in self._finished:
                self._abandoned[w.prompt_id] = None
                while len(self._abandoned) > 4 * MAX_UNWATCHED:
                    self._abandoned.popitem(last=False)

    # --- reconciliation after a reconnect

    def _spawn_reconcile(self) -> None:
        task = asyncio.create_task(self._reconcile(), name=f"comfy-reconcile-{self.name}")
        self._reconcilers.add(task)
        task.add_done_callback(self._reconciled)

    def _reconciled(self, task: asyncio.Task[None]) -> None:
        self._reconcilers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("comfy node=%s: history check after reconnect failed: %s", self.name, task.exception())

    async def _reconcile(self) -> None:
        """For each open watch not yet finished, ask /history whether it finished while the socket was down."""
        for pid, w in list(self._watches.items()):
            if w.terminal:
                continue
            try:
                entry = await self.history(pid)
            except ComfyError as e:
                log.debug("comfy node=%s prompt=%s: history unavailable: %s", self.name, pid, e)
                continue
            if entry is None or (not entry.completed and entry.status == "success"):
                continue
            if self._watches.get(pid) is not w or w.terminal:
                continue
            log.info("comfy node=%s prompt=%s: finished while the socket was down (%s)", self.name, pid, entry.status)
            self.synthesize(entry)

    def synthesize(self, entry: HistoryEntry) -> None:
        """Feed a finished history entry to the prompt's watch as WS events (outputs, then the terminal event)."""
        pid = entry.prompt_id
        if self._current == pid:
            self._current = None
        if entry.status == "success":
            if entry.images:
                self._route(pid, Executed(prompt_id=pid, node="", images=entry.images))
            self._route(pid, ExecutionSuccess(prompt_id=pid))
        elif entry.error_message == "interrupted":
            self._route(pid, ExecutionInterrupted(prompt_id=pid, node_id=None, node_type=None))
        else:
            self._route(
                pid,
                ExecutionError(
                    prompt_id=pid,
                    node_id=None,
                    node_type=None,
                    exception_message=entry.error_message or "the prompt failed",
                    exception_type="",
                ),
            )

    # --- HTTP
