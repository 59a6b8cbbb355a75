"""
The HTTP side of one ComfyUI server: every REST call.

Each body is streamed under a byte cap and each call runs under an overall deadline.

Errors: a node that cannot be reached or read at the transport level (refused, reset, timed out, a 5xx, a body
that cannot be decoded) raises NodeUnavailable; an answer that arrives but is wrong raises ComfyError.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator.comfy.parsing import (
    loads_json,
    looks_like_image,
    parse_history,
    parse_object_info,
    parse_prompt_response,
    parse_queue,
    parse_system_stats,
    parse_upload_response,
    parse_view_headers,
)
from orchestrator.comfy.protocol import (
    HistoryEntry,
    ImageRef,
    ObjectInfo,
    PromptAccepted,
    QueueState,
    SystemStats,
    build_free_request,
    build_interrupt_request,
    build_prompt_request,
    build_queue_delete,
    image_ref_params,
)
from orchestrator.errors import ComfyError, NodeUnavailable
from orchestrator.models import NodeModels

log = logging.getLogger(__name__)

#: the default cap on one HTTP body from a node (a 4096² PNG is ~30 MiB at worst)
DEFAULT_MAX_TRANSFER_BYTES = 64 * 1024 * 1024
#: the default deadline of one whole HTTP call, body included (httpx's own timeout is per read)
DEFAULT_TRANSFER_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class _Answer:
    """An HTTP answer whose body was read under the byte cap."""

    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class ComfyHttp:
    """The REST calls to one ComfyUI server (ComfyClient adds its WebSocket)."""

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        http_timeout: float = 30.0,
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
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=http_timeout, transport=transport)
        #: set when an HTTP call succeeds while the socket is down: the server is back, reconnect now
        self._kick = asyncio.Event()

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
