"""
The simulator's execution engine: the queue, and one prompt at a time in FIFO order.

Node by node with ComfyUI's cache, the WebSocket messages in ComfyUI's order, and the faults of the fault model
injected on the way.

`SimEngine` holds a simulated node's state; the HTTP/WebSocket server (server.py) builds on it.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import logging
import posixpath
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from PIL import Image

from orchestrator.comfy import node_schemas
from orchestrator.comfy.protocol import encode_preview
from orchestrator.comfy.sim import render
from orchestrator.comfy.sim.faults import OOM_MESSAGE, Garbage, SimFaultState, garbage_frame
from orchestrator.comfy.sim.validation import cache_keys, execution_order, node_inputs
from orchestrator.comfy.sim.values import Cond, Latent, Model, decode
from orchestrator.comfy.sim.vram import Vram
from orchestrator.config import NodeConfig
from orchestrator.families import guess_family
from orchestrator.models import Family
from orchestrator.workflows import is_link

log = logging.getLogger(__name__)

#: a preview frame every this many sampler steps (and on the last one)
PREVIEW_EVERY = 4

#: node classes whose output is a loaded checkpoint (model, clip, vae)
CHECKPOINT_LOADERS = ("CheckpointLoaderSimple", "CheckpointLoader")


@dataclass
class SimPromptRecord:
    """What happened to one prompt on the simulator."""

    prompt_id: str
    client_id: str | None
    number: float
    status: str = "queued"  # queued | running | success | error | interrupted | deleted | died
    checkpoint: str | None = None
    cached_nodes: int = 0
    #: what getting its checkpoint ready cost: read from disk, or moved back from a loader output the cache kept
    checkpoint_loaded: bool = False
    checkpoint_swapped: bool = False


@dataclass
class SimStats:
    """Counters tests assert on."""

    prompts_started: int = 0
    prompts_completed: int = 0
    checkpoint_loads: int = 0
    #: checkpoints moved back to the GPU from a loader output the cache kept (no disk load)
    checkpoint_swaps: int = 0
    loaded_checkpoint: str | None = None
    #: the checkpoints whose loader output the execution cache holds after the last prompt (loaded one included)
    cached_checkpoints: frozenset[str] = frozenset()
    uploads: int = 0
    prompts: list[SimPromptRecord] = field(default_factory=list)
    #: malformed frames sent (inject_garbage and the malformed_ws fault), per socket
    garbage_sent: int = 0
    #: GET /view bodies started, and their bytes the server managed to write (a client that gives up stops it)
    views: int = 0
    view_bytes_sent: int = 0

    def record(self, prompt_id: str) -> SimPromptRecord | None:
        """The record of one prompt."""
        return next((r for r in self.prompts if r.prompt_id == prompt_id), None)


@dataclass
class Queued:
    """A prompt in the simulated queue (or running): its graph, the outputs to run and its record."""

    number: float
    prompt_id: str
    graph: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    record: SimPromptRecord

    @property
    def client_id(self) -> str | None:
        """The socket id the prompt's messages go to, if it named one."""
        cid = self.extra_data.get("client_id")
        return str(cid) if cid else None

    def as_row(self) -> list[Any]:
        """The prompt as ComfyUI lists it in /queue and /history."""
        return [self.number, self.prompt_id, self.graph, self.extra_data, self.outputs]


@dataclass
class Socket:
    """A connected WebSocket and its transport (to cut it without a close handshake)."""

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


def now_ms() -> int:
    """The wall clock in milliseconds, as ComfyUI's message timestamps."""
    return int(time.time() * 1000)


