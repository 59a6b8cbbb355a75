"""
Parsing ComfyUI's answers: raw JSON and WebSocket frames to the frozen dataclasses of protocol.py.

Every public parse function raises ComfyError (or its documented subclass) and nothing else, whatever it is given.
Where ComfyUI versions differ (combo input shapes, status messages without prompt_id), both are accepted.
"""

from __future__ import annotations

import contextlib
import json
import math
import reprlib
import struct
from collections.abc import Mapping
from typing import Any

from orchestrator.comfy.protocol import (
    BINARY_PREVIEW_IMAGE,
    IMAGE_FORMATS,
    SCALAR_TYPES,
    DeviceInfo,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    HistoryEntry,
    ImageRef,
    InputSpec,
    NodeSchema,
    ObjectInfo,
    PreviewFrame,
    ProgressMsg,
    PromptAccepted,
    QueueState,
    StatusMsg,
    SystemStats,
    UnknownMsg,
    ViewHeaders,
    WsMessage,
)
from orchestrator.errors import ComfyError, NodeErrorDetail, PromptRejected

# --- parsing ------------------------------------------------------------------------------------------------------
#
# Every public parse function raises ComfyError (or its documented subclass) and nothing else, whatever it is given:
# a node is a peer we do not control, and one odd payload must never end the loop that reads it. Types are checked,
# not trusted; numbers must be finite; ids must be strings.

#: excerpts of bad payloads in error messages: short, and safe on deeply nested values
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel = 3
_EXCERPT.maxstring = 160
_EXCERPT.maxother = 160
_EXCERPT.maxlist = 6
_EXCERPT.maxdict = 6

