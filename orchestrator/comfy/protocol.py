"""
ComfyUI's wire format: TypedDicts of its payloads, parse functions to frozen dataclasses, request builders.

This is the only module where raw ComfyUI dicts exist; everything past it uses the dataclasses below.
Where ComfyUI versions differ (combo input shapes, status messages without prompt_id), both are accepted.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from orchestrator.errors import ComfyError, NodeErrorDetail, PromptRejected
from orchestrator.models import NodeModels

#: scalar input types of /object_info; any other type name is a link type such as MODEL or LATENT
SCALAR_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})

#: binary WebSocket event types (ComfyUI's BinaryEventTypes) and preview image formats
BINARY_PREVIEW_IMAGE = 1
IMAGE_FORMATS: dict[int, str] = {1: "image/jpeg", 2: "image/png"}


# --- raw payload shapes (what the server sends / expects) ---------------------------------------------------------


class ImageRefDict(TypedDict):
    filename: str
    subfolder: str
    type: str


class PromptRequestDict(TypedDict, total=False):
    prompt: dict[str, Any]
    client_id: str
    front: bool
    extra_data: dict[str, Any]


class ErrorDict(TypedDict):
    type: str
    message: str
    details: str
    extra_info: dict[str, Any]


class NodeErrorsDict(TypedDict):
    errors: list[ErrorDict]
    dependent_outputs: list[str]
    class_type: str


class RejectedDict(TypedDict):
    error: ErrorDict
    node_errors: dict[str, NodeErrorsDict]


class HistoryStatusDict(TypedDict):
    status_str: str
    completed: bool
    messages: list[list[Any]]


class HistoryItemDict(TypedDict, total=False):
    prompt: list[Any]
    outputs: dict[str, dict[str, list[ImageRefDict]]]
    status: HistoryStatusDict
    meta: dict[str, Any]


# --- parsed objects -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image a node holds, as named by ComfyUI (untrusted strings, never local paths)."""

    filename: str
    subfolder: str = ""
    type: str = "output"


@dataclass(frozen=True, slots=True)
class StatusMsg:
    """The queue length; broadcast to every socket when the queue changes."""

    queue_remaining: int
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionStart:
    """A prompt began executing."""

    prompt_id: str


@dataclass(frozen=True, slots=True)
class ExecutionCached:
    """Nodes of the prompt reused from the server's cache."""

    prompt_id: str
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Executing:
    """A node started; `node` None means the prompt is done."""

    prompt_id: str | None
    node: str | None


@dataclass(frozen=True, slots=True)
class ProgressMsg:
    """One sampler step (value counts 1..max); older servers omit prompt_id and node."""

    prompt_id: str | None
    node: str | None
    value: int
    max: int


