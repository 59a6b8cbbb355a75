"""
A ComfyUI-protocol server on loopback that renders placeholder PNGs at a node's configured speeds.

It is the demo farm, the test peer and the benchmark farm. It answers the same routes (also under /api), validates
graphs with ComfyUI's error shapes, runs one prompt at a time in FIFO order, sends the same WebSocket messages in
the same order, caches an identical graph, and injects the faults of a node's `sim.faults` block.
Raw ComfyUI dicts live here because this module *is* the server side of the wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import ipaddress
import json
import logging
import math
import os
import posixpath
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import TracebackType
from typing import Any

from aiohttp import web
from PIL import Image

from orchestrator.comfy import node_schemas, sim_render
from orchestrator.comfy.protocol import NodeSchema, ObjectInfo, encode_preview, parse_object_info
from orchestrator.config import Config, NodeConfig, SimFaults
from orchestrator.errors import ConfigError
from orchestrator.models import Family

log = logging.getLogger(__name__)

COMFYUI_VERSION = "0.3.43"
#: LoRAs every simulated node holds unless its sim block names its own
DEFAULT_LORAS: tuple[str, ...] = (
    "detail_tweaker.safetensors",
    "film_grain.safetensors",
    "watercolor_style.safetensors",
)
#: a preview frame every this many sampler steps (and on the last one)
PREVIEW_EVERY = 4
OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 7.63 GiB of which 1.12 GiB is "
    "free. Of the allocated memory 5.89 GiB is allocated by PyTorch, and 402.31 MiB is reserved by PyTorch but "
    "unallocated."
)
_CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


@dataclass
class SimFaultState:
    """
    Faults of a running simulator; tests change them at runtime (counts are of prompts started).

    The fields mean what the same fields of config.SimFaults mean. Runtime only: `hold_upload_of` (an upload of
    exactly these bytes is answered only once an upload of other bytes has been stored, as a big file beside a
    small one finishes later) and `wedge` (the node is wedged now; end it with ComfySimulator.unwedge()).
    """

    die_after: int | None = None
    hang_after: int | None = None
    error_after: int | None = None
    drop_ws_after: int | None = None
    slow_view_seconds: float = 0.0
    malformed_ws: bool = False
    bad_system_stats: str | None = None
    bad_object_info: bool = False
    gzip_lie: bool = False
    drip_view_bytes_per_s: float | None = None
    view_garbage: bool = False
    view_oversize_bytes: int | None = None
    wedge_after: int | None = None
    hold_upload_of: bytes | None = None
    wedge: bool = False

    @classmethod
    def from_config(cls, faults: SimFaults) -> SimFaultState:
        # Every configurable fault has a field of the same name here; the runtime-only ones keep their defaults.
        return cls(**{f.name: getattr(faults, f.name) for f in dataclasses.fields(faults)})


class Garbage(StrEnum):
    """Kinds of malformed WebSocket frames the simulator can send (ComfySimulator.inject_garbage)."""

    NOT_JSON = "not_json"
    STATUS_NOT_DICT = "status_not_dict"
    INFINITY = "infinity"
    DEEP_NESTING = "deep_nesting"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_TYPES = "wrong_types"
    BINARY_GARBAGE = "binary_garbage"
    TRUNCATED_PREVIEW = "truncated_preview"


#: how deep the DEEP_NESTING frame nests (far past what Python's json module can parse)
GARBAGE_DEPTH = 10_000


@functools.cache
def _tiny_jpeg() -> bytes:
    """A small but complete JPEG; TRUNCATED_PREVIEW sends half of it."""
    return sim_render.encode_jpeg(Image.new("RGB", (8, 8), (128, 128, 128)), 80)


def garbage_frame(kind: Garbage | str, prompt_id: str | None = None) -> str | bytes:
    """One malformed frame of a kind; it names `prompt_id` where it can, so only its shape makes it wrong."""
    kind = Garbage(kind)
    pid = prompt_id or "0f0e0d0c-garbage"
    if kind is Garbage.NOT_JSON:
        return '{"type": "executing", "data": {"node": "3", '
    if kind is Garbage.STATUS_NOT_DICT:
        return json.dumps({"type": "status", "data": {"status": "busy", "sid": "x"}})
    if kind is Garbage.INFINITY:
        # json.dumps writes a float infinity as the bare word Infinity, which is not JSON
        return json.dumps({"type": "progress", "data": {"value": math.inf, "max": 20, "prompt_id": pid, "node": "3"}})
    if kind is Garbage.DEEP_NESTING:
        nest = "[" * GARBAGE_DEPTH + "]" * GARBAGE_DEPTH
        head = json.dumps({"type": "executed", "data": {"prompt_id": pid, "node": "9", "output": None}})
        return head.replace("null", nest)
    if kind is Garbage.UNKNOWN_TYPE:
        return json.dumps({"type": "vibes_sim_unknown", "data": {"prompt_id": pid, "what": [1, {"x": None}]}})
    if kind is Garbage.WRONG_TYPES:
        return json.dumps({"type": "execution_success", "data": {"prompt_id": [pid], "timestamp": "soon"}})
    if kind is Garbage.BINARY_GARBAGE:
        return encode_preview(b"\x13\x37" * 64)
    jpeg = _tiny_jpeg()
    return encode_preview(jpeg)[: 8 + len(jpeg) // 2]


@dataclass
class SimPromptRecord:
    """What happened to one prompt on the simulator."""

    prompt_id: str
    client_id: str | None
    number: float
    status: str = "queued"  # queued | running | success | error | interrupted | deleted | died
    checkpoint: str | None = None
    cached_nodes: int = 0


@dataclass
class SimStats:
    """Counters tests assert on."""

    prompts_started: int = 0
    prompts_completed: int = 0
    checkpoint_loads: int = 0
    loaded_checkpoint: str | None = None
    uploads: int = 0
    prompts: list[SimPromptRecord] = field(default_factory=list)
    #: malformed frames sent (inject_garbage and the malformed_ws fault), per socket
    garbage_sent: int = 0
    #: body bytes of GET /view the server managed to write (a client that gives up stops it)
    view_bytes_sent: int = 0

    def record(self, prompt_id: str) -> SimPromptRecord | None:
        """The record of one prompt."""
        return next((r for r in self.prompts if r.prompt_id == prompt_id), None)


# --- values flowing between simulated nodes ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    checkpoint: str
    loras: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Cond:
    text: str


@dataclass(frozen=True)
class _Latent:
    width: int
    height: int
    batch: int = 1
    sources: tuple[Image.Image, ...] = ()
    prompt: str | None = None
    seed: int = 0
    denoise: float = 1.0


@dataclass
class _Queued:
    number: float
    prompt_id: str
    graph: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    record: SimPromptRecord

    @property
    def client_id(self) -> str | None:
        cid = self.extra_data.get("client_id")
        return str(cid) if cid else None

    def as_row(self) -> list[Any]:
        return [self.number, self.prompt_id, self.graph, self.extra_data, self.outputs]


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None


class _Interrupted(Exception):
    pass


class _Died(Exception):
    pass


class _NodeFailed(Exception):
    def __init__(self, message: str, exception_type: str) -> None:
        super().__init__(message)
        self.message = message
        self.exception_type = exception_type


class _Invalid(Exception):
    """The graph failed validation; carries the 400 body."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error
        self.node_errors = node_errors


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_link(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int)) and isinstance(v[1], int)


