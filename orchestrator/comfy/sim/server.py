"""
The simulator's HTTP and WebSocket server: ComfyUI's routes (also under /api) over a `SimEngine`.

Also the life cycle of a simulated node (start, kill, revive, stop) and the faults tests drive at runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import socket
import struct
import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from orchestrator.comfy.parsing import parse_object_info
from orchestrator.comfy.protocol import encode_preview
from orchestrator.comfy.sim import render
from orchestrator.comfy.sim.engine import Queued, SimEngine, SimPromptRecord, Socket, now_ms
from orchestrator.comfy.sim.faults import Garbage, drip_body, garbage_frame, oversize_body
from orchestrator.comfy.sim.validation import Invalid, Validator, err
from orchestrator.comfy.sim.vram import CONTEXT_GB
from orchestrator.config import NodeConfig

log = logging.getLogger(__name__)

COMFYUI_VERSION = "0.3.43"

_CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


class ComfySimulator(SimEngine):
    """One simulated ComfyUI node on loopback."""

    def __init__(
        self,
        node: NodeConfig,
        *,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
        port: int | None = None,
        default_checkpoints: Sequence[str] = (),
        default_loras: Sequence[str] = (),
        default_upscale_models: Sequence[str] = (),
        legacy_combos: bool = False,
        previews: bool | None = None,
    ) -> None:
        super().__init__(
            node,
            time_scale=time_scale,
            default_checkpoints=default_checkpoints,
            default_loras=default_loras,
            default_upscale_models=default_upscale_models,
            legacy_combos=legacy_combos,
            previews=previews,
        )
        self.host = host
        self.port = node.port if port is None else port
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        #: a killed node's port, bound but not listening (see _hold_address)
        self._held: socket.socket | None = None
        self._stopped = False
        #: set when an upload other than a held one is stored (the hold_upload_of fault)
        self._other_upload = asyncio.Event()

    @property
    def base_url(self) -> str:
        """http://host:port of this simulator."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def alive(self) -> bool:
        """True while the simulator answers."""
        return self._server is not None

    async def start(self) -> None:
        """Bind and serve; afterwards `port` is the bound port."""
        app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[self._gzip_lie])
        routes = self._routes()
        app.add_routes(routes)
        app.add_routes([web.route(r.method, "/api" + r.path, r.handler) for r in routes])
        # A stopped node is a process that ended: its half-sent answers are cut, not finished (aiohttp would
        # otherwise wait up to a minute for a dripping /view to complete).
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()
        log.info("simulated node %s serving at %s", self.node.id, self.base_url)

    async def _listen(self) -> None:
        self._release_address()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._make_protocol, self.host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._start_worker()

    def _make_protocol(self) -> asyncio.BaseProtocol:
        assert self._runner is not None and self._runner.server is not None
        return self._runner.server()

    def kill(self) -> None:
        """Stop answering now: close the listener and every connection, forget the queue (a power loss)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        connections = self._runner.server.connections if self._runner and self._runner.server else []
        for proto in connections:
            transport = proto.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    # Reset, not closed: no FIN-WAIT or TIME-WAIT socket keeps the dead node's port (_hold_address).
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
        self._forget()
        # Once the aborted connections are closed (their sockets share the port until their callbacks run).
        asyncio.get_running_loop().call_soon(self._hold_address)
        log.info("simulated node %s killed", self.node.id)

    def _hold_address(self) -> None:
        """
        Keep the dead node's port: a listener that resets every connection, so nothing answers there.

        Released, the port could be handed to another simulator (tests run side by side), and the dead node would
        seem to answer again with someone else's queue. Bound without listening, it could still be taken by a
        server binding with SO_REUSEADDR (as asyncio's do); a listening socket cannot be.
        """
        if self._held is not None or self._server is not None or self._stopped or not self.port:
            return
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.bind((self.host, self.port))
            held.listen(16)
            held.setblocking(False)
        except OSError as e:
            held.close()
            log.warning("simulated node %s: cannot hold its port %d while dead: %s", self.node.id, self.port, e)
            return
        self._held = held
        asyncio.get_running_loop().add_reader(held.fileno(), self._reset_one)

    def _reset_one(self) -> None:
        if self._held is None:
            return
        try:
            conn, _ = self._held.accept()
        except OSError:
            return
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _release_address(self) -> None:
        if self._held is not None:
            asyncio.get_running_loop().remove_reader(self._held.fileno())
            self._held.close()
            self._held = None

    async def revive(self) -> None:
        """Serve again on the same port after kill()."""
        if self._server is None:
            await self._listen()
            log.info("simulated node %s revived at %s", self.node.id, self.base_url)

    async def stop(self) -> None:
        """Stop serving and release everything."""
        self._stopped = True
        worker = self._worker
        self.kill()
        if worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._release_address()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def inject_garbage(self, kind: Garbage | str, prompt_id: str | None = None) -> None:
        """Send one malformed frame of `kind` to every socket (naming `prompt_id`, else the running prompt)."""
        if prompt_id is None and self._running is not None:
            prompt_id = self._running.prompt_id
        frame = garbage_frame(kind, prompt_id)
        for sid in list(self._sockets):
            self.stats.garbage_sent += await self._send_raw(sid, frame)

    async def flood_unwatched(self, n: int, size: int, prompt_id: str | None = None) -> str:
        """
        Flood every socket with the events of a prompt nobody watches; returns its prompt id.

        The prompt starts, sends `n` progress messages each followed by a preview of `size` bytes, and finishes.
        """
        pid = prompt_id or str(uuid.uuid4())
        # Shaped like a JPEG so that the preview is well-formed and only its owner is missing.
        jpeg = b"\xff\xd8" + b"\x00" * max(0, size - 4) + b"\xff\xd9"
        frame = encode_preview(jpeg)
        for sid in list(self._sockets):
            await self._send(sid, "execution_start", {"prompt_id": pid, "timestamp": now_ms()})
            for step in range(1, n + 1):
                await self._send(sid, "progress", {"value": step, "max": n, "prompt_id": pid, "node": "3"})
                await self._send_bytes(sid, frame)
            await self._send(sid, "execution_success", {"prompt_id": pid, "timestamp": now_ms()})
            await self._send(sid, "executing", {"node": None, "display_node": None, "prompt_id": pid})
        return pid

    def unwedge(self) -> None:
        """End a wedge: the node executes and reports again (the prompt it was on carries on)."""
        self.faults.wedge = False
        self.faults.wedge_after = None
        self._unwedged.set()

    def drop_websockets(self) -> None:
        """Cut every WebSocket without a close handshake (the prompts keep running)."""
        for sid in list(self._sockets):
            self._drop(sid)

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/prompt", self._post_prompt),
            web.get("/prompt", self._get_prompt),
            web.get("/queue", self._get_queue),
            web.post("/queue", self._post_queue),
            web.get("/history", self._get_history),
            web.get("/history/{prompt_id}", self._get_history_one),
            web.post("/history", self._post_history),
            web.get("/view", self._view),
            web.post("/upload/image", self._upload),
            web.get("/object_info", self._object_info),
            web.get("/object_info/{node_class}", self._object_info_one),
            web.get("/system_stats", self._system_stats),
            web.post("/interrupt", self._post_interrupt),
            web.post("/free", self._free),
            web.get("/embeddings", self._embeddings),
            web.get("/models", self._models),
            web.get("/models/{folder}", self._models_folder),
            web.get("/ws", self._ws),
        ]

    @staticmethod
    async def _json_body(request: web.Request) -> Any:
        text = await request.text()
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except ValueError:
            raise web.HTTPBadRequest(text="invalid JSON") from None

    async def _post_prompt(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            body = {}
        if "number" in body:
            number = float(body["number"])
        else:
            number = -self._number if body.get("front") else self._number
            self._number += 1
        if "prompt" not in body:
            error = err("no_prompt", "No prompt provided", "No prompt provided")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        graph = body["prompt"]
        if not isinstance(graph, dict):
            error = err("invalid_prompt", "Invalid prompt: the prompt must be an object", "")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        graph = {str(k): v for k, v in graph.items()}
        raw = self._object_info_raw()
        try:
            good, node_errors = Validator(graph, parse_object_info(raw), raw, set(self._input_names())).run()
        except Invalid as e:
            log.debug("simulated node %s rejected a prompt: %s", self.node.id, e.error)
            return web.json_response({"error": e.error, "node_errors": e.node_errors}, status=400)
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        record = SimPromptRecord(prompt_id=prompt_id, client_id=extra.get("client_id"), number=number)
        self.stats.prompts.append(record)
        self._queue.append(Queued(number, prompt_id, graph, extra, good, record))
        self._wake.set()
        await self._broadcast_status()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self._queue_remaining()}})

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._running.as_row()] if self._running is not None else []
        return web.json_response(
            {"queue_running": running, "queue_pending": [q.as_row() for q in self._queue]}, dumps=_dumps
        )

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if isinstance(body, dict):
            if body.get("clear"):
                doomed = list(self._queue)
            else:
                ids = {str(i) for i in body.get("delete") or ()}
                doomed = [q for q in self._queue if q.prompt_id in ids]
            for q in doomed:
                self._queue.remove(q)
                q.record.status = "deleted"
            if doomed:
                await self._broadcast_status()
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.Response:
        items = list(self._history.items())
        max_items = request.query.get("max_items")
        if max_items and max_items.isdigit():
            items = items[-int(max_items) :] if int(max_items) else []
        return web.json_response(dict(items), dumps=_dumps)

    async def _get_history_one(self, request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        entry = self._history.get(pid)
        return web.json_response({pid: entry} if entry is not None else {}, dumps=_dumps)

    async def _post_history(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if isinstance(body, dict):
            if body.get("clear"):
                self._history.clear()
            for pid in body.get("delete") or ():
                self._history.pop(str(pid), None)
        return web.Response(status=200)

    @web.middleware
    async def _gzip_lie(self, request: web.Request, handler: Any) -> web.StreamResponse:
        resp: web.StreamResponse = await handler(request)
        if self.faults.gzip_lie and isinstance(resp, web.Response) and resp.content_type == "application/json":
            resp.headers["Content-Encoding"] = "gzip"
        return resp

    async def _stream_view(
        self, request: web.Request, ctype: str, chunks: Any, length: int | None
    ) -> web.StreamResponse:
        """Write a /view body chunk by chunk; a client that gives up ends it (bytes written are counted)."""
        resp = web.StreamResponse(headers={"Content-Type": ctype})
        if length is not None:
            resp.content_length = length
        await resp.prepare(request)
        self.stats.views += 1
        try:
            async for chunk in chunks:
                await resp.write(chunk)
                self.stats.view_bytes_sent += len(chunk)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            log.debug("simulated node %s: /view client went away", self.node.id)
        return resp

    async def _view(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        filename = q.get("filename")
        if filename is None:
            return web.Response(status=404)
        # ComfyUI's own checks: no absolute names, no parent references.
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        subfolder = q.get("subfolder", "")
        if subfolder.startswith("/") or ".." in subfolder:
            return web.Response(status=403)
        kind = q.get("type", "output")
        if self.faults.slow_view_seconds > 0:
            await asyncio.sleep(self.faults.slow_view_seconds * self.time_scale)
        data = self.files.get((kind, subfolder, filename))
        if data is None:
            return web.Response(status=404)
        f = self.faults
        if f.view_oversize_bytes is not None:
            return await self._stream_view(request, "image/png", oversize_body(f.view_oversize_bytes), None)
        if f.view_garbage:
            data = b"<html><body>502 Bad Gateway</body></html>\n" * 4
            return web.Response(body=data, content_type="image/png")
        if f.drip_view_bytes_per_s is not None:
            return await self._stream_view(request, "image/png", drip_body(data, f.drip_view_bytes_per_s), len(data))
        preview = q.get("preview")
        if preview:
            fmt, _, quality = preview.partition(";")
            qual = int(quality) if quality.isdigit() else 90
            if fmt in ("jpeg", "webp"):
                encode = render.encode_jpeg if fmt == "jpeg" else render.encode_webp
                body = await asyncio.to_thread(lambda: encode(render.decode(data), qual))
                return web.Response(body=body, content_type=f"image/{fmt}")
        ctype = _CONTENT_TYPES.get(os.path.splitext(filename)[1].lower(), "application/octet-stream")
        return web.Response(body=data, content_type=ctype, headers={"Content-Disposition": f'filename="{filename}"'})

    async def _upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField):
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        subfolder = str(post.get("subfolder") or "")
        overwrite = str(post.get("overwrite") or "") in ("true", "1")
        filename = posixpath.basename(str(image.filename or "").replace("\\", "/"))
        if kind not in ("input", "temp", "output") or not filename or subfolder.startswith("/") or ".." in subfolder:
            return web.Response(status=400)
        data = image.file.read()
        held = self.faults.hold_upload_of
        if held is not None and data == held:
            await self._other_upload.wait()
            self._other_upload.clear()
            self.faults.hold_upload_of = None
        stem, ext = os.path.splitext(filename)
        i = 1
        if not overwrite:
            # Like ComfyUI: an identical file keeps its name; a different one gets "name (1).png".
            while (existing := self.files.get((kind, subfolder, filename))) is not None and existing != data:
                filename = f"{stem} ({i}){ext}"
                i += 1
        self.files[(kind, subfolder, filename)] = data
        self.stats.uploads += 1
        if held is not None and data != held:
            self._other_upload.set()
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def _object_info(self, request: web.Request) -> web.Response:
        if self.faults.bad_object_info:
            return web.json_response(sorted(self._object_info_raw()))
        return web.json_response(self._object_info_raw())

    async def _object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        if self.faults.bad_object_info:
            return web.json_response([name])
        raw = self._object_info_raw()
        return web.json_response({name: raw[name]} if name in raw else {})

    async def _system_stats(self, request: web.Request) -> web.Response:
        total = int(self.node.vram_gb * 1024**3)
        used = min(total, int((CONTEXT_GB + self.vram.used_gb) * 1024**3))
        device: dict[str, Any] = {
            "name": f"cuda:0 {self.node.name} : cudaMallocAsync",
            "type": "cuda",
            "index": 0,
            "vram_total": total,
            "vram_free": total - used,
            "torch_vram_total": used,
            "torch_vram_free": 0,
        }
        if self.faults.bad_system_stats == "list":
            return web.json_response([device])
        if self.faults.bad_system_stats == "vram_text":
            device["vram_total"] = f"{self.node.vram_gb:g} GB"
        return web.json_response(
            {
                "system": {
                    "os": "posix",
                    "ram_total": 32 * 1024**3,
                    "ram_free": 20 * 1024**3,
                    "comfyui_version": COMFYUI_VERSION,
                    "python_version": "3.11.9 (simulated)",
                    "pytorch_version": "2.7.1+cu128",
                    "embedded_python": False,
                    "argv": ["main.py", "--listen", self.host, "--port", str(self.port)],
                },
                "devices": [device],
            }
        )

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        pid = body.get("prompt_id") if isinstance(body, dict) else None
        if self._running is not None and (not pid or pid == self._running.prompt_id):
            self._interrupt.set()
        return web.Response(status=200)

    async def _free(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if isinstance(body, dict) and (body.get("unload_models") or body.get("free_memory")):
            # Unloading happens between prompts in ComfyUI; the next prompt reloads its checkpoint.
            self.unload()
        return web.Response(status=200)

    async def _embeddings(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(["checkpoints", "loras", "upscale_models", "vae", "embeddings"])

    async def _models_folder(self, request: web.Request) -> web.Response:
        folders = {
            "checkpoints": self.checkpoints,
            "loras": self.loras,
            "upscale_models": self.upscale_models,
            "vae": (),
            "embeddings": (),
        }
        folder = request.match_info["folder"]
        if folder not in folders:
            return web.Response(status=404)
        return web.json_response(list(folders[folder]))

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        # A second socket with the same clientId replaces the first (which stops receiving).
        self._sockets[sid] = Socket(ws, request.transport)
        try:
            await ws.send_json(
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": self._queue_remaining()}}, "sid": sid},
                }
            )
            running = self._running
            if running is not None and running.client_id == sid and self._current_node is not None:
                node = self._current_node
                await ws.send_json(
                    {"type": "executing", "data": {"node": node, "display_node": node, "prompt_id": running.prompt_id}}
                )
            async for _msg in ws:
                pass  # ComfyUI ignores what clients send on the socket (except feature flags)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            sock = self._sockets.get(sid)
            if sock is not None and sock.ws is ws:
                del self._sockets[sid]
        return ws


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