@dataclass(frozen=True, slots=True)
class Executed:
    """An output node finished and produced these images."""

    prompt_id: str
    node: str
    images: tuple[ImageRef, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecutionSuccess:
    """The prompt finished successfully."""

    prompt_id: str


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """A node raised; exception_message is ComfyUI's text (may hold paths: do not show users verbatim)."""

    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_message: str
    exception_type: str


@dataclass(frozen=True, slots=True)
class ExecutionInterrupted:
    """The prompt was interrupted."""

    prompt_id: str
    node_id: str | None
    node_type: str | None


@dataclass(frozen=True, slots=True)
class PreviewFrame:
    """A live preview image (binary frame); it belongs to the prompt currently executing for the client."""

    image: bytes = field(repr=False)
    mime: str = "image/jpeg"


@dataclass(frozen=True, slots=True)
class UnknownMsg:
    """A message type we do not use (e.g. progress_state); safe to ignore."""

    type: str


WsMessage = (
    StatusMsg
    | ExecutionStart
    | ExecutionCached
    | Executing
    | ProgressMsg
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | PreviewFrame
    | UnknownMsg
)

#: what a PromptWatch yields
PromptEvent = (
    ExecutionStart
    | ExecutionCached
    | Executing
    | ProgressMsg
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | PreviewFrame
)

TerminalEvent = ExecutionSuccess | ExecutionError | ExecutionInterrupted


@dataclass(frozen=True, slots=True)
class PromptAccepted:
    """POST /prompt succeeded."""

    prompt_id: str
    number: int


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A finished prompt from /history."""

    prompt_id: str
    completed: bool
    status: str
    images: tuple[ImageRef, ...] = ()
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class QueueState:
    """Prompt ids running and waiting on a node (pending in run order)."""

    running: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input of a node class from /object_info."""

    name: str
    type: str
    required: bool
    options: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    is_link: bool = False


@dataclass(frozen=True, slots=True)
class NodeSchema:
    """A node class: its inputs (required and optional) and output types."""

    class_type: str
    inputs: Mapping[str, InputSpec]
    outputs: tuple[str, ...] = ()
    output_node: bool = False


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """The node classes a server knows."""

    nodes: Mapping[str, NodeSchema]

    def combo(self, class_type: str, input_name: str) -> tuple[str, ...]:
        """The options of a combo input, or () when the class or input is missing."""
        schema = self.nodes.get(class_type)
        spec = schema.inputs.get(input_name) if schema else None
        return spec.options or () if spec else ()

    def models(self) -> NodeModels:
        """The checkpoints, LoRAs and upscale models the node holds (from its loader combos)."""
        return NodeModels(
            checkpoints=self.combo("CheckpointLoaderSimple", "ckpt_name"),
            loras=self.combo("LoraLoader", "lora_name"),
            upscale_models=self.combo("UpscaleModelLoader", "model_name"),
        )

    def merged(self, other: ObjectInfo) -> ObjectInfo:
        """Both tables in one (other wins on a clash)."""
        return ObjectInfo(nodes={**self.nodes, **other.nodes})


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One GPU (or CPU) of a node."""

    name: str
    type: str
    vram_total: int
    vram_free: int


@dataclass(frozen=True, slots=True)
class SystemStats:
    """GET /system_stats."""

    comfyui_version: str | None
    devices: tuple[DeviceInfo, ...] = ()


# --- parsing ------------------------------------------------------------------------------------------------------


def _malformed(what: str, body: Any) -> ComfyError:
    return ComfyError(f"malformed {what} from ComfyUI: {str(body)[:200]}")


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def parse_image_ref(raw: Any) -> ImageRef:
    """One {"filename", "subfolder", "type"} dict."""
    if not isinstance(raw, dict) or not isinstance(raw.get("filename"), str):
        raise _malformed("image reference", raw)
    return ImageRef(
        filename=raw["filename"], subfolder=str(raw.get("subfolder") or ""), type=str(raw.get("type") or "output")
    )


def _images(output: Any) -> tuple[ImageRef, ...]:
    if not isinstance(output, dict):
        return ()
    raw = output.get("images")
    if not isinstance(raw, list):
        return ()
    return tuple(parse_image_ref(i) for i in raw)


def parse_ws_text(text: str) -> WsMessage:
    """One JSON text frame; unknown types become UnknownMsg, a malformed known type raises ComfyError."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise _malformed("WebSocket message", text) from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise _malformed("WebSocket message", text)
    kind: str = msg["type"]
    data = msg.get("data")
    if not isinstance(data, dict):
        data = {}
    try:
        return _parse_ws_data(kind, data)
    except (KeyError, TypeError, ValueError):
        raise _malformed(f"{kind} message", text) from None


def _parse_ws_data(kind: str, data: dict[str, Any]) -> WsMessage:
    pid = _str_or_none(data.get("prompt_id"))
    if kind == "status":
        exec_info = (data.get("status") or {}).get("exec_info") or {}
        return StatusMsg(queue_remaining=int(exec_info.get("queue_remaining", 0)), sid=_str_or_none(data.get("sid")))
    if kind == "executing":
        return Executing(prompt_id=pid, node=_str_or_none(data.get("node")))
    if kind == "progress":
        return ProgressMsg(
            prompt_id=pid, node=_str_or_none(data.get("node")), value=int(data["value"]), max=int(data["max"])
        )
    if kind == "execution_start":
        return ExecutionStart(prompt_id=str(data["prompt_id"]))
    if kind == "execution_cached":
        return ExecutionCached(prompt_id=str(data["prompt_id"]), nodes=tuple(str(n) for n in data.get("nodes") or ()))
    if kind == "executed":
        return Executed(prompt_id=str(data["prompt_id"]), node=str(data["node"]), images=_images(data.get("output")))
    if kind == "execution_success":
        return ExecutionSuccess(prompt_id=str(data["prompt_id"]))
    if kind == "execution_error":
        return ExecutionError(
            prompt_id=str(data["prompt_id"]),
            node_id=_str_or_none(data.get("node_id")),
            node_type=_str_or_none(data.get("node_type")),
            exception_message=str(data.get("exception_message") or "").strip(),
            exception_type=str(data.get("exception_type") or ""),
        )
    if kind == "execution_interrupted":
        return ExecutionInterrupted(
            prompt_id=str(data["prompt_id"]),
            node_id=_str_or_none(data.get("node_id")),
            node_type=_str_or_none(data.get("node_type")),
        )
    return UnknownMsg(type=kind)


def parse_ws_binary(data: bytes) -> PreviewFrame | None:
    """A binary frame: a preview image, or None for event types we do not use."""
    if len(data) < 8:
        return None
    (event,) = struct.unpack(">I", data[:4])
    if event != BINARY_PREVIEW_IMAGE:
        return None
    (fmt,) = struct.unpack(">I", data[4:8])
    mime = IMAGE_FORMATS.get(fmt)
    if mime is None:
        return None
    return PreviewFrame(image=bytes(data[8:]), mime=mime)


def encode_preview(image: bytes, mime: str = "image/jpeg") -> bytes:
    """A preview binary frame as ComfyUI sends it (event type, image format, bytes)."""
    fmt = next(k for k, v in IMAGE_FORMATS.items() if v == mime)
    return struct.pack(">II", BINARY_PREVIEW_IMAGE, fmt) + image


def _node_error_details(node_errors: Any) -> tuple[NodeErrorDetail, ...]:
    out: list[NodeErrorDetail] = []
    if not isinstance(node_errors, dict):
        return ()
    for node_id, entry in node_errors.items():
        if not isinstance(entry, dict):
            continue
        class_type = str(entry.get("class_type") or "")
        for err in entry.get("errors") or ():
            if not isinstance(err, dict):
                continue
            raw_extra = err.get("extra_info")
            extra: dict[str, Any] = raw_extra if isinstance(raw_extra, dict) else {}
            out.append(
                NodeErrorDetail(
                    node_id=str(node_id),
                    class_type=class_type,
                    type=str(err.get("type") or ""),
                    message=str(err.get("message") or ""),
                    details=str(err.get("details") or ""),
                    input_name=_str_or_none(extra.get("input_name")),
                )
            )
    return tuple(out)


def parse_prompt_response(status: int, body: Any) -> PromptAccepted:
    """The answer to POST /prompt; a 400 raises PromptRejected with ComfyUI's own error and node errors."""
    if status == 200 and isinstance(body, dict) and isinstance(body.get("prompt_id"), str):
        return PromptAccepted(prompt_id=body["prompt_id"], number=int(body.get("number") or 0))
    if status == 400 and isinstance(body, dict) and "error" in body:
        err = body["error"]
        details = _node_error_details(body.get("node_errors"))
        if isinstance(err, dict):
            raise PromptRejected(str(err.get("type") or "error"), str(err.get("message") or ""), details)
        # Older servers answer {"error": "no prompt", "node_errors": []}.
        raise PromptRejected("error", str(err), details)
    raise _malformed(f"POST /prompt answer (HTTP {status})", body)


def history_error_message(messages: Any) -> str | None:
    """The exception text of an execution_error in a history entry's status messages."""
    if not isinstance(messages, list):
        return None
    for m in messages:
        if not (isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)):
            continue
        if m[0] == "execution_error":
            return str(m[1].get("exception_message") or "execution error").strip()
        if m[0] == "execution_interrupted":
            return "interrupted"
    return None


