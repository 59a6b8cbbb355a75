"""
ComfyUI's wire format: TypedDicts of its payloads, the frozen dataclasses they parse to, request builders.

Raw ComfyUI dicts exist only here, in parsing.py (which turns answers into the dataclasses below) and in the
simulator (the server side); everything past them uses the dataclasses.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from orchestrator.models import NodeModels

#: scalar input types of /object_info; any other type name is a link type such as MODEL or LATENT
SCALAR_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})

#: binary WebSocket event types (ComfyUI's BinaryEventTypes) and preview image formats
BINARY_PREVIEW_IMAGE = 1
IMAGE_FORMATS: dict[int, str] = {1: "image/jpeg", 2: "image/png"}


# --- raw payload shapes (what the server sends / expects) ---------------------------------------------------------


class ImageRefDict(TypedDict):
    """An image of a node's output: what GET /view takes back."""

    filename: str
    subfolder: str
    type: str


class PromptRequestDict(TypedDict, total=False):
    """The body of POST /prompt."""

    prompt: dict[str, Any]
    client_id: str
    front: bool
    extra_data: dict[str, Any]


class ErrorDict(TypedDict):
    """One error of a rejected prompt (ComfyUI's validation error shape)."""

    type: str
    message: str
    details: str
    extra_info: dict[str, Any]


class NodeErrorsDict(TypedDict):
    """The errors of one node of a rejected prompt."""

    errors: list[ErrorDict]
    dependent_outputs: list[str]
    class_type: str


class RejectedDict(TypedDict):
    """The 400 body of POST /prompt for a graph that failed validation."""

    error: ErrorDict
    node_errors: dict[str, NodeErrorsDict]


class HistoryStatusDict(TypedDict):
    """How a prompt in /history ended, with its execution messages."""

    status_str: str
    completed: bool
    messages: list[list[Any]]


class HistoryItemDict(TypedDict, total=False):
    """One prompt in /history: its queue row, outputs and status."""

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


@dataclass(frozen=True, slots=True)
class ViewHeaders:
    """What the headers of a GET /view answer say about its body."""

    content_type: str | None
    #: the announced body size, or None for a chunked body
    length: int | None


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


def encode_preview(image: bytes, mime: str = "image/jpeg") -> bytes:
    """A preview binary frame as ComfyUI sends it (event type, image format, bytes)."""
    fmt = next(k for k, v in IMAGE_FORMATS.items() if v == mime)
    return struct.pack(">II", BINARY_PREVIEW_IMAGE, fmt) + image