#: what a complete preview image starts and ends with, per format (a cut-off frame lacks its end marker)
_IMAGE_MARKERS: dict[str, tuple[bytes, bytes]] = {
    "image/jpeg": (b"\xff\xd8", b"\xff\xd9"),
    "image/png": (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"),
}


class _Bad(ValueError):
    """A field of a payload has the wrong type or value; public functions turn it into ComfyError."""


def excerpt(body: Any) -> str:
    """A short, printable excerpt of any payload (bounded in size and depth)."""
    if isinstance(body, (str, bytes, bytearray)):
        return repr(bytes(body[:160]) if not isinstance(body, str) else body[:160])
    try:
        return _EXCERPT.repr(body)
    except Exception:
        return f"<{type(body).__name__}>"


def _malformed(what: str, body: Any, why: str = "") -> ComfyError:
    reason = f" ({why})" if why else ""
    return ComfyError(f"malformed {what} from ComfyUI{reason}: {excerpt(body)}")


def _id(v: Any, what: str) -> str:
    """A prompt or node id: a string (node ids may come as integers from older servers)."""
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise _Bad(f"{what} is not an id: {excerpt(v)}")


def _opt_id(v: Any, what: str) -> str | None:
    return None if v is None else _id(v, what)


def _whole(v: Any, what: str) -> int:
    """A whole number: an int, or a finite float without a fraction (JSON writers differ)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    raise _Bad(f"{what} is not a whole number: {excerpt(v)}")


def _text(v: Any, default: str = "") -> str:
    """Free text (messages, names): scalars as text, anything else as a bounded excerpt, never an error."""
    if v is None:
        return default
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float, bool)):
        return str(v)
    return excerpt(v)


def _opt_text(v: Any) -> str | None:
    return None if v is None else _text(v)


def _dict(v: Any, what: str, *, missing_ok: bool = True) -> dict[str, Any]:
    if v is None and missing_ok:
        return {}
    if not isinstance(v, dict):
        raise _Bad(f"{what} is not an object: {excerpt(v)}")
    return v


def _list(v: Any, what: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise _Bad(f"{what} is not a list: {excerpt(v)}")
    return v


def loads_json(text: str | bytes) -> Any:
    """JSON from a node; ComfyError for anything that is not JSON (nesting too deep for Python included)."""
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError) as e:
        why = "nested too deep" if isinstance(e, RecursionError) else "not JSON"
        raise _malformed("message", text, why) from None


def parse_image_ref(raw: Any) -> ImageRef:
    """One {"filename", "subfolder", "type"} dict."""
    if not isinstance(raw, dict) or not isinstance(raw.get("filename"), str) or not raw["filename"]:
        raise _malformed("image reference", raw)
    subfolder, kind = raw.get("subfolder"), raw.get("type")
    if not isinstance(subfolder, (str, type(None))) or not isinstance(kind, (str, type(None))):
        raise _malformed("image reference", raw)
    return ImageRef(filename=raw["filename"], subfolder=subfolder or "", type=kind or "output")


def _images(output: Any) -> tuple[ImageRef, ...]:
    if not isinstance(output, dict):
        return ()
    raw = output.get("images")
    if not isinstance(raw, list):
        return ()
    return tuple(parse_image_ref(i) for i in raw)


def parse_ws_text(text: str) -> WsMessage:
    """One JSON text frame; unknown types become UnknownMsg, anything malformed raises ComfyError."""
    msg = loads_json(text)
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise _malformed("WebSocket message", text, "no type")
    kind: str = msg["type"]
    try:
        return _parse_ws_data(kind, msg.get("data"))
    except _Bad as e:
        raise _malformed(f"{kind} message", text, str(e)) from None


def _parse_ws_data(kind: str, raw: Any) -> WsMessage:
    if kind not in _KNOWN_WS_TYPES:
        return UnknownMsg(type=kind)
    data = _dict(raw, "data", missing_ok=kind == "status")
    if kind == "status":
        status = _dict(data.get("status"), "status")
        exec_info = _dict(status.get("exec_info"), "exec_info")
        return StatusMsg(
            queue_remaining=_whole(exec_info.get("queue_remaining", 0), "queue_remaining"),
            sid=_opt_id(data.get("sid"), "sid"),
        )
    pid = _opt_id(data.get("prompt_id"), "prompt_id")
    if kind == "executing":
        if "node" not in data:
            raise _Bad("no node")
        return Executing(prompt_id=pid, node=_opt_id(data["node"], "node"))
    if kind == "progress":
        value, top = _whole(data.get("value"), "value"), _whole(data.get("max"), "max")
        if value < 0 or top < 0:
            raise _Bad("negative progress")
        return ProgressMsg(prompt_id=pid, node=_opt_id(data.get("node"), "node"), value=value, max=top)
    if pid is None:
        raise _Bad("no prompt_id")
    if kind == "execution_start":
        return ExecutionStart(prompt_id=pid)
    if kind == "execution_cached":
        nodes = tuple(_id(n, "cached node") for n in _list(data.get("nodes"), "nodes"))
        return ExecutionCached(prompt_id=pid, nodes=nodes)
    if kind == "executed":
        try:
            images = _images(data.get("output"))
        except ComfyError as e:
            raise _Bad(str(e)) from None
        return Executed(prompt_id=pid, node=_id(data.get("node"), "node"), images=images)
    if kind == "execution_success":
        return ExecutionSuccess(prompt_id=pid)
    if kind == "execution_error":
        return ExecutionError(
            prompt_id=pid,
            node_id=_opt_text(data.get("node_id")),
            node_type=_opt_text(data.get("node_type")),
            exception_message=_text(data.get("exception_message")).strip(),
            exception_type=_text(data.get("exception_type")),
        )
    return ExecutionInterrupted(
        prompt_id=pid, node_id=_opt_text(data.get("node_id")), node_type=_opt_text(data.get("node_type"))
    )


_KNOWN_WS_TYPES = frozenset(
    {
        "status",
        "executing",
        "progress",
        "execution_start",
        "execution_cached",
        "executed",
        "execution_success",
        "execution_error",
        "execution_interrupted",
    }
)


def parse_ws_binary(data: bytes) -> PreviewFrame | None:
    """
    A binary frame: a preview image, or None for event types and formats we do not use.

    A frame too short for its header, or a preview whose image is cut off or is not of its stated format,
    raises ComfyError.
    """
    if len(data) < 4:
        raise _malformed("binary frame", data, "shorter than its header")
    (event,) = struct.unpack(">I", data[:4])
    if event != BINARY_PREVIEW_IMAGE:
        return None
    if len(data) < 8:
        raise _malformed("preview frame", data, "shorter than its header")
    (fmt,) = struct.unpack(">I", data[4:8])
    mime = IMAGE_FORMATS.get(fmt)
    if mime is None:
        return None
    image = bytes(data[8:])
    head, tail = _IMAGE_MARKERS[mime]
    if len(image) < len(head) + len(tail) or not image.startswith(head) or not image.endswith(tail):
        raise _malformed("preview frame", data[:24], f"not a complete {mime.removeprefix('image/')} image")
    return PreviewFrame(image=image, mime=mime)


def _node_error_details(node_errors: Any) -> tuple[NodeErrorDetail, ...]:
    out: list[NodeErrorDetail] = []
    if not isinstance(node_errors, dict):
        return ()
    for node_id, entry in node_errors.items():
        if not isinstance(entry, dict):
            continue
        class_type = _text(entry.get("class_type"))
        errors = entry.get("errors")
        for err in errors if isinstance(errors, list) else ():
            if not isinstance(err, dict):
                continue
            raw_extra = err.get("extra_info")
            extra: dict[str, Any] = raw_extra if isinstance(raw_extra, dict) else {}
            out.append(
                NodeErrorDetail(
                    node_id=str(node_id),
                    class_type=class_type,
                    type=_text(err.get("type")),
                    message=_text(err.get("message")),
                    details=_text(err.get("details")),
                    input_name=_opt_text(extra.get("input_name")),
                )
            )
    return tuple(out)


def parse_prompt_response(status: int, body: Any) -> PromptAccepted:
    """The answer to POST /prompt; a 400 raises PromptRejected with ComfyUI's own error and node errors."""
    if status == 200 and isinstance(body, dict) and isinstance(body.get("prompt_id"), str) and body["prompt_id"]:
        try:
            number = _whole(body.get("number") or 0, "number")
        except _Bad:
            number = 0  # only informational; the prompt was accepted
        return PromptAccepted(prompt_id=body["prompt_id"], number=number)
    if status == 400 and isinstance(body, dict) and "error" in body:
        err = body["error"]
        details = _node_error_details(body.get("node_errors"))
        if isinstance(err, dict):
            raise PromptRejected(_text(err.get("type")) or "error", _text(err.get("message")), details)
        # Older servers answer {"error": "no prompt", "node_errors": []}.
        raise PromptRejected("error", _text(err), details)
    raise _malformed(f"POST /prompt answer (HTTP {status})", body)


def history_error_message(messages: Any) -> str | None:
    """The exception text of an execution_error in a history entry's status messages."""
    if not isinstance(messages, list):
        return None
    for m in messages:
        if not (isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)):
            continue
        if m[0] == "execution_error":
            return _text(m[1].get("exception_message")).strip() or "execution error"
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
    outputs = item.get("outputs")
    images: list[ImageRef] = []
    if isinstance(outputs, dict):
        for out in outputs.values():
            images.extend(_images(out))
    status = item.get("status")
    if isinstance(status, dict):
        raw_str = status.get("status_str")
        status_str = raw_str if isinstance(raw_str, str) and raw_str else "success"
        completed = status.get("completed", status_str == "success")
        if not isinstance(completed, bool):
            raise _malformed("history status", status, "completed is not true or false")
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
    rows = [i for i in items if isinstance(i, list) and len(i) >= 2 and isinstance(i[1], str)]

    def number(row: list[Any]) -> float:
        n = row[0]
        return n if isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) else 0

    rows.sort(key=number)
    return tuple(r[1] for r in rows)


