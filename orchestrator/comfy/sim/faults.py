"""
The simulator's fault model.

The faults a node can be given (at start from its `sim.faults` block, or at runtime), the malformed WebSocket
frames it can send, and the bodies of a misbehaving GET /view.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image

from orchestrator.comfy.protocol import encode_preview
from orchestrator.comfy.sim import render
from orchestrator.config import SimFaults

OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 7.63 GiB of which 1.12 GiB is "
    "free. Of the allocated memory 5.89 GiB is allocated by PyTorch, and 402.31 MiB is reserved by PyTorch but "
    "unallocated."
)


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
        """The faults a node's `sim.faults` block sets at start."""
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
    return render.encode_jpeg(Image.new("RGB", (8, 8), (128, 128, 128)), 80)


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


#: chunk size of streamed /view bodies
_VIEW_CHUNK = 256 * 1024


async def oversize_body(total: int) -> AsyncIterator[bytes]:
    """A PNG-looking body of `total` bytes, made of one reused chunk (never held whole in memory)."""
    head = b"\x89PNG\r\n\x1a\n"
    filler = b"\x00" * _VIEW_CHUNK
    sent = 0
    while sent < total:
        chunk = head + filler[len(head) :] if sent == 0 else filler
        chunk = chunk[: total - sent]
        sent += len(chunk)
        yield chunk


async def drip_body(data: bytes, per_second: float) -> AsyncIterator[bytes]:
    """The body in small pieces at `per_second` bytes per second (real time: a slow link is not simulated work)."""
    piece = max(1, int(per_second / 20))
    for i in range(0, len(data), piece):
        chunk = data[i : i + piece]
        yield chunk
        await asyncio.sleep(len(chunk) / per_second)