def infer_family(checkpoint: str) -> Family:
    """The speed family of a checkpoint from its name: 'flux' -> flux, 'xl' -> sdxl, else sd15."""
    name = checkpoint.lower()
    if "flux" in name:
        return Family.FLUX
    if "xl" in name:
        return Family.SDXL
    return Family.SD15


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _type_matches(received: str, expected: str) -> bool:
    # ComfyUI's validate_node_input: equal, "*" on either side, or overlapping comma-separated unions.
    if received == expected or "*" in (received, expected):
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


# --- graph validation, as ComfyUI's execution.validate_prompt does it ---------------------------------------------


class _Validator:
    """Validates one graph against a node table; only nodes an output depends on are checked."""

    def __init__(self, graph: dict[str, Any], info: ObjectInfo, raw: dict[str, Any], inputs: set[str]) -> None:
        self.graph = graph
        self.info = info
        self.raw = raw
        self.input_files = inputs
        self.checked: dict[str, bool] = {}
        self.errors: dict[str, list[dict[str, Any]]] = {}
        self._visiting: set[str] = set()

    def schema(self, node_id: str) -> NodeSchema:
        return self.info.nodes[self.graph[node_id]["class_type"]]

    def run(self) -> tuple[list[str], dict[str, Any]]:
        """Good output node ids and the node_errors dict; raises _Invalid when nothing can run."""
        for node_id, node in self.graph.items():
            if not isinstance(node, dict) or "class_type" not in node:
                raise _Invalid(
                    _error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'",
                    ),
                    {},
                )
            if node["class_type"] not in self.info.nodes:
                raise _Invalid(
                    _error(
                        "invalid_prompt",
                        f"Cannot execute because node {node['class_type']} does not exist.",
                        f"Node ID '#{node_id}'",
                    ),
                    {},
                )
        outputs = [nid for nid in self.graph if self.schema(nid).output_node]
        if not outputs:
            raise _Invalid(_error("prompt_no_outputs", "Prompt has no outputs"), {})
        good: list[str] = []
        failed: list[str] = []
        for out in outputs:
            (good if self.validate(out) else failed).append(out)
        node_errors: dict[str, Any] = {}
        for node_id, errs in self.errors.items():
            node_errors[node_id] = {
                "errors": errs,
                "dependent_outputs": [o for o in failed if node_id in _closure(self.graph, o)],
                "class_type": self.graph[node_id]["class_type"],
            }
        if not good:
            lines = []
            for node_id, entry in node_errors.items():
                lines.append(f"{entry['class_type']} {node_id}:")
                lines += [f"- {e['message']}: {e['details']}" for e in entry["errors"]]
            raise _Invalid(
                _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(lines)),
                node_errors,
            )
        return good, node_errors

    def validate(self, node_id: str) -> bool:
        if node_id in self.checked:
            return self.checked[node_id]
        if node_id in self._visiting:
            raise _Invalid(_error("invalid_prompt", "Dependency cycle detected", f"Node ID '#{node_id}'"), {})
        self._visiting.add(node_id)
        node = self.graph[node_id]
        schema = self.schema(node_id)
        raw_inputs = self.raw[schema.class_type]["input"]
        values = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        errors: list[dict[str, Any]] = []
        ok = True
        for name, spec in schema.inputs.items():
            config = (raw_inputs.get("required") or {}).get(name) or (raw_inputs.get("optional") or {}).get(name)
            if name not in values:
                if spec.required:
                    errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
                continue
            val = values[name]
            extra = {"input_name": name, "input_config": config, "received_value": val}
            if isinstance(val, list):
                linked_ok = self._check_link(name, val, spec.type, extra, errors)
                ok = ok and linked_ok
                continue
            if spec.is_link:
                errors.append(
                    _error(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        name,
                        **extra,
                    )
                )
                continue
            self._check_value(schema.class_type, name, val, spec, extra, errors)
        self._visiting.discard(node_id)
        if errors:
            self.errors[node_id] = errors
        result = ok and not errors
        self.checked[node_id] = result
        return result

    def _check_link(
        self, name: str, val: list[Any], expected: str, extra: dict[str, Any], errors: list[dict[str, Any]]
    ) -> bool:
        bad = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
        if not _is_link(val):
            errors.append(_error("bad_linked_input", bad, name, **extra))
            return True
        source, index = str(val[0]), int(val[1])
        if source not in self.graph:
            errors.append(_error("bad_linked_input", bad, f"{name}, linked node '{source}' does not exist", **extra))
            return True
        outputs = self.schema(source).outputs
        if not 0 <= index < len(outputs):
            errors.append(
                _error(
                    "bad_linked_input",
                    bad,
                    f"{name}, node '{source}' has no output {index}",
                    **extra,
                )
            )
            return True
        received = outputs[index]
        if not _type_matches(received, expected):
            errors.append(
                _error(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({expected})",
                    input_name=name,
                    input_config=extra["input_config"],
                    received_type=received,
                    linked_node=val,
                )
            )
            return True
        # Errors of the linked node are reported on that node, not on this one.
        return self.validate(source)

    def _check_value(
        self, class_type: str, name: str, val: Any, spec: Any, extra: dict[str, Any], errors: list[dict[str, Any]]
    ) -> None:
        if spec.type in ("INT", "FLOAT"):
            try:
                num: float = int(val) if spec.type == "INT" else float(val)
            except (TypeError, ValueError) as ex:
                errors.append(
                    _error(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {spec.type} value",
                        f"{name}, {val}, {ex}",
                        **extra,
                    )
                )
                return
            if spec.min is not None and num < spec.min:
                errors.append(
                    _error("value_smaller_than_min", f"Value {num} smaller than min of {_fmt(spec.min)}", name, **extra)
                )
            elif spec.max is not None and num > spec.max:
                errors.append(
                    _error("value_bigger_than_max", f"Value {num} bigger than max of {_fmt(spec.max)}", name, **extra)
                )
            return
        if class_type == "LoadImage" and name == "image":
            # LoadImage has its own VALIDATE_INPUTS in ComfyUI: any file in the input folder (subfolders too).
            if val not in self.input_files:
                errors.append(
                    _error(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        f"image - Invalid image file: {val}",
                        **extra,
                    )
                )
            return
        if spec.type == "COMBO" and spec.options is not None and val not in spec.options:
            errors.append(
                _error(
                    "value_not_in_list", "Value not in list", f"{name}: '{val}' not in {list(spec.options)}", **extra
                )
            )


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _closure(graph: dict[str, Any], node_id: str) -> set[str]:
    """The node and every node it depends on through links."""
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in graph:
            continue
        seen.add(nid)
        inputs = graph[nid].get("inputs") or {}
        stack.extend(str(v[0]) for v in inputs.values() if _is_link(v))
    return seen