class SimEngine(abc.ABC):
    """A simulated node's state and execution; the server (server.py) answers the routes on top of it."""

    def __init__(
        self,
        node: NodeConfig,
        *,
        time_scale: float = 1.0,
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
        self.legacy_combos = legacy_combos
        self.previews = self.sim.previews if previews is None else previews
        self.checkpoints = tuple(self.sim.checkpoints or default_checkpoints)
        self.loras = tuple(self.sim.loras or default_loras)
        self.upscale_models = tuple(self.sim.upscale_models or default_upscale_models)
        self.faults = SimFaultState.from_config(self.sim.faults)
        self.stats = SimStats()
        #: stored files: (type, subfolder, filename) -> bytes
        self.files: dict[tuple[str, str, str], bytes] = {}
        self._queue: list[Queued] = []
        self._running: Queued | None = None
        self._current_node: str | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self.vram = Vram(node.vram_gb)
        self._number = 0
        self._sockets: dict[str, Socket] = {}
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._unwedged = asyncio.Event()
        self._garbage_next = 0
        self._worker: asyncio.Task[None] | None = None

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop answering now (the `die` fault ends a prompt with it)."""

    def _start_worker(self) -> None:
        self._worker = asyncio.create_task(self._work_loop(), name=f"sim-{self.node.id}")

    def _forget(self) -> None:
        """Forget the sockets, queue, history, cache and loaded model, and stop the worker (a power loss)."""
        self._sockets.clear()
        if self._running is not None:
            self._running.record.status = "died"
        for item in self._queue:
            item.record.status = "died"
        self._queue.clear()
        self._running = None
        self._current_node = None
        self._history.clear()
        self.unload()
        if self._worker is not None and self._worker is not asyncio.current_task():
            self._worker.cancel()
        self._worker = None

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

    async def _mix_garbage(self, sid: str | None, prompt_id: str | None) -> None:
        kinds = list(Garbage)
        kind = kinds[self._garbage_next % len(kinds)]
        self._garbage_next += 1
        self.stats.garbage_sent += await self._send_raw(sid, garbage_frame(kind, prompt_id))

    async def _wait_unwedged(self) -> None:
        while self.faults.wedge:
            self._unwedged.clear()
            await self._unwedged.wait()

    def _drop(self, sid: str | None) -> None:
        sock = self._sockets.pop(sid, None) if sid else None
        if sock is not None and sock.transport is not None:
            sock.transport.abort()  # type: ignore[attr-defined]  # asyncio transports have abort()

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

    async def _execute(self, item: Queued) -> None:
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

        await emit("execution_start", {"prompt_id": pid, "timestamp": now_ms()})
        order = execution_order(graph, item.outputs)
        hashes = {k: hashlib.sha1(v).hexdigest() for k, v in self._input_names().items()}
        # ComfyUI keys every node of the prompt, run or not (execution.py: `cache.set_prompt(dynamic_prompt,
        # prompt.keys(), ...)`), then `clean_unused` drops every entry whose key is not among them
        # (comfy_execution/caching.py BasicCache._clean_cache keeps `cache_key_set.get_used_keys()`). So a node no
        # output depends on is never run, yet keeps its earlier output cached: the keep-alive loader of idle-lane
        # prompts relies on exactly this.
        sigs = cache_keys(graph, execution_order(graph, list(graph)), hashes)
        keys = {sigs[nid] for nid in graph}
        self._cache = {k: v for k, v in self._cache.items() if k in keys}
        # A model no cached loader output references any more is freed, its VRAM with it: a prompt without its
        # checkpoint's loader (an upscale, with nothing kept alive) leaves the next one to read it from disk again.
        referenced = self._cached_checkpoints(graph, sigs)
        self.vram.keep_only(referenced)
        if self.stats.loaded_checkpoint not in referenced:
            self.stats.loaded_checkpoint = None
        # Listed for every node of the prompt, as ComfyUI's `for node_id in prompt` does.
        cached = [nid for nid in graph if sigs[nid] in self._cache]
        item.record.cached_nodes = len(cached)
        await emit("execution_cached", {"nodes": cached, "prompt_id": pid, "timestamp": now_ms()})
        values: dict[str, tuple[Any, ...]] = {}
        ui_outputs: dict[str, dict[str, Any]] = {}
        executed: list[str] = []
        status = "success"
        node_id: str | None = None
        try:
            for node_id in order:
                class_type = graph[node_id]["class_type"]
                if sigs[node_id] in self._cache:
                    out, ui = self._cache[sigs[node_id]]
                    if class_type in CHECKPOINT_LOADERS:
                        await self._swap_in(item, out[0])
                else:
                    # A wedge set at runtime stops the prompt at the next node (or sampler step).
                    await self._wait_unwedged()
                    if self._interrupt.is_set():
                        raise _Interrupted
                    self._current_node = node_id
                    await emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
                    inputs = {
                        k: values[str(v[0])][v[1]] if is_link(v) else v
                        for k, v in (graph[node_id].get("inputs") or {}).items()
                    }
                    out, ui = await self._run_node(item, node_id, class_type, inputs, fault)
                    executed.append(node_id)
                values[node_id] = out
                # ComfyUI stores each output as its node finishes: what ran stays cached whatever happens after.
                self._cache[sigs[node_id]] = (out, ui)
                if ui is not None:
                    ui_outputs[node_id] = ui
                    await emit("executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid})
            self.stats.prompts_completed += 1
            await emit("execution_success", {"prompt_id": pid, "timestamp": now_ms()})
        except _Interrupted:
            status = "interrupted"
            data = {
                "prompt_id": pid,
                "node_id": node_id,
                "node_type": graph[node_id]["class_type"] if node_id else None,
                "executed": executed,
                "timestamp": now_ms(),
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
                "timestamp": now_ms(),
            }
            messages.append(["execution_error", data])
            await self._send(sid, "execution_error", data)
        self.stats.cached_checkpoints = self._cached_checkpoints(graph, sigs)
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

    def _cached_checkpoints(self, graph: dict[str, Any], sigs: dict[str, str]) -> frozenset[str]:
        """The checkpoints of the graph's loaders whose output the cache holds."""
        return frozenset(
            str(node_inputs(graph[nid]).get("ckpt_name"))
            for nid in graph
            if graph[nid]["class_type"] in CHECKPOINT_LOADERS and sigs[nid] in self._cache
        )

    def unload(self) -> None:
        """Every model and cached output gone (POST /free, or the node's power lost): the next prompt loads anew."""
        self._cache.clear()
        self.vram.clear()
        self.stats.loaded_checkpoint = None
        self.stats.cached_checkpoints = frozenset()

    def _seconds_per_step(self, family: Family) -> float:
        speeds = self.sim.seconds_per_step
        if family in speeds:
            return speeds[family]
        # A node asked for a family it has no speed for runs it slowly rather than refusing it.
        return max(speeds.values(), default=1.0) * 3

    async def _swap_in(self, item: Queued, model: Model) -> None:
        """
        A checkpoint whose loader output the cache kept: the model objects exist, only their weights move back.

        ComfyUI offloads a model it has to make room for to CPU RAM (model management's `free_memory`) while the
        cache still references it; using it again moves the weights back to VRAM, no disk read. On a card with
        room for both (vram.py) nothing moves: the weights never left. The move takes checkpoint_swap_seconds.
        """
        ckpt = model.checkpoint
        item.record.checkpoint = ckpt
        if self.stats.loaded_checkpoint != ckpt and not self.vram.holds(ckpt):
            await self._sleep(self.sim.checkpoint_swap_seconds * self.time_scale)
            self.stats.checkpoint_swaps += 1
            item.record.checkpoint_swapped = True
        self.vram.use(ckpt)
        self.stats.loaded_checkpoint = ckpt

    async def _run_node(
        self, item: Queued, node_id: str, class_type: str, inputs: dict[str, Any], fault: str | None
    ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        scale = self.time_scale
        if class_type in CHECKPOINT_LOADERS:
            ckpt = str(inputs["ckpt_name"])
            item.record.checkpoint = ckpt
            if self.stats.loaded_checkpoint != ckpt:
                await self._sleep(self.sim.checkpoint_load_seconds * scale)
                self.stats.checkpoint_loads += 1
                item.record.checkpoint_loaded = True
                self.stats.loaded_checkpoint = ckpt
            self.vram.use(ckpt)
            model = Model(ckpt)
            return (model, model, ckpt), None
        if class_type == "LoraLoader":
            m: Model = inputs["model"]
            model = Model(m.checkpoint, (*m.loras, str(inputs["lora_name"])))
            return (model, model), None
        if class_type == "CLIPTextEncode":
            return (Cond(str(inputs["text"])),), None
        if class_type == "FluxGuidance":
            return (inputs["conditioning"],), None
        if class_type == "EmptyLatentImage":
            w, h = int(inputs["width"]) // 8 * 8, int(inputs["height"]) // 8 * 8
            return (Latent(w, h, int(inputs["batch_size"])),), None
        if class_type == "VAEEncode":
            images: tuple[Image.Image, ...] = tuple(inputs["pixels"])
            return (Latent(images[0].width // 8 * 8, images[0].height // 8 * 8, len(images), images),), None
        if class_type == "KSampler":
            return (await self._sample(item, node_id, inputs, fault),), None
        if class_type == "VAEDecode":
            return (await asyncio.to_thread(decode, inputs["samples"]),), None
        if class_type == "LoadImage":
            name = str(inputs["image"])
            data = self._input_names().get(name)
            if data is None:
                raise _NodeFailed(f"Invalid image file: {name}", "FileNotFoundError")
            try:
                img = await asyncio.to_thread(render.decode, data)
            except (OSError, ValueError) as e:
                raise _NodeFailed(f"cannot identify image file {name!r}: {e}", "PIL.UnidentifiedImageError") from None
            return ((img,), None), None
        if class_type == "ImageScale":
            w, h = int(inputs["width"]), int(inputs["height"])
            out = await asyncio.to_thread(lambda: tuple(render.resize(i, w, h) for i in inputs["image"]))
            return (out,), None
        if class_type == "UpscaleModelLoader":
            return (str(inputs["model_name"]),), None
        if class_type == "ImageUpscaleWithModel":
            # The resize stands in for the model's own work, so it runs inside the simulated time, not after it.
            work = asyncio.ensure_future(asyncio.to_thread(lambda: tuple(render.upscale(i) for i in inputs["image"])))
            try:
                await self._sleep(self.sim.upscale_seconds * scale)
            except _Interrupted:
                await asyncio.wait([work])
                raise
            return (await work,), None
        if class_type in ("SaveImage", "PreviewImage"):
            return (), {"images": await self._save(inputs, class_type == "PreviewImage")}
        raise _NodeFailed(f"the simulator cannot run {class_type}", "RuntimeError")

    async def _sample(self, item: Queued, node_id: str, inputs: dict[str, Any], fault: str | None) -> Latent:
        model: Model = inputs["model"]
        latent: Latent = inputs["latent_image"]
        steps, seed, denoise = int(inputs["steps"]), int(inputs["seed"]), float(inputs["denoise"])
        prompt = inputs["positive"].text
        # The session engine's rule; a checkpoint it cannot place runs at SD 1.5 speed.
        family = (guess_family(model.checkpoint) or Family.SD15).speed_family
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
                jpeg = await asyncio.to_thread(render.preview, prompt, seed, step, steps)
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
        pngs = await asyncio.to_thread(lambda: [render.encode_png(i) for i in images])
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
