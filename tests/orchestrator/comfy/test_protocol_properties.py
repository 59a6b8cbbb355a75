"""Property tests: no payload a node can send makes a parser raise anything but its documented error.

Every parser of node data gets arbitrary JSON (NaN and Infinity included, deep nesting, wrong types anywhere) and
arbitrary bytes, both as free-form values and shaped like the real payload with random values in its fields, so
that the checks deep inside each parser are reached. Derandomized and capped so the file runs in a few seconds.
"""

from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, given, settings, strategies as st

from orchestrator.comfy.parsing import (
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
from orchestrator.comfy.protocol import (
    HistoryEntry,
    ImageRef,
    ObjectInfo,
    PreviewFrame,
    PromptAccepted,
    QueueState,
    SystemStats,
    ViewHeaders,
    image_ref_params,
)
from orchestrator.errors import ComfyError, PromptRejected

FAST = settings(
    max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
#: any JSON value (with NaN/Infinity, which Python's json reads and writes)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def fields(*names: str) -> st.SearchStrategy[dict]:
    """Objects with some of the given keys (and a stray one), each holding any JSON value."""
    return st.dictionaries(st.sampled_from([*names, "zz"]), json_values, max_size=len(names) + 1)


def deep(value: str = "") -> st.SearchStrategy[str]:
    """JSON nested deeper than Python's json module can parse (or just short of it)."""
    return st.integers(min_value=1, max_value=12_000).map(lambda n: "[" * n + value + "]" * n)


WS_TYPES = [
    "status",
    "executing",
    "progress",
    "execution_start",
    "execution_cached",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
    "progress_state",
]
ws_data = fields(
    "prompt_id",
    "node",
    "value",
    "max",
    "status",
    "sid",
    "nodes",
    "output",
    "node_id",
    "node_type",
    "exception_message",
    "exception_type",
)
shaped_ws = st.builds(
    lambda kind, data, status: {"type": kind, "data": {**data, **status}},
    st.sampled_from(WS_TYPES),
    ws_data,
    st.fixed_dictionaries({"status": fields("exec_info")}) | st.just({}),
)
image_refs = fields("filename", "subfolder", "type")
outputs = st.dictionaries(st.text(max_size=3), st.fixed_dictionaries({"images": st.lists(image_refs, max_size=3)}))


def expect(fn, *args, documented=ComfyError):
    """Call a parser: it returns, or raises the documented error; anything else fails the property."""
    try:
        return fn(*args)
    except documented:
        return None


@FAST
@given(st.one_of(json_values.map(lambda v: json.dumps(v)), shaped_ws.map(json.dumps), st.text(), deep()))
def test_ws_text_frames_raise_only_comfy_error(frame):
    msg = expect(parse_ws_text, frame)
    assert msg is None or type(msg).__module__ == "orchestrator.comfy.protocol"


@FAST
@given(
    shaped_ws.map(lambda m: {**m, "data": {**m["data"], "output": {"images": [{"filename": 1}]}}}).map(json.dumps)
    | st.sampled_from(WS_TYPES).flatmap(
        lambda kind: deep().map(lambda nest: f'{{"type": "{kind}", "data": {{"prompt_id": "p", "node": {nest}}}}}')
    )
)
def test_ws_text_frames_with_bad_images_or_deep_fields(frame):
    expect(parse_ws_text, frame)


@FAST
@given(
    st.binary(max_size=64)
    | st.builds(
        lambda event, fmt, body: struct.pack(">II", event, fmt) + body,
        st.integers(0, 5),
        st.integers(0, 4),
        st.binary(max_size=64),
    )
    | st.builds(lambda body: struct.pack(">II", 1, 1) + b"\xff\xd8" + body + b"\xff\xd9", st.binary(max_size=32))
)
def test_ws_binary_frames_raise_only_comfy_error(frame):
    msg = expect(parse_ws_binary, frame)
    assert msg is None or isinstance(msg, PreviewFrame)


history_items = st.fixed_dictionaries(
    {},
    optional={
        "outputs": outputs | json_values,
        "status": fields("status_str", "completed", "messages")
        | st.fixed_dictionaries(
            {
                "status_str": st.sampled_from(["success", "error"]) | json_values,
                "messages": st.lists(st.tuples(st.sampled_from(["execution_error", "x"]), fields("exception_message"))),
            }
        ).map(lambda d: {**d, "messages": [list(m) for m in d["messages"]]}),
        "prompt": json_values,
    },
)


@FAST
@given(json_values | st.dictionaries(st.just("p"), history_items | json_values))
def test_history_raises_only_comfy_error(body):
    entry = expect(parse_history, body, "p")
    assert entry is None or isinstance(entry, HistoryEntry)


queue_rows = st.lists(st.lists(json_values, max_size=5) | json_values, max_size=4)


@FAST
@given(json_values | st.fixed_dictionaries({}, optional={"queue_running": queue_rows, "queue_pending": queue_rows}))
def test_queue_raises_only_comfy_error(body):
    q = expect(parse_queue, body)
    assert q is None or (isinstance(q, QueueState) and all(isinstance(p, str) for p in q.pending))


devices = st.lists(fields("name", "type", "vram_total", "vram_free") | json_values, max_size=3)


@FAST
@given(
    json_values
    | st.fixed_dictionaries({}, optional={"system": fields("comfyui_version") | json_values, "devices": devices})
)
def test_system_stats_raises_only_comfy_error(body):
    stats = expect(parse_system_stats, body)
    assert stats is None or (
        isinstance(stats, SystemStats) and all(isinstance(d.vram_total, int) for d in stats.devices)
    )


specs = st.one_of(
    json_values,
    st.tuples(
        st.sampled_from(["INT", "FLOAT", "COMBO", "MODEL", "STRING"]) | json_values, fields("min", "max", "options")
    ).map(list),
    st.tuples(st.lists(json_values, max_size=4), json_values).map(list),
)
node_schemas = st.fixed_dictionaries(
    {},
    optional={
        "input": st.fixed_dictionaries(
            {},
            optional={
                "required": st.dictionaries(st.text(max_size=5), specs, max_size=3) | json_values,
                "optional": st.dictionaries(st.text(max_size=5), specs, max_size=3) | json_values,
            },
        )
        | json_values,
        "output": st.lists(json_values, max_size=3) | json_values,
        "output_node": json_values,
    },
)


@FAST
@given(json_values | st.dictionaries(st.text(max_size=6), node_schemas | json_values, max_size=3))
def test_object_info_raises_only_comfy_error(body):
    info = expect(parse_object_info, body)
    if info is not None:
        assert isinstance(info, ObjectInfo)
        info.models()  # the combos the registry reads must be usable too


@FAST
@given(
    st.sampled_from([200, 400, 404, 500]),
    json_values
    | fields("prompt_id", "number", "node_errors", "error")
    | st.builds(
        lambda err, node_errors: {"error": err, "node_errors": node_errors},
        fields("type", "message", "details") | json_values,
        st.dictionaries(st.text(max_size=3), fields("errors", "class_type") | json_values, max_size=2)
        | st.dictionaries(
            st.text(max_size=3),
            st.fixed_dictionaries({"errors": st.lists(fields("type", "message", "extra_info") | json_values)}),
        ),
    ),
)
def test_prompt_response_raises_only_its_documented_errors(status, body):
    accepted = expect(parse_prompt_response, status, body, documented=(PromptRejected, ComfyError))
    assert accepted is None or (isinstance(accepted, PromptAccepted) and isinstance(accepted.number, int))


@FAST
@given(json_values | fields("name", "subfolder", "type"))
def test_upload_response_raises_only_comfy_error(body):
    name = expect(parse_upload_response, body)
    assert name is None or isinstance(name, str)


@FAST
@given(
    st.dictionaries(st.sampled_from(["content-length", "content-type", "x"]), st.text(max_size=30))
    | st.fixed_dictionaries({"content-length": st.integers(-5, 2**80).map(str) | st.from_regex(r"[0-9 ,]{0,25}")})
)
def test_view_headers_raise_only_comfy_error(headers):
    head = expect(parse_view_headers, headers)
    assert head is None or (isinstance(head, ViewHeaders) and (head.length is None or head.length >= 0))


@FAST
@given(st.builds(ImageRef, st.text(), st.text(), st.text()), st.binary(max_size=40))
def test_view_params_and_image_sniffing_never_raise(ref, body):
    params = image_ref_params(ref)
    assert set(params) == {"filename", "subfolder", "type"}
    assert isinstance(looks_like_image(body), bool)
