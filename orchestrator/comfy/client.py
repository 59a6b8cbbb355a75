"""
One ComfyUI server: HTTP calls through httpx and one WebSocket that streams every prompt's events.

Events are routed by prompt_id to PromptWatch iterators. Events that arrive before anyone watches a prompt are
buffered (a cached prompt can finish before POST /prompt has even answered). After the socket was down, every
watched prompt that is not finished is confirmed from /history, because ComfyUI does not resend lost messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
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
    parse_history,
    parse_object_info,
    parse_prompt_response,
    parse_queue,
    parse_system_stats,
    parse_upload_response,
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

_TERMINAL = (ExecutionSuccess, ExecutionError, ExecutionInterrupted)


class PromptWatch:
    """Async iterator over the events of one prompt; ends after its terminal event."""

    def __init__(self, prompt_id: str, on_close: Callable[[PromptWatch], None]) -> None:
        self.prompt_id = prompt_id
        #: how many times the client's socket dropped while this watch was open
        self.disconnects = 0
        self.terminal = False
        self._done = False
        self._closed = False
        # Unbounded on purpose: one prompt's events are finite (nodes + steps) and terminal ones must never drop.
        self._queue: asyncio.Queue[PromptEvent | None] = asyncio.Queue()
        self._on_close = on_close

    def _put(self, ev: PromptEvent) -> None:
        if self.terminal or self._closed:
            return
        if isinstance(ev, _TERMINAL):
            self.terminal = True
        self._queue.put_nowait(ev)

    def __aiter__(self) -> PromptWatch:
        return self

    async def __anext__(self) -> PromptEvent:
        if self._done:
            raise StopAsyncIteration
        ev = await self._queue.get()
        if ev is None:
            self._done = True
            raise StopAsyncIteration
        if isinstance(ev, _TERMINAL):
            self._done = True
            self._release()
        return ev

    def close(self) -> None:
        """Stop watching; a pending __anext__ ends with StopAsyncIteration."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
            self._release()

    def _release(self) -> None:
        self._on_close(self)


class _Pending:
    """Events of a prompt nobody watches yet."""

    __slots__ = ("events", "terminal")

    def __init__(self) -> None:
        self.events: list[PromptEvent] = []
        self.terminal = False


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.name = name or self.base_url
        self.http_timeout = http_timeout
        self.connected = False
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
        try:
            msg: WsMessage | None = parse_ws_text(raw) if isinstance(raw, str) else parse_ws_binary(raw)
        except ComfyError as e:
            log.warning("comfy node=%s: %s", self.name, e)
            return
        if msg is not None:
            self.dispatch(msg)

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
            watch._put(ev)
        else:
            pending = self._pending.get(prompt_id)
            if pending is None:
                pending = self._pending[prompt_id] = _Pending()
                while len(self._pending) > MAX_UNWATCHED:
                    self._pending.popitem(last=False)
            if not pending.terminal:
                pending.events.append(ev)
        if isinstance(ev, _TERMINAL):
            self._mark_finished(prompt_id)

    def _mark_finished(self, prompt_id: str) -> None:
        pending = self._pending.get(prompt_id)
        if pending is not None:
            pending.terminal = True
        self._finished[prompt_id] = None
        while len(self._finished) > 4 * MAX_UNWATCHED:
            old, _ = self._finished.popitem(last=False)
            if old not in self._watches:
                self._pending.pop(old, None)

    def watch(self, prompt_id: str) -> PromptWatch:
        """Events of one prompt, including any that arrived before this call."""
        old = self._watches.get(prompt_id)
        if old is not None:
            old.close()
        w = PromptWatch(prompt_id, self._unwatch)
        pending = self._pending.pop(prompt_id, None)
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

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        t0 = time.perf_counter()
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.TimeoutException:
            log.warning("comfy node=%s %s %s timed out (%s)", self.name, method, path, self.base_url)
            raise NodeUnavailable(f"{self.name}: {method} {path} timed out") from None
        except httpx.TransportError as e:
            log.warning("comfy node=%s %s %s failed: %s (%s)", self.name, method, path, e, self.base_url)
            raise NodeUnavailable(f"{self.name}: {method} {path}: {type(e).__name__}") from None
        log.debug(
            "comfy node=%s %s %s -> %d in %.0f ms",
            self.name,
            method,
            path,
            resp.status_code,
            (time.perf_counter() - t0) * 1000,
        )
        if not self.connected:
            self._kick.set()
        if resp.status_code >= 500:
            raise NodeUnavailable(f"{self.name}: {method} {path} answered HTTP {resp.status_code}")
        return resp

    def _expect_ok(self, resp: httpx.Response, what: str) -> None:
        if resp.status_code != 200:
            raise ComfyError(f"{self.name}: {what} answered HTTP {resp.status_code}")

    def _json(self, resp: httpx.Response, what: str) -> Any:
        self._expect_ok(resp, what)
        try:
            return resp.json()
        except ValueError:
            raise ComfyError(f"{self.name}: {what} did not answer JSON") from None

    async def submit(self, graph: dict[str, Any], *, front: bool = False) -> PromptAccepted:
        """Queue a graph (POST /prompt); raises PromptRejected with ComfyUI's errors on 400."""
        resp = await self._request("POST", "/prompt", json=build_prompt_request(graph, self.client_id, front=front))
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        return parse_prompt_response(resp.status_code, body)

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished prompt, or None while it has not finished."""
        resp = await self._request("GET", f"/history/{prompt_id}")
        return parse_history(self._json(resp, "GET /history"), prompt_id)

    async def view(self, ref: ImageRef) -> bytes:
        """The bytes of an output image."""
        resp = await self._request("GET", "/view", params=image_ref_params(ref))
        if resp.status_code == 404:
            raise ComfyError(f"{self.name}: image {ref.filename!r} not found on the node")
        self._expect_ok(resp, "GET /view")
        return resp.content

    async def upload_image(self, data: bytes, filename: str, *, overwrite: bool = True) -> str:
        """Upload an input image; returns the name to use in LoadImage.image."""
        resp = await self._request(
            "POST",
            "/upload/image",
            files={"image": (filename, data, "image/png")},
            data={"overwrite": "true" if overwrite else "false", "type": "input"},
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