def _order(graph: dict[str, Any], outputs: Sequence[str]) -> list[str]:
    """Dependencies first, outputs in the order given (validation has ruled out cycles)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(nid: str) -> None:
        if nid in seen:
            return
        seen.add(nid)
        for v in (graph[nid].get("inputs") or {}).values():
            if _is_link(v):
                visit(str(v[0]))
        order.append(nid)

    for out in outputs:
        visit(out)
    return order


def _signatures(graph: dict[str, Any], order: Sequence[str], input_hashes: dict[str, str]) -> dict[str, str]:
    """A cache key per node: its class and inputs, with links replaced by the linked node's key."""
    sigs: dict[str, str] = {}
    for nid in order:
        node = graph[nid]
        parts: dict[str, Any] = {}
        for k, v in (node.get("inputs") or {}).items():
            parts[k] = ["link", sigs[str(v[0])], v[1]] if _is_link(v) else v
        if node["class_type"] == "LoadImage":
            # Like ComfyUI's IS_CHANGED: a re-uploaded file with new bytes is not served from the cache.
            parts["__file"] = input_hashes.get(str(parts.get("image")), "")
        text = json.dumps([node["class_type"], parts], sort_keys=True, default=str)
        sigs[nid] = hashlib.sha1(text.encode()).hexdigest()
    return sigs