def parse_history(body: Any, prompt_id: str) -> HistoryEntry | None:
    """GET /history/{id}: None while the prompt has not finished (the server answers {})."""
    if not isinstance(body, dict):
        raise _malformed("history", body)
    item = body.get(prompt_id)
    if item is None:
        return None
    if not isinstance(item, dict):
        raise _malformed("history entry", item)
    outputs = item.get("outputs") or {}
    images: list[ImageRef] = []
    if isinstance(outputs, dict):
        for out in outputs.values():
            images.extend(_images(out))
    status = item.get("status")
    if isinstance(status, dict):
        status_str = str(status.get("status_str") or "success")
        completed = bool(status.get("completed", status_str == "success"))
        error = history_error_message(status.get("messages"))
    else:
        # Servers before the status field existed only wrote history for finished prompts.
        status_str, completed, error = "success", True, None
    if status_str != "success" and error is None:
        error = f"the prompt ended with status {status_str}"
    return HistoryEntry(
        prompt_id=prompt_id, completed=completed, status=status_str, images=tuple(images), error_message=error
    )


def _queue_ids(items: Any) -> tuple[str, ...]:
    if not isinstance(items, list):
        return ()
    rows = [i for i in items if isinstance(i, list) and len(i) >= 2]
    rows.sort(key=lambda r: r[0] if isinstance(r[0], (int, float)) else 0)
    return tuple(str(r[1]) for r in rows)


