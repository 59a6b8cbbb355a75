"""
One ComfyUI server: HTTP calls through httpx and one WebSocket that streams every prompt's events.

Events are routed by prompt_id to PromptWatch iterators. Events that arrive before anyone watches a prompt are
buffered (a cached prompt can finish before POST /prompt has even answered). After the socket was down, every
watched prompt that is not finished is confirmed from /history, because ComfyUI does not resend lost messages.

Nothing a node sends can end the listener or grow memory without bound: a malformed message is dropped with a
(rate-limited) warning; buffered events are capped per prompt and in total, and previews nobody watches are
dropped; every HTTP body is streamed under a byte cap and every call under an overall deadline.

Errors: a node that cannot be reached or read at the transport level (refused, reset, timed out, a 5xx, a body
that cannot be decoded) raises NodeUnavailable; an answer that arrives but is wrong raises ComfyError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from orchestrator.backoff import Backoff
from orchestrator.comfy.protocol import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    HistoryEntry,
    ImageRef,
    ObjectInfo,
    PreviewFrame,
    ProgressMsg,
    PromptAccepted,
    PromptEvent,
    QueueState,
    StatusMsg,
    SystemStats,
    WsMessage,
    build_free_request,
    build_interrupt_request,
    build_prompt_request,
    build_queue_delete,
    image_ref_params,
    loads_json,
    looks_like_image,
    parse_history,
    parse_object_info,
    parse_prompt_response,
    parse_queue,
    parse_system_stats,
    parse_upload_response,
    parse_view_headers,
    parse_ws_binary,
    parse_ws_text,
)
from orchestrator.errors import ComfyError, NodeUnavailable
from orchestrator.models import NodeModels
from orchestrator.supervisor import Supervisor

log = logging.getLogger(__name__)

#: previews of large images are a few hundred KB; ComfyUI's own limit is generous too
WS_MAX_SIZE = 64 * 1024 * 1024
#: prompts whose events are buffered before anyone watches them; older buffers are dropped first
MAX_UNWATCHED = 512
#: events buffered for one prompt nobody watches; past it the oldest progress goes first (terminal events stay)
MAX_PENDING_EVENTS = 64
#: events buffered for all prompts nobody watches together; past it the oldest prompts' buffers go
MAX_PENDING_TOTAL = 2048
#: events queued for one watched prompt and not yet read; past it the oldest progress goes first
MAX_WATCH_EVENTS = 1024
#: previews queued for one watched prompt: a live view only ever shows the newest
MAX_WATCH_PREVIEWS = 1
#: the default cap on one HTTP body from a node (a 4096² PNG is ~30 MiB at worst)
DEFAULT_MAX_TRANSFER_BYTES = 64 * 1024 * 1024
#: the default deadline of one whole HTTP call, body included (httpx's own timeout is per read)
DEFAULT_TRANSFER_TIMEOUT_S = 300.0
#: at most one warning about dropped WebSocket messages per node this often; the rest are counted
DROP_WARNING_INTERVAL_S = 10.0

_TERMINAL = (ExecutionSuccess, ExecutionError, ExecutionInterrupted)
#: events a reader can lose without losing anything it acts on (a later one says the same, newer)
_MINOR = (ProgressMsg, Executing, PreviewFrame)


def _trim(events: deque[PromptEvent], cap: int) -> int:
    """Drop events until at most `cap` remain: the oldest minor one first, else the oldest non-terminal one."""
    dropped = 0
    while len(events) > cap:
        victim = next((i for i, ev in enumerate(events) if isinstance(ev, _MINOR)), None)
        if victim is None:
            victim = next((i for i, ev in enumerate(events) if not isinstance(ev, _TERMINAL)), None)
        if victim is None:
            break
        del events[victim]
        dropped += 1
    return dropped


@dataclass(frozen=True, slots=True)
class BufferStats:
    """What a client holds in memory for prompts (bounded by the caps above)."""

    pending_prompts: int
    pending_events: int
    watched_prompts: int
    watched_events: int
    #: bytes of preview images held anywhere (pending buffers hold none: unwatched previews are dropped)
    preview_bytes: int


class PromptWatch:
    """
    Async iterator over the events of one prompt; ends after its terminal event.

    Its queue is bounded: only the newest preview is kept, and past MAX_WATCH_EVENTS the oldest progress is
    dropped. Terminal events are never dropped.
    """

    def __init__(self, prompt_id: str, on_close: Callable[[PromptWatch], None]) -> None:
        self.prompt_id = prompt_id
        #: how many times the client's socket dropped while this watch was open
        self.disconnects = 0
        #: events dropped because the reader fell behind (old previews and progress only)
        self.dropped = 0
        self.terminal = False
        self._done = False
        self._closed = False
        self._events: deque[PromptEvent] = deque()
        self._ready = asyncio.Event()
        self._on_close = on_close

    def _put(self, ev: PromptEvent) -> None:
        if self.terminal or self._closed:
            return
        if isinstance(ev, _TERMINAL):
            self.terminal = True
        elif isinstance(ev, PreviewFrame):
            held = [i for i, old in enumerate(self._events) if isinstance(old, PreviewFrame)]
            for i in reversed(held[: max(0, len(held) - MAX_WATCH_PREVIEWS + 1)]):
                del self._events[i]
                self.dropped += 1
        self._events.append(ev)
        self.dropped += _trim(self._events, MAX_WATCH_EVENTS)
        self._ready.set()

    @property
    def queued(self) -> int:
        """Events waiting to be read."""
        return len(self._events)

    @property
    def preview_bytes(self) -> int:
        """Bytes of the preview images waiting to be read."""
        return sum(len(ev.image) for ev in self._events if isinstance(ev, PreviewFrame))

    def __aiter__(self) -> PromptWatch:
        return self

    async def __anext__(self) -> PromptEvent:
        while not self._events:
            if self._done or self._closed:
                self._done = True
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        ev = self._events.popleft()
        if isinstance(ev, _TERMINAL):
            self._done = True
            self._release()
        return ev

    def close(self) -> None:
        """Stop watching; a pending __anext__ ends with StopAsyncIteration once the queued events are read."""
        if not self._closed:
            self._closed = True
            self._ready.set()
            self._release()

    def _release(self) -> None:
        self._on_close(self)


class _Pending:
    """Events of a prompt nobody watches yet (no previews: a live view that is not there cannot show them)."""

    __slots__ = ("events", "terminal")

    def __init__(self) -> None:
        self.events: deque[PromptEvent] = deque()
        self.terminal = False


@dataclass(frozen=True, slots=True)
class _Answer:
    """An HTTP answer whose body was read under the byte cap."""

    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class ComfyClient:
    """A connection to one ComfyUI server (HTTP + one WebSocket)."""

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
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.name = name or self.base_url
        self.http_timeout = http_timeout
        #: the largest HTTP body accepted from the node; a bigger one is abandoned unread
        self.max_transfer_bytes = max_transfer_bytes
        #: the deadline of one whole HTTP call (view() and upload_image() take their own)
        self.transfer_timeout = transfer_timeout
        self.connected = False
        #: body bytes read from the node over HTTP (never more than the cap per call)
        self.bytes_received = 0
        #: WebSocket messages dropped because they were malformed
        self.dropped_messages = 0
        #: events dropped by the buffer caps (previews nobody watches, progress past a cap)
        self.dropped_events = 0
        #: at most one warning about dropped messages this often (a flood of garbage must not flood the log)
        self.drop_warning_interval_s = DROP_WARNING_INTERVAL_S
        self._drops_unlogged = 0
        self._next_drop_warning = 0.0
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=http_timeout, transport=transport)
        self._backoff = Backoff(*ws_backoff)
        self._listener: asyncio.Task[None] | None = None
        self._supervisor: Supervisor | None = None
        self._reconcilers: set[asyncio.Task[None]] = set()
        self._connected_event = asyncio.Event()
        #: set when an HTTP call succeeds while the socket is down: the server is back, reconnect now
        self._kick = asyncio.Event()
        self._watches: dict[str, PromptWatch] = {}
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._pending_total = 0
        self._finished: OrderedDict[str, None] = OrderedDict()
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
        if isinstance(msg, _TERMINAL):
            if self._current == msg.prompt_id:
                self._current = None
            self._route(msg.prompt_id, msg)
            return
        if isinstance(msg, StatusMsg):
            log.debug("comfy node=%s queue_remaining=%d", self.name, msg.queue_remaining)

    def _route(self, prompt_id: str, ev: PromptEvent) -> None:
        if prompt_id in self._finished:
            return  # late duplicates, e.g. `executing` None after execution_success
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
        if isinstance(ev, _TERMINAL):
            self._mark_finished(prompt_id)

    def _buffer(self, prompt_id: str, ev: PromptEvent) -> None:
        """Keep an event of an unwatched prompt for its watcher, within the per-prompt and total caps."""
        pending = self._pending.get(prompt_id)
        if pending is None:
            pending = self._pending[prompt_id] = _Pending()
        if pending.terminal:
            return
        if isinstance(ev, _TERMINAL):
            pending.terminal = True
        pending.events.append(ev)
        self._pending_total += 1
        dropped = _trim(pending.events, MAX_PENDING_EVENTS)
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

    def _forget_pending(self, prompt_id: str) -> _Pending | None:
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
        pending = self._forget_pending(prompt_id)
        if pending is not None:
            for ev in pending.events:
                w._put(ev)
        self._watches[prompt_id] = w
        return w

    def _unwatch(self, w: PromptWatch) -> None:
        if self._watches.get(w.prompt_id) is w:
            del self._watches[w.prompt_id]

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

    def _unreadable(self, e: Exception, method: str, path: str) -> ComfyError:
        """The error for a call that failed below the level of ComfyUI's answers."""
        if isinstance(e, httpx.TimeoutException):
            log.warning("comfy node=%s %s %s timed out (%s)", self.name, method, path, self.base_url)
            return NodeUnavailable(f"{self.name}: {method} {path} timed out")
        if isinstance(e, (httpx.TransportError, httpx.DecodingError)):
            # DecodingError: a body that does not match its Content-Encoding; nothing this node says can be read.
            log.warning("comfy node=%s %s %s failed: %s (%s)", self.name, method, path, e, self.base_url)
            return NodeUnavailable(f"{self.name}: {method} {path}: {type(e).__name__}")
        log.warning("comfy node=%s %s %s failed: %s: %s", self.name, method, path, type(e).__name__, e)
        return ComfyError(f"{self.name}: {method} {path}: {type(e).__name__}")

    async def _request(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> _Answer:
        """One call with its body streamed under the byte cap, all of it within `timeout` (default: the client's)."""
        limit = self.transfer_timeout if timeout is None else timeout
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(limit), self._http.stream(method, path, **kw) as resp:
                if not self.connected:
                    self._kick.set()
                if resp.status_code >= 500:
                    raise NodeUnavailable(f"{self.name}: {method} {path} answered HTTP {resp.status_code}")
                body = await self._read_capped(resp, method, path)
        except TimeoutError:
            log.warning("comfy node=%s %s %s did not finish within %gs", self.name, method, path, limit)
            raise NodeUnavailable(f"{self.name}: {method} {path} did not finish within {limit:g}s") from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:
            raise self._unreadable(e, method, path) from None
        except UnicodeError:
            # an image name from the node that cannot be put in a URL
            raise ComfyError(f"{self.name}: {method} {path}: the request cannot be encoded") from None
        log.debug(
            "comfy node=%s %s %s -> %d (%d bytes) in %.0f ms",
            self.name,
            method,
            path,
            resp.status_code,
            len(body),
            (time.perf_counter() - t0) * 1000,
        )
        return _Answer(resp.status_code, body)

    async def _read_capped(self, resp: httpx.Response, method: str, path: str) -> bytes:
        cap = self.max_transfer_bytes
        head = parse_view_headers(resp.headers)
        if head.length is not None and head.length > cap:
            raise self._too_large(method, path, f"announced {head.length} bytes")
        body = bytearray()
        async for chunk in resp.aiter_bytes():
            self.bytes_received += len(chunk)
            if len(body) + len(chunk) > cap:
                raise self._too_large(method, path, f"sent more than {cap} bytes")
            body += chunk
        return bytes(body)

    def _too_large(self, method: str, path: str, what: str) -> ComfyError:
        mib = self.max_transfer_bytes / (1024 * 1024)
        log.warning("comfy node=%s %s %s %s; abandoned (limit %g MiB)", self.name, method, path, what, mib)
        return ComfyError(
            f"{self.name}: {method} {path} {what}, over the {mib:g} MiB limit; abandoned",
            user_message=f"A GPU node sent a file larger than the {mib:g} MiB limit.",
        )

    def _expect_ok(self, resp: _Answer, what: str) -> None:
        if resp.status != 200:
            raise ComfyError(f"{self.name}: {what} answered HTTP {resp.status}")

    def _json(self, resp: _Answer, what: str) -> Any:
        self._expect_ok(resp, what)
        try:
            return loads_json(resp.body)
        except ComfyError as e:
            raise ComfyError(f"{self.name}: {what} did not answer JSON ({e})") from None

    async def submit(self, graph: dict[str, Any], *, front: bool = False) -> PromptAccepted:
        """Queue a graph (POST /prompt); raises PromptRejected with ComfyUI's errors on 400."""
        resp = await self._request("POST", "/prompt", json=build_prompt_request(graph, self.client_id, front=front))
        try:
            body = loads_json(resp.body)
        except ComfyError:
            body = resp.text
        return parse_prompt_response(resp.status, body)

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished prompt, or None while it has not finished."""
        resp = await self._request("GET", f"/history/{prompt_id}")
        return parse_history(self._json(resp, "GET /history"), prompt_id)

    async def view(self, ref: ImageRef, *, timeout: float | None = None) -> bytes:
        """
        The bytes of an output image, within `timeout` seconds (default: the client's transfer timeout).

        A body over the byte cap is abandoned as soon as that is known (from its Content-Length, else while
        streaming), and a body that is not an image raises ComfyError.
        """
        resp = await self._request("GET", "/view", params=image_ref_params(ref), timeout=timeout)
        if resp.status == 404:
            raise ComfyError(f"{self.name}: image {ref.filename!r} not found on the node")
        self._expect_ok(resp, "GET /view")
        if not looks_like_image(resp.body):
            raise ComfyError(
                f"{self.name}: GET /view of {ref.filename!r} answered {len(resp.body)} bytes that are not an image",
                user_message="A GPU node sent back something that is not an image.",
            )
        return resp.body

    async def upload_image(
        self, data: bytes, filename: str, *, overwrite: bool = True, timeout: float | None = None
    ) -> str:
        """Upload an input image within `timeout` seconds; returns the name to use in LoadImage.image."""
        resp = await self._request(
            "POST",
            "/upload/image",
            files={"image": (filename, data, "image/png")},
            data={"overwrite": "true" if overwrite else "false", "type": "input"},
            timeout=timeout,
        )
        return parse_upload_response(self._json(resp, "POST /upload/image"))

    async def object_info(self, class_type: str | None = None) -> ObjectInfo:
        """All node classes, or one (empty when the server does not know it)."""
        path = f"/object_info/{class_type}" if class_type else "/object_info"
        resp = await self._request("GET", path)
        return parse_object_info(self._json(resp, f"GET {path}"))

    async def models(self) -> NodeModels:
        """The checkpoints, LoRAs and upscale models the node holds (three small object_info calls)."""
        parts = await asyncio.gather(
            self.object_info("CheckpointLoaderSimple"),
            self.object_info("LoraLoader"),
            self.object_info("UpscaleModelLoader"),
        )
        info = parts[0].merged(parts[1]).merged(parts[2])
        return info.models()

    async def system_stats(self) -> SystemStats:
        """Version and devices (also the health check)."""
        resp = await self._request("GET", "/system_stats")
        return parse_system_stats(self._json(resp, "GET /system_stats"))

    async def queue(self) -> QueueState:
        """Prompt ids running and pending."""
        resp = await self._request("GET", "/queue")
        return parse_queue(self._json(resp, "GET /queue"))

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt (only that one when prompt_id is given and the server supports it)."""
        resp = await self._request("POST", "/interrupt", json=build_interrupt_request(prompt_id))
        self._expect_ok(resp, "POST /interrupt")

    async def delete_queued(self, prompt_ids: Sequence[str]) -> None:
        """Remove pending prompts from the queue (running ones are not affected)."""
        resp = await self._request("POST", "/queue", json=build_queue_delete(list(prompt_ids)))
        self._expect_ok(resp, "POST /queue")

    async def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """Ask the node to unload models and/or free memory."""
        resp = await self._request(
            "POST", "/free", json=build_free_request(unload_models=unload_models, free_memory=free_memory)
        )
        self._expect_ok(resp, "POST /free")