def parse_queue(body: Any) -> QueueState:
    """GET /queue: prompt ids running and pending (pending sorted by queue number, i.e. run order)."""
    if not isinstance(body, dict):
        raise _malformed("queue", body)
    return QueueState(running=_queue_ids(body.get("queue_running")), pending=_queue_ids(body.get("queue_pending")))


def _number(v: Any) -> float | None:
    # ints stay ints: a seed bound of 2**64-1 is not exact as a float
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) else None


def _options(raw: Any) -> tuple[str, ...]:
    # Combo options are names (some custom nodes list numbers); anything else cannot be chosen in a graph.
    if not isinstance(raw, list):
        return ()
    return tuple(_text(o) for o in raw if isinstance(o, (str, int, float)) and not isinstance(o, bool))


def parse_input_spec(name: str, raw: Any, *, required: bool) -> InputSpec:
    """One input spec: `[[options], {...}]` (old combo), `["COMBO", {"options": [...]}]` (new), `["INT", {...}]`..."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise _malformed(f"input spec {name}", raw)
    head = raw[0]
    opts = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(head, list):
        return InputSpec(name=name, type="COMBO", required=required, options=_options(head))
    if not isinstance(head, str):
        raise _malformed(f"input spec {name}", raw)
    if head == "COMBO":
        return InputSpec(name=name, type="COMBO", required=required, options=_options(opts.get("options")))
    if head in ("INT", "FLOAT"):
        return InputSpec(
            name=name, type=head, required=required, min=_number(opts.get("min")), max=_number(opts.get("max"))
        )
    return InputSpec(name=name, type=head, required=required, is_link=head not in SCALAR_TYPES)


def parse_node_schema(class_type: str, raw: Any) -> NodeSchema:
    """One class of /object_info."""
    if not isinstance(raw, dict):
        raise _malformed(f"object_info for {class_type}", raw)
    inputs: dict[str, InputSpec] = {}
    section = raw.get("input")
    if not isinstance(section, dict):
        section = {}
    for group, required in (("required", True), ("optional", False)):
        specs = section.get(group)
        if isinstance(specs, dict):
            for name, spec in specs.items():
                inputs[str(name)] = parse_input_spec(str(name), spec, required=required)
    outputs = raw.get("output")
    return NodeSchema(
        class_type=class_type,
        inputs=inputs,
        outputs=tuple("COMBO" if isinstance(o, list) else _text(o) for o in outputs)
        if isinstance(outputs, list)
        else (),
        output_node=raw.get("output_node") is True,
    )


def parse_object_info(body: Any) -> ObjectInfo:
    """
    GET /object_info or /object_info/{class} (an unknown class gives an empty table).

    A class whose own entry is malformed (a broken custom node) is left out rather than failing the whole table:
    the node can still run every graph that does not use it.
    """
    if not isinstance(body, dict):
        raise _malformed("object_info", body)
    nodes: dict[str, NodeSchema] = {}
    for name, raw in body.items():
        with contextlib.suppress(ComfyError):
            nodes[str(name)] = parse_node_schema(str(name), raw)
    return ObjectInfo(nodes=nodes)


def parse_system_stats(body: Any) -> SystemStats:
    """GET /system_stats; a device with a non-numeric VRAM size (say "16 GB") makes the answer malformed."""
    if not isinstance(body, dict):
        raise _malformed("system_stats", body)
    raw_system = body.get("system")
    system: dict[str, Any] = raw_system if isinstance(raw_system, dict) else {}
    devices: list[DeviceInfo] = []
    try:
        for d in _list(body.get("devices"), "devices"):
            if isinstance(d, dict):
                devices.append(
                    DeviceInfo(
                        name=_text(d.get("name")),
                        type=_text(d.get("type")),
                        vram_total=_whole(d.get("vram_total") or 0, "vram_total"),
                        vram_free=_whole(d.get("vram_free") or 0, "vram_free"),
                    )
                )
    except _Bad as e:
        raise _malformed("system_stats", body, str(e)) from None
    return SystemStats(comfyui_version=_opt_text(system.get("comfyui_version")), devices=tuple(devices))


def parse_upload_response(body: Any) -> str:
    """POST /upload/image: the name to put in LoadImage.image (with its subfolder, as ComfyUI expects)."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
        raise _malformed("upload answer", body)
    subfolder = body.get("subfolder")
    if not isinstance(subfolder, (str, type(None))):
        raise _malformed("upload answer", body, "subfolder is not text")
    return f"{subfolder}/{body['name']}" if subfolder else body["name"]


def parse_view_headers(headers: Mapping[str, str]) -> ViewHeaders:
    """The Content-Type and Content-Length of a GET /view answer; a length that is not a number is malformed."""
    raw_length = headers.get("content-length")
    length: int | None = None
    if raw_length is not None:
        text = raw_length.strip()
        # httpx joins repeated headers with ", "; equal copies are harmless, different ones are a broken answer.
        values = {v.strip() for v in text.split(",")}
        if len(values) != 1:
            raise _malformed("Content-Length", raw_length, "conflicting values")
        value = values.pop()
        if not value.isascii() or not value.isdigit() or len(value) > 20:
            raise _malformed("Content-Length", raw_length)
        length = int(value)
    ctype = headers.get("content-type")
    mime = ctype.split(";", 1)[0].strip().lower() if ctype is not None else None
    return ViewHeaders(content_type=mime or None, length=length)


#: what an image file starts with, for the formats SaveImage and its relatives write
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def looks_like_image(data: bytes) -> bool:
    """True when the bytes start like a PNG, JPEG, WEBP or GIF file (a cheap check before decoding)."""
    if data.startswith(_IMAGE_SIGNATURES):
        return True
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"