def parse_queue(body: Any) -> QueueState:
    """GET /queue: prompt ids running and pending (pending sorted by queue number, i.e. run order)."""
    if not isinstance(body, dict):
        raise _malformed("queue", body)
    return QueueState(running=_queue_ids(body.get("queue_running")), pending=_queue_ids(body.get("queue_pending")))


def _number(v: Any) -> float | None:
    # ints stay ints: a seed bound of 2**64-1 is not exact as a float
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def parse_input_spec(name: str, raw: Any, *, required: bool) -> InputSpec:
    """One input spec: `[[options], {...}]` (old combo), `["COMBO", {"options": [...]}]` (new), `["INT", {...}]`..."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise _malformed(f"input spec {name}", raw)
    head = raw[0]
    opts = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(head, list):
        return InputSpec(name=name, type="COMBO", required=required, options=tuple(str(o) for o in head))
    kind = str(head)
    if kind == "COMBO":
        options = opts.get("options")
        return InputSpec(
            name=name,
            type="COMBO",
            required=required,
            options=tuple(str(o) for o in options) if isinstance(options, list) else (),
        )
    if kind in ("INT", "FLOAT"):
        return InputSpec(
            name=name, type=kind, required=required, min=_number(opts.get("min")), max=_number(opts.get("max"))
        )
    return InputSpec(name=name, type=kind, required=required, is_link=kind not in SCALAR_TYPES)


def parse_node_schema(class_type: str, raw: Any) -> NodeSchema:
    """One class of /object_info."""
    if not isinstance(raw, dict):
        raise _malformed(f"object_info for {class_type}", raw)
    inputs: dict[str, InputSpec] = {}
    section = raw.get("input") or {}
    for group, required in (("required", True), ("optional", False)):
        specs = section.get(group) or {}
        if isinstance(specs, dict):
            for name, spec in specs.items():
                inputs[name] = parse_input_spec(name, spec, required=required)
    outputs = raw.get("output") or []
    return NodeSchema(
        class_type=class_type,
        inputs=inputs,
        outputs=tuple(str(o) if not isinstance(o, list) else "COMBO" for o in outputs),
        output_node=bool(raw.get("output_node", False)),
    )


def parse_object_info(body: Any) -> ObjectInfo:
    """GET /object_info or /object_info/{class} (an unknown class gives an empty table)."""
    if not isinstance(body, dict):
        raise _malformed("object_info", body)
    return ObjectInfo(nodes={name: parse_node_schema(name, raw) for name, raw in body.items()})


def parse_system_stats(body: Any) -> SystemStats:
    """GET /system_stats."""
    if not isinstance(body, dict):
        raise _malformed("system_stats", body)
    raw_system = body.get("system")
    system: dict[str, Any] = raw_system if isinstance(raw_system, dict) else {}
    devices: list[DeviceInfo] = []
    for d in body.get("devices") or ():
        if isinstance(d, dict):
            devices.append(
                DeviceInfo(
                    name=str(d.get("name") or ""),
                    type=str(d.get("type") or ""),
                    vram_total=int(d.get("vram_total") or 0),
                    vram_free=int(d.get("vram_free") or 0),
                )
            )
    return SystemStats(comfyui_version=_str_or_none(system.get("comfyui_version")), devices=tuple(devices))


def parse_upload_response(body: Any) -> str:
    """POST /upload/image: the name to put in LoadImage.image (with its subfolder, as ComfyUI expects)."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise _malformed("upload answer", body)
    subfolder = str(body.get("subfolder") or "")
    return f"{subfolder}/{body['name']}" if subfolder else body["name"]


# --- request builders ---------------------------------------------------------------------------------------------


def build_prompt_request(graph: dict[str, Any], client_id: str, *, front: bool = False) -> PromptRequestDict:
    """The body of POST /prompt."""
    body: PromptRequestDict = {"prompt": graph, "client_id": client_id}
    if front:
        body["front"] = True
    return body


def build_interrupt_request(prompt_id: str | None) -> dict[str, str]:
    """The body of POST /interrupt (newer servers stop only the named prompt)."""
    return {"prompt_id": prompt_id} if prompt_id else {}


def build_queue_delete(prompt_ids: list[str]) -> dict[str, list[str]]:
    """The body of POST /queue that removes pending prompts."""
    return {"delete": prompt_ids}


def build_free_request(*, unload_models: bool, free_memory: bool) -> dict[str, bool]:
    """The body of POST /free."""
    return {"unload_models": unload_models, "free_memory": free_memory}


def image_ref_params(ref: ImageRef) -> dict[str, str]:
    """Query parameters of GET /view for an image."""
    return {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
