"""Parsing ComfyUI's payloads: every WS message type, both combo shapes, both answer shapes, errors."""

from __future__ import annotations

import json
import struct

import pytest

import orchestrator.comfy as comfy
from orchestrator.comfy import node_schemas
from orchestrator.comfy.parsing import (
    parse_history,
    parse_object_info,
    parse_prompt_response,
    parse_queue,
    parse_system_stats,
    parse_upload_response,
    parse_ws_binary,
    parse_ws_text,
)
from orchestrator.comfy.protocol import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    ImageRef,
    PreviewFrame,
    ProgressMsg,
    StatusMsg,
    UnknownMsg,
    build_prompt_request,
    encode_preview,
)
from orchestrator.errors import ComfyError, PromptRejected
from orchestrator.models import NodeModels


def ws(kind: str, data: dict) -> str:
    return json.dumps({"type": kind, "data": data})


def test_public_names_are_exported():
    for name in comfy.__all__:
        assert hasattr(comfy, name), name


def test_status_message_with_and_without_sid():
    msg = parse_ws_text(ws("status", {"status": {"exec_info": {"queue_remaining": 3}}, "sid": "abc"}))
    assert msg == StatusMsg(queue_remaining=3, sid="abc")
    assert parse_ws_text(ws("status", {"status": {"exec_info": {"queue_remaining": 0}}})) == StatusMsg(0, None)


def test_every_prompt_message_type_parses_to_its_dataclass():
    pid = "p1"
    assert parse_ws_text(ws("execution_start", {"prompt_id": pid, "timestamp": 1})) == ExecutionStart(pid)
    assert parse_ws_text(ws("execution_cached", {"nodes": ["4", "5"], "prompt_id": pid})) == ExecutionCached(
        pid, ("4", "5")
    )
    assert parse_ws_text(ws("executing", {"node": "3", "display_node": "3", "prompt_id": pid})) == Executing(pid, "3")
    assert parse_ws_text(ws("executing", {"node": None, "prompt_id": pid})) == Executing(pid, None)
    assert parse_ws_text(ws("progress", {"value": 2, "max": 10, "prompt_id": pid, "node": "3"})) == ProgressMsg(
        pid, "3", 2, 10
    )
    executed = parse_ws_text(
        ws(
            "executed",
            {
                "node": "9",
                "display_node": "9",
                "output": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]},
                "prompt_id": pid,
            },
        )
    )
    assert executed == Executed(pid, "9", (ImageRef("a_00001_.png", "", "output"),))
    assert parse_ws_text(ws("execution_success", {"prompt_id": pid, "timestamp": 2})) == ExecutionSuccess(pid)
    err = parse_ws_text(
        ws(
            "execution_error",
            {
                "prompt_id": pid,
                "node_id": "3",
                "node_type": "KSampler",
                "executed": [],
                "exception_message": "CUDA out of memory.\n",
                "exception_type": "torch.OutOfMemoryError",
                "traceback": ["..."],
                "current_inputs": {},
                "current_outputs": {},
            },
        )
    )
    assert err == ExecutionError(pid, "3", "KSampler", "CUDA out of memory.", "torch.OutOfMemoryError")
    intr = parse_ws_text(
        ws("execution_interrupted", {"prompt_id": pid, "node_id": "3", "node_type": "KSampler", "executed": []})
    )
    assert intr == ExecutionInterrupted(pid, "3", "KSampler")


def test_progress_from_older_servers_has_no_prompt_id():
    assert parse_ws_text(ws("progress", {"value": 1, "max": 5})) == ProgressMsg(None, None, 1, 5)


def test_executed_without_images_gives_empty_tuple():
    assert parse_ws_text(ws("executed", {"node": "9", "output": {"text": ["hi"]}, "prompt_id": "p"})).images == ()


def test_unknown_types_are_ignorable_and_garbage_raises():
    assert parse_ws_text(ws("progress_state", {"prompt_id": "p", "nodes": {}})) == UnknownMsg("progress_state")
    with pytest.raises(ComfyError):
        parse_ws_text("not json")
    with pytest.raises(ComfyError):
        parse_ws_text(ws("progress", {"value": "x"}))
    with pytest.raises(ComfyError):
        parse_ws_text(json.dumps([1, 2]))


def test_binary_preview_frames_jpeg_png_and_others():
    jpeg = b"\xff\xd8jpegdata\xff\xd9"
    png_image = b"\x89PNG\r\n\x1a\nchunks" + b"IEND\xaeB`\x82"
    assert parse_ws_binary(struct.pack(">II", 1, 1) + jpeg) == PreviewFrame(jpeg, "image/jpeg")
    assert parse_ws_binary(struct.pack(">II", 1, 2) + png_image) == PreviewFrame(png_image, "image/png")
    assert parse_ws_binary(struct.pack(">II", 3, 1) + b"text") is None
    assert parse_ws_binary(struct.pack(">II", 1, 9) + b"unknown format") is None
    assert parse_ws_binary(encode_preview(jpeg)) == PreviewFrame(jpeg, "image/jpeg")


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x00",  # shorter than the event type
        struct.pack(">I", 1) + b"\x00",  # a preview without its format
        struct.pack(">II", 1, 1) + b"\xff\xd8cut off",  # a JPEG without its end marker
        struct.pack(">II", 1, 2) + b"\xff\xd8\xff\xd9",  # says PNG, is a JPEG
        struct.pack(">II", 1, 1),  # no image at all
    ],
    ids=["short", "no-format", "truncated", "wrong-format", "empty"],
)
def test_broken_binary_frames_raise_comfy_error(frame):
    with pytest.raises(ComfyError):
        parse_ws_binary(frame)