# --- the server -----------------------------------------------------------------------------------------------------


class ComfySimulator:
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
        if node.sim is None:
            raise ValueError(f"node {node.id} has no sim: block")
        self.node = node
        self.sim = node.sim
        self.time_scale = time_scale
        self.host = host
        self.port = node.port if port is None else port
        self.legacy_combos = legacy_combos
        self.previews = self.sim.previews if previews is None else previews
        self.checkpoints = tuple(self.sim.checkpoints or default_checkpoints)
        self.loras = tuple(self.sim.loras or default_loras)
        self.upscale_models = tuple(self.sim.upscale_models or default_upscale_models)
        self.faults = SimFaultState.from_config(self.sim.faults)
        self.stats = SimStats()
        #: stored files: (type, subfolder, filename) -> bytes
        self.files: dict[tuple[str, str, str], bytes] = {}
        self._queue: list[_Queued] = []
        self._running: _Queued | None = None
        self._current_node: str | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self._number = 0
        self._sockets: dict[str, _Socket] = {}
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._other_upload = asyncio.Event()
        self._unwedged = asyncio.Event()
        self._garbage_next = 0
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._worker: asyncio.Task[None] | None = None

    # --- life cycle

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
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen()
        log.info("simulated node %s serving at %s", self.node.id, self.base_url)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._make_protocol, self.host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._worker = asyncio.create_task(self._work_loop(), name=f"sim-{self.node.id}")

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
                transport.abort()
        self._sockets.clear()
        if self._running is not None:
            self._running.record.status = "died"
        for item in self._queue:
            item.record.status = "died"
        self._queue.clear()
        self._running = None
        self._current_node = None
        self._history.clear()
        self._cache.clear()
        self.stats.loaded_checkpoint = None
        if self._worker is not None and self._worker is not asyncio.current_task():
            self._worker.cancel()
        self._worker = None
        log.info("simulated node %s killed", self.node.id)

    async def revive(self) -> None:
        """Serve again on the same port after kill()."""
        if self._server is None:
            await self._listen()
            log.info("simulated node %s revived at %s", self.node.id, self.base_url)

    async def stop(self) -> None:
        """Stop serving and release everything."""
        worker = self._worker
        self.kill()
        if worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
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

    async def _mix_garbage(self, sid: str | None, prompt_id: str | None) -> None:
        kinds = list(Garbage)
        kind = kinds[self._garbage_next % len(kinds)]
        self._garbage_next += 1
        self.stats.garbage_sent += await self._send_raw(sid, garbage_frame(kind, prompt_id))

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
            await self._send(sid, "execution_start", {"prompt_id": pid, "timestamp": _now_ms()})
            for step in range(1, n + 1):
                await self._send(sid, "progress", {"value": step, "max": n, "prompt_id": pid, "node": "3"})
                await self._send_bytes(sid, frame)
            await self._send(sid, "execution_success", {"prompt_id": pid, "timestamp": _now_ms()})
            await self._send(sid, "executing", {"node": None, "display_node": None, "prompt_id": pid})
        return pid

    def unwedge(self) -> None:
        """End a wedge: the node executes and reports again (the prompt it was on carries on)."""
        self.faults.wedge = False
        self.faults.wedge_after = None
        self._unwedged.set()

    async def _wait_unwedged(self) -> None:
        while self.faults.wedge:
            self._unwedged.clear()
            await self._unwedged.wait()

    def drop_websockets(self) -> None:
        """Cut every WebSocket without a close handshake (the prompts keep running)."""
        for sid in list(self._sockets):
            self._drop(sid)

    def _drop(self, sid: str | None) -> None:
        sock = self._sockets.pop(sid, None) if sid else None
        if sock is not None and sock.transport is not None:
            sock.transport.abort()  # type: ignore[attr-defined]  # asyncio transports have abort()

    # --- state helpers

    def _object_info_raw(self) -> dict[str, dict[str, Any]]:
        files = node_schemas.ModelFiles(
            checkpoints=self.checkpoints,
            loras=self.loras,
            upscale_models=self.upscale_models,
            input_images=tuple(sorted(self._input_names())),
        )
        return node_schemas.object_info(files, legacy_combos=self.legacy_combos)

    def _input_names(self) -> dict[str, bytes]:
        return {
            (f"{sub}/{name}" if sub else name): data
            for (kind, sub, name), data in self.files.items()
            if kind == "input"
        }

    def _queue_remaining(self) -> int:
        return len(self._queue) + (1 if self._running is not None else 0)

    async def _send(self, sid: str | None, kind: str, data: dict[str, Any]) -> None:
        if self.faults.wedge:
            return
        await self._send_raw(sid, json.dumps({"type": kind, "data": data}))
        if self.faults.malformed_ws:
            pid = data.get("prompt_id")
            await self._mix_garbage(sid, pid if isinstance(pid, str) else None)

    async def _send_bytes(self, sid: str | None, payload: bytes) -> None:
        if self.faults.wedge:
            return
        await self._send_raw(sid, payload)
        if self.faults.malformed_ws:
            await self._mix_garbage(sid, self._running.prompt_id if self._running is not None else None)

    async def _send_raw(self, sid: str | None, frame: str | bytes) -> bool:
        sock = self._sockets.get(sid) if sid else None
        if sock is None or sock.ws.closed:
            return False
        try:
            if isinstance(frame, str):
                await sock.ws.send_str(frame)
            else:
                await sock.ws.send_bytes(frame)
        except (ConnectionError, RuntimeError):
            log.debug("simulated node %s: socket %s gone", self.node.id, sid)
            return False
        return True

    async def _broadcast_status(self) -> None:
        data = {"status": {"exec_info": {"queue_remaining": self._queue_remaining()}}}
        for sid in list(self._sockets):
            await self._send(sid, "status", data)

    async def _sleep(self, seconds: float) -> None:
        """A simulated wait that an interrupt ends early (raises _Interrupted)."""
        if self._interrupt.is_set():
            raise _Interrupted
        if seconds <= 0:
            await asyncio.sleep(0)
        else:
            try:
                await asyncio.wait_for(self._interrupt.wait(), seconds)
            except TimeoutError:
                return
        if self._interrupt.is_set():
            raise _Interrupted

    # --- execution

    async def _work_loop(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            self._queue.sort(key=lambda q: q.number)
            item = self._queue.pop(0)
            self._running = item
            self._interrupt.clear()
            try:
                await self._execute(item)
            except _Died:
                return
            except Exception:
                log.exception("simulated node %s: prompt %s crashed the simulator", self.node.id, item.prompt_id)
            self._running = None
            self._current_node = None
            await self._broadcast_status()

    async def _execute(self, item: _Queued) -> None:
        self.stats.prompts_started += 1
        n = self.stats.prompts_started
        f = self.faults
        fault = next(
            (
                name
                for name, at in (
                    ("die", f.die_after),
                    ("hang", f.hang_after),
                    ("error", f.error_after),
                    ("drop", f.drop_ws_after),
                )
                if at == n
            ),
            None,
        )
        pid, sid, graph = item.prompt_id, item.client_id, item.graph
        item.record.status = "running"
        if f.wedge_after == n:
            f.wedge = True
        # Wedged: the prompt stays "running" in /queue, and nothing more is executed or said.
        await self._wait_unwedged()
        messages: list[list[Any]] = []

        async def emit(kind: str, data: dict[str, Any]) -> None:
            if kind in ("execution_start", "execution_cached", "execution_success"):
                messages.append([kind, data])
            await self._send(sid, kind, data)

        await emit("execution_start", {"prompt_id": pid, "timestamp": _now_ms()})
        order = _order(graph, item.outputs)
        hashes = {k: hashlib.sha1(v).hexdigest() for k, v in self._input_names().items()}
        sigs = _signatures(graph, order, hashes)
        cached = [nid for nid in order if sigs[nid] in self._cache]
        item.record.cached_nodes = len(cached)
        await emit("execution_cached", {"nodes": cached, "prompt_id": pid, "timestamp": _now_ms()})
        values: dict[str, tuple[Any, ...]] = {}
        ui_outputs: dict[str, dict[str, Any]] = {}
        new_cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        executed: list[str] = []
        status = "success"
        node_id: str | None = None
        try:
            for node_id in order:
                class_type = graph[node_id]["class_type"]
                if node_id in cached:
                    out, ui = self._cache[sigs[node_id]]
                else:
                    # A wedge set at runtime stops the prompt at the next node (or sampler step).
                    await self._wait_unwedged()
                    if self._interrupt.is_set():
                        raise _Interrupted
                    self._current_node = node_id
                    await emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
                    inputs = {
                        k: values[str(v[0])][v[1]] if _is_link(v) else v
                        for k, v in (graph[node_id].get("inputs") or {}).items()
                    }
                    out, ui = await self._run_node(item, node_id, class_type, inputs, fault)
                    executed.append(node_id)
                values[node_id] = out
                new_cache[sigs[node_id]] = (out, ui)
                if ui is not None:
                    ui_outputs[node_id] = ui
                    await emit("executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid})
            self.stats.prompts_completed += 1
            await emit("execution_success", {"prompt_id": pid, "timestamp": _now_ms()})
        except _Interrupted:
            status = "interrupted"
            data = {
                "prompt_id": pid,
                "node_id": node_id,
                "node_type": graph[node_id]["class_type"] if node_id else None,
                "executed": executed,
                "timestamp": _now_ms(),
            }
            messages.append(["execution_interrupted", data])
            await self._send(sid, "execution_interrupted", data)
        except _NodeFailed as e:
            status = "error"
            data = {
                "prompt_id": pid,
                "node_id": node_id,
                "node_type": graph[node_id]["class_type"] if node_id else None,
                "executed": executed,
                "exception_message": e.message,
                "exception_type": e.exception_type,
                "traceback": ['  File "execution.py", line 496, in execute\n', f"{e.exception_type}: {e.message}\n"],
                "current_inputs": {},
                "current_outputs": {},
                "timestamp": _now_ms(),
            }
            messages.append(["execution_error", data])
            await self._send(sid, "execution_error", data)
        # ComfyUI keeps the outputs of the nodes that ran for the next prompt, whatever happened after them.
        self._cache = new_cache
        item.record.status = status
        self._history[pid] = {
            "prompt": item.as_row(),
            "outputs": ui_outputs,
            "status": {
                "status_str": "success" if status == "success" else "error",
                "completed": status == "success",
                "messages": messages,
            },
            "meta": {k: {"node_id": k, "display_node": k, "parent_node": None, "real_node_id": k} for k in ui_outputs},
        }
        self._current_node = None
        # ComfyUI's prompt worker always ends with `executing` node None, after success, error or interrupt.
        await self._send(sid, "executing", {"node": None, "display_node": None, "prompt_id": pid})

    def _seconds_per_step(self, family: Family) -> float:
        speeds = self.sim.seconds_per_step
        if family in speeds:
            return speeds[family]
        # A node asked for a family it has no speed for runs it slowly rather than refusing it.
        return max(speeds.values(), default=1.0) * 3

    async def _run_node(
        self, item: _Queued, node_id: str, class_type: str, inputs: dict[str, Any], fault: str | None
    ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        scale = self.time_scale
        if class_type in ("CheckpointLoaderSimple", "CheckpointLoader"):
            ckpt = str(inputs["ckpt_name"])
            item.record.checkpoint = ckpt
            if self.stats.loaded_checkpoint != ckpt:
                await self._sleep(self.sim.checkpoint_load_seconds * scale)
                self.stats.checkpoint_loads += 1
                self.stats.loaded_checkpoint = ckpt
            model = _Model(ckpt)
            return (model, model, ckpt), None
        if class_type == "LoraLoader":
            m: _Model = inputs["model"]
            model = _Model(m.checkpoint, (*m.loras, str(inputs["lora_name"])))
            return (model, model), None
        if class_type == "CLIPTextEncode":
            return (_Cond(str(inputs["text"])),), None
        if class_type == "FluxGuidance":
            return (inputs["conditioning"],), None
        if class_type == "EmptyLatentImage":
            w, h = int(inputs["width"]) // 8 * 8, int(inputs["height"]) // 8 * 8
            return (_Latent(w, h, int(inputs["batch_size"])),), None
        if class_type == "VAEEncode":
            images: tuple[Image.Image, ...] = tuple(inputs["pixels"])
            return (_Latent(images[0].width // 8 * 8, images[0].height // 8 * 8, len(images), images),), None
        if class_type == "KSampler":
            return (await self._sample(item, node_id, inputs, fault),), None
        if class_type == "VAEDecode":
            return (await asyncio.to_thread(_decode, inputs["samples"]),), None
        if class_type == "LoadImage":
            name = str(inputs["image"])
            data = self._input_names().get(name)
            if data is None:
                raise _NodeFailed(f"Invalid image file: {name}", "FileNotFoundError")
            try:
                img = await asyncio.to_thread(sim_render.decode, data)
            except (OSError, ValueError) as e:
                raise _NodeFailed(f"cannot identify image file {name!r}: {e}", "PIL.UnidentifiedImageError") from None
            return ((img,), None), None
        if class_type == "ImageScale":
            w, h = int(inputs["width"]), int(inputs["height"])
            out = await asyncio.to_thread(lambda: tuple(sim_render.resize(i, w, h) for i in inputs["image"]))
            return (out,), None
        if class_type == "UpscaleModelLoader":
            return (str(inputs["model_name"]),), None
        if class_type == "ImageUpscaleWithModel":
            # The resize stands in for the model's own work, so it runs inside the simulated time, not after it.
            work = asyncio.ensure_future(
                asyncio.to_thread(lambda: tuple(sim_render.upscale(i) for i in inputs["image"]))
            )
            try:
                await self._sleep(self.sim.upscale_seconds * scale)
            except _Interrupted:
                await asyncio.wait([work])
                raise
            return (await work,), None
        if class_type in ("SaveImage", "PreviewImage"):
            return (), {"images": await self._save(inputs, class_type == "PreviewImage")}
        raise _NodeFailed(f"the simulator cannot run {class_type}", "NotImplementedError")

    async def _sample(self, item: _Queued, node_id: str, inputs: dict[str, Any], fault: str | None) -> _Latent:
        model: _Model = inputs["model"]
        latent: _Latent = inputs["latent_image"]
        steps, seed, denoise = int(inputs["steps"]), int(inputs["seed"]), float(inputs["denoise"])
        prompt = inputs["positive"].text
        family = infer_family(model.checkpoint)
        native = family.native_size
        per_step = self._seconds_per_step(family) * (latent.width * latent.height / native**2) * latent.batch
        pid, sid = item.prompt_id, item.client_id
        half = steps // 2
        # Steps follow a clock, as on a GPU that keeps sampling while progress and previews go out: the time spent
        # sending them is absorbed, not added to every step.
        loop = asyncio.get_running_loop()
        start = loop.time()
        for step in range(1, steps + 1):
            if self.faults.wedge:
                await self._wait_unwedged()
                start = loop.time() - (step - 1) * per_step * self.time_scale
            if fault == "hang":
                await self._interrupt.wait()
                raise _Interrupted
            if fault == "error" and step > half:
                raise _NodeFailed(OOM_MESSAGE, "torch.OutOfMemoryError")
            if fault == "die" and step > half:
                self.kill()
                raise _Died
            if fault == "drop" and step == half + 1:
                self._drop(sid)
            await self._sleep(start + step * per_step * self.time_scale - loop.time())
            await self._send(sid, "progress", {"value": step, "max": steps, "prompt_id": pid, "node": node_id})
            if self.previews and (step % PREVIEW_EVERY == 0 or step == steps):
                jpeg = await asyncio.to_thread(sim_render.preview, prompt, seed, step, steps)
                await self._send_bytes(sid, encode_preview(jpeg))
        return replace(latent, prompt=prompt, seed=seed, denoise=denoise)

    async def _save(self, inputs: dict[str, Any], temp: bool) -> list[dict[str, str]]:
        images: tuple[Image.Image, ...] = inputs["images"]
        if temp:
            kind, subfolder, base = "temp", "", f"ComfyUI_temp_{uuid.uuid4().hex[:5]}"
        else:
            prefix = str(inputs.get("filename_prefix") or "ComfyUI")
            if prefix.startswith("/") or ".." in prefix.split("/"):
                raise _NodeFailed("Saving image outside the output folder is not allowed.", "Exception")
            kind = "output"
            subfolder, base = posixpath.split(prefix)
        pngs = await asyncio.to_thread(lambda: [sim_render.encode_png(i) for i in images])
        counter = 1 + max(
            (
                int(name[len(base) + 1 : -5])
                for (k, sub, name) in self.files
                if k == kind
                and sub == subfolder
                and name.startswith(base + "_")
                and name.endswith("_.png")
                and name[len(base) + 1 : -5].isdigit()
            ),
            default=0,
        )
        refs = []
        for i, data in enumerate(pngs):
            name = f"{base}_{counter + i:05}_.png"
            self.files[(kind, subfolder, name)] = data
            refs.append({"filename": name, "subfolder": subfolder, "type": kind})
        return refs

    # --- HTTP routes

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
            error = _error("no_prompt", "No prompt provided", "No prompt provided")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        graph = body["prompt"]
        if not isinstance(graph, dict):
            error = _error("invalid_prompt", "Invalid prompt: the prompt must be an object", "")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        graph = {str(k): v for k, v in graph.items()}
        raw = self._object_info_raw()
        try:
            good, node_errors = _Validator(graph, parse_object_info(raw), raw, set(self._input_names())).run()
        except _Invalid as e:
            log.debug("simulated node %s rejected a prompt: %s", self.node.id, e.error)
            return web.json_response({"error": e.error, "node_errors": e.node_errors}, status=400)
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        record = SimPromptRecord(prompt_id=prompt_id, client_id=extra.get("client_id"), number=number)
        self.stats.prompts.append(record)
        self._queue.append(_Queued(number, prompt_id, graph, extra, good, record))
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
            return await self._stream_view(request, "image/png", _oversize(f.view_oversize_bytes), None)
        if f.view_garbage:
            data = b"<html><body>502 Bad Gateway</body></html>\n" * 4
            return web.Response(body=data, content_type="image/png")
        if f.drip_view_bytes_per_s is not None:
            return await self._stream_view(request, "image/png", _drip(data, f.drip_view_bytes_per_s), len(data))
        preview = q.get("preview")
        if preview:
            fmt, _, quality = preview.partition(";")
            qual = int(quality) if quality.isdigit() else 90
            if fmt in ("jpeg", "webp"):
                encode = sim_render.encode_jpeg if fmt == "jpeg" else sim_render.encode_webp
                body = await asyncio.to_thread(lambda: encode(sim_render.decode(data), qual))
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
        used = int(total * 0.45) if self.stats.loaded_checkpoint else int(total * 0.05)
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
            self.stats.loaded_checkpoint = None
            self._cache.clear()
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
        self._sockets[sid] = _Socket(ws, request.transport)
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


#: chunk size of streamed /view bodies
_VIEW_CHUNK = 256 * 1024


async def _oversize(total: int) -> AsyncIterator[bytes]:
    """A PNG-looking body of `total` bytes, made of one reused chunk (never held whole in memory)."""
    head = b"\x89PNG\r\n\x1a\n"
    filler = b"\x00" * _VIEW_CHUNK
    sent = 0
    while sent < total:
        chunk = head + filler[len(head) :] if sent == 0 else filler
        chunk = chunk[: total - sent]
        sent += len(chunk)
        yield chunk


async def _drip(data: bytes, per_second: float) -> AsyncIterator[bytes]:
    """The body in small pieces at `per_second` bytes per second (real time: a slow link is not simulated work)."""
    piece = max(1, int(per_second / 20))
    for i in range(0, len(data), piece):
        chunk = data[i : i + piece]
        yield chunk
        await asyncio.sleep(len(chunk) / per_second)


def _decode(latent: _Latent) -> tuple[Image.Image, ...]:
    """VAEDecode: render the placeholder images of a sampled latent."""
    out = []
    for i in range(latent.batch):
        prompt, seed = latent.prompt or "", latent.seed + i
        if latent.sources:
            source = latent.sources[min(i, len(latent.sources) - 1)]
            if latent.prompt is None:
                out.append(sim_render.resize(source, latent.width, latent.height))
            else:
                out.append(sim_render.render_img2img(source, prompt, seed, latent.denoise, latent.width, latent.height))
        else:
            out.append(sim_render.render_txt2img(prompt, seed, latent.width, latent.height))
    return tuple(out)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SimFarm:
    """Serves every sim node of a Config; start() returns the config pointing at the bound ports."""

    def __init__(self, config: Config, *, time_scale: float | None = None, ephemeral_ports: bool = True) -> None:
        self.config = config
        self.time_scale = config.settings.sim.time_scale if time_scale is None else time_scale
        self.ephemeral_ports = ephemeral_ports
        self.simulators: dict[str, ComfySimulator] = {}

    async def start(self) -> Config:
        """Start one simulator per sim node (all or none)."""
        settings = self.config.settings
        checkpoints = sorted(set(settings.checkpoints.values()))
        nodes = []
        try:
            for i, node in enumerate(self.config.nodes):
                if node.sim is None:
                    nodes.append(node)
                    continue
                if not self.ephemeral_ports and not is_loopback(node.host):
                    raise ConfigError(
                        str(self.config.directory / "gpus.yaml"),
                        f"nodes[{i}].host",
                        f"{node.host!r} is not a loopback address; the simulator serves only this machine",
                    )
                sim = ComfySimulator(
                    node,
                    time_scale=self.time_scale,
                    host="127.0.0.1" if self.ephemeral_ports else node.host,
                    port=0 if self.ephemeral_ports else node.port,
                    default_checkpoints=checkpoints,
                    default_loras=DEFAULT_LORAS,
                    default_upscale_models=(settings.upscale_model,),
                )
                await sim.start()
                self.simulators[node.id] = sim
                nodes.append(replace(node, host=sim.host, port=sim.port))
        except BaseException:
            await self.stop()
            raise
        return self.config.with_nodes(tuple(nodes))

    async def stop(self) -> None:
        """Stop every simulator."""
        sims, self.simulators = list(self.simulators.values()), {}
        await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)

    async def __aenter__(self) -> Config:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