def test_prompt_accepted():
    assert parse_prompt_response(200, {"prompt_id": "x", "number": 4, "node_errors": {}}).number == 4


def test_prompt_rejected_carries_comfyuis_errors():
    body = {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {
            "4": {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "ckpt_name: 'x.safetensors' not in ['a.safetensors']",
                        "extra_info": {"input_name": "ckpt_name", "input_config": None, "received_value": "x"},
                    }
                ],
                "dependent_outputs": ["9"],
                "class_type": "CheckpointLoaderSimple",
            }
        },
    }
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(400, body)
    e = info.value
    assert e.error_type == "prompt_outputs_failed_validation"
    assert e.node_errors[0].node_id == "4"
    assert e.node_errors[0].input_name == "ckpt_name"
    assert "not in" in e.user_message


def test_old_string_error_shape_and_unexpected_answers():
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(400, {"error": "no prompt", "node_errors": []})
    assert info.value.comfy_message == "no prompt"
    with pytest.raises(ComfyError):
        parse_prompt_response(500, "boom")


def test_history_not_finished_is_none():
    assert parse_history({}, "p") is None


def test_history_success_lists_all_output_images_in_order():
    body = {
        "p": {
            "prompt": [0, "p", {}, {}, ["9", "10"]],
            "outputs": {
                "9": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]},
                "10": {"images": [{"filename": "t.png", "subfolder": "", "type": "temp"}]},
            },
            "status": {"status_str": "success", "completed": True, "messages": []},
        }
    }
    entry = parse_history(body, "p")
    assert entry.completed and entry.status == "success"
    assert [i.filename for i in entry.images] == ["a_00001_.png", "t.png"]
    assert entry.error_message is None


def test_history_error_and_interrupted_messages():
    err = {
        "p": {
            "outputs": {},
            "status": {
                "status_str": "error",
                "completed": False,
                "messages": [["execution_error", {"exception_message": "CUDA out of memory."}]],
            },
        }
    }
    assert parse_history(err, "p").error_message == "CUDA out of memory."
    intr = {
        "p": {
            "outputs": {},
            "status": {"status_str": "error", "completed": False, "messages": [["execution_interrupted", {}]]},
        }
    }
    assert parse_history(intr, "p").error_message == "interrupted"


def test_history_without_status_from_old_servers_counts_as_success():
    entry = parse_history({"p": {"outputs": {"9": {"images": [{"filename": "x.png"}]}}}}, "p")
    assert entry.completed and entry.status == "success" and entry.images == (ImageRef("x.png"),)


def test_queue_pending_sorted_by_number():
    body = {"queue_running": [[1, "a", {}, {}, []]], "queue_pending": [[5, "c", {}, {}, []], [-3, "b", {}, {}, []]]}
    q = parse_queue(body)
    assert q.running == ("a",) and q.pending == ("b", "c")


@pytest.mark.parametrize("legacy", [False, True], ids=["new-combo", "legacy-combo"])
def test_object_info_both_combo_shapes_give_the_same_models(legacy):
    files = node_schemas.ModelFiles(checkpoints=("a.safetensors",), loras=("l.safetensors",), upscale_models=("u.pth",))
    raw = node_schemas.object_info(files, legacy_combos=legacy)
    head = raw["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert (head == ["a.safetensors"]) if legacy else (head == "COMBO")
    info = parse_object_info(json.loads(json.dumps(raw)))
    assert info.models() == NodeModels(("a.safetensors",), ("l.safetensors",), ("u.pth",))
    ks = info.nodes["KSampler"]
    assert ks.inputs["sampler_name"].options and "dpmpp_2m" in ks.inputs["sampler_name"].options
    assert ks.inputs["seed"].type == "INT" and ks.inputs["seed"].max == 0xFFFFFFFFFFFFFFFF
    assert ks.inputs["denoise"].min == 0.0 and ks.inputs["denoise"].max == 1.0
    assert ks.inputs["model"].is_link and ks.inputs["model"].type == "MODEL"
    assert not ks.inputs["cfg"].is_link
    assert ks.outputs == ("LATENT",) and not ks.output_node
    assert info.nodes["SaveImage"].output_node
    assert info.nodes["CheckpointLoaderSimple"].outputs == ("MODEL", "CLIP", "VAE")
    assert info.nodes["LoadImage"].outputs == ("IMAGE", "MASK")


def test_object_info_optional_inputs_and_empty_answer():
    raw = {"X": {"input": {"required": {"a": ["INT", {"min": 1}]}, "optional": {"b": ["STRING", {}]}}, "output": []}}
    node = parse_object_info(raw).nodes["X"]
    assert node.inputs["a"].required and not node.inputs["b"].required
    assert parse_object_info({}).nodes == {}
    assert parse_object_info({}).models() == NodeModels()


def test_system_stats():
    body = {
        "system": {"os": "posix", "comfyui_version": "0.3.40"},
        "devices": [{"name": "cuda:0 RTX", "type": "cuda", "index": 0, "vram_total": 100, "vram_free": 40}],
    }
    stats = parse_system_stats(body)
    assert stats.comfyui_version == "0.3.40"
    assert stats.devices[0].vram_free == 40
    assert parse_system_stats({"system": {}, "devices": []}).comfyui_version is None


def test_upload_answer_with_subfolder_and_prompt_request_body():
    assert parse_upload_response({"name": "x.png", "subfolder": "", "type": "input"}) == "x.png"
    assert parse_upload_response({"name": "x.png", "subfolder": "vibes", "type": "input"}) == "vibes/x.png"
    assert build_prompt_request({"1": {}}, "cid") == {"prompt": {"1": {}}, "client_id": "cid"}
    assert build_prompt_request({}, "cid", front=True)["front"] is True
