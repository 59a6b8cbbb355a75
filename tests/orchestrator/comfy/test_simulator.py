"""The simulator speaks ComfyUI's protocol: raw HTTP answers, graph validation, WS message order, queue, faults."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from orchestrator.comfy.parsing import parse_ws_binary
from orchestrator.comfy.sim import ComfySimulator, SimFarm, render as sim_render
from orchestrator.config import Config
from orchestrator.families import guess_family
from orchestrator.models import Family
from tests.orchestrator.comfy import (
    SCALE,
    SD15,
    SDXL,
    image_size,
    node_config,
    png,
    txt2img,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def http(sim):
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=10) as c:
        yield c


async def post_prompt(http, graph, client_id="t"):
    return await http.post("/prompt", json={"prompt": graph, "client_id": client_id})


async def ws_messages(sim, client_id, until, timeout=10.0):
    """Open a socket as client_id, run `until(ws)` setup, collect text messages until an `executing` node None."""
    out = []
    async with connect(f"ws://127.0.0.1:{sim.port}/ws?clientId={client_id}") as ws:
        await until()

        async def read():
            async for raw in ws:
                if isinstance(raw, bytes):
                    out.append(("binary", parse_ws_binary(raw)))
                    continue
                msg = json.loads(raw)
                out.append((msg["type"], msg["data"]))
                if msg["type"] == "executing" and msg["data"]["node"] is None:
                    return

        await asyncio.wait_for(read(), timeout)
    return out


# --- validation --------------------------------------------------------------------------------------------------


async def test_valid_prompt_is_accepted_with_comfyuis_answer_shape(http):
    r = await post_prompt(http, txt2img())
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"prompt_id", "number", "node_errors"} and body["node_errors"] == {}


async def test_unknown_class_type_is_invalid_prompt(http):
    g = txt2img()
    g["3"]["class_type"] = "KSamplerTurbo"
    r = await post_prompt(http, g)
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"type", "message", "details", "extra_info"}
    assert err["type"] == "invalid_prompt"
    assert err["message"] == "Cannot execute because node KSamplerTurbo does not exist."


async def test_graph_without_output_node_is_prompt_no_outputs(http):
    g = txt2img()
    del g["9"]
    r = await post_prompt(http, g)
    assert r.status_code == 400 and r.json()["error"]["type"] == "prompt_no_outputs"


async def test_missing_prompt_is_no_prompt(http):
    r = await http.post("/prompt", json={"client_id": "x"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "no_prompt"


def node_error(r, node_id):
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    entry = body["node_errors"][node_id]
    assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert entry["dependent_outputs"] == ["9"]
    return entry


async def test_required_input_missing(http):
    g = txt2img()
    del g["3"]["inputs"]["steps"]
    e = node_error(await post_prompt(http, g), "3")["errors"][0]
    assert e["type"] == "required_input_missing" and e["extra_info"]["input_name"] == "steps"


@pytest.mark.parametrize("legacy", [False, True], ids=["new-combo", "legacy-combo"])
async def test_value_not_in_list_names_the_value_and_list(legacy):
    s = ComfySimulator(node_config(), time_scale=SCALE, port=0, legacy_combos=legacy)
    await s.start()
    try:
        async with httpx.AsyncClient(base_url=s.base_url) as http:
            info = (await http.get("/object_info/CheckpointLoaderSimple")).json()
            head = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
            assert head == [SD15, SDXL] if legacy else head == "COMBO"
            r = await post_prompt(http, txt2img(ckpt="nope.safetensors"))
            entry = node_error(r, "4")
    finally:
        await s.stop()
    assert entry["class_type"] == "CheckpointLoaderSimple"
    e = entry["errors"][0]
    assert e["type"] == "value_not_in_list"
    assert e["details"] == f"ckpt_name: 'nope.safetensors' not in {[SD15, SDXL]!r}"


async def test_link_to_missing_node_and_bad_output_index_are_bad_linked_input(http):
    g = txt2img()
    g["8"]["inputs"]["samples"] = ["42", 0]
    assert node_error(await post_prompt(http, g), "8")["errors"][0]["type"] == "bad_linked_input"
    g = txt2img()
    g["8"]["inputs"]["vae"] = ["4", 7]
    assert node_error(await post_prompt(http, g), "8")["errors"][0]["type"] == "bad_linked_input"


async def test_wrong_link_type_is_return_type_mismatch(http):
    g = txt2img()
    g["8"]["inputs"]["vae"] = ["4", 0]  # MODEL into VAE
    e = node_error(await post_prompt(http, g), "8")["errors"][0]
    assert e["type"] == "return_type_mismatch"
    assert e["details"] == "vae, received_type(MODEL) mismatch input_type(VAE)"


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("steps", 0, "value_smaller_than_min"),
        ("denoise", 1.5, "value_bigger_than_max"),
        ("seed", 2**64, "value_bigger_than_max"),
        ("cfg", "lots", "invalid_input_type"),
    ],
)
async def test_number_range_errors(http, field, value, kind):
    g = txt2img()
    g["3"]["inputs"][field] = value
    e = node_error(await post_prompt(http, g), "3")["errors"][0]
    assert e["type"] == kind and e["extra_info"]["input_name"] == field


async def test_nodes_no_output_depends_on_are_not_validated(http):
    g = txt2img()
    g["50"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}}
    r = await post_prompt(http, g)
    assert r.status_code == 200, r.text


async def test_seed_upper_bound_is_accepted(http):
    r = await post_prompt(http, txt2img(seed=2**64 - 1))
    assert r.status_code == 200, r.text


# --- WebSocket messages ------------------------------------------------------------------------------------------


async def test_message_sequence_matches_comfyui(sim, http):
    pid = {}

    async def submit():
        pid["id"] = (await post_prompt(http, txt2img(steps=4), client_id="seq")).json()["prompt_id"]

    msgs = await ws_messages(sim, "seq", submit)
    kinds = [k for k, _ in msgs if k not in ("binary", "status")]
    assert kinds[:2] == ["execution_start", "execution_cached"]
    assert kinds[-3:] == ["executed", "execution_success", "executing"]
    executing = [d["node"] for k, d in msgs if k == "executing"]
    assert executing == ["4", "5", "6", "7", "3", "8", "9", None] or executing[-1] is None
    assert set(executing[:-1]) == {"3", "4", "5", "6", "7", "8", "9"}
    # KSampler (3) runs after everything it needs and before VAEDecode (8) and SaveImage (9)
    assert executing.index("3") > max(executing.index(n) for n in ("4", "5", "6", "7"))
    assert executing.index("8") > executing.index("3") and executing.index("9") > executing.index("8")
    progress = [d for k, d in msgs if k == "progress"]
    assert [p["value"] for p in progress] == [1, 2, 3, 4] and {p["max"] for p in progress} == {4}
    assert all(p["prompt_id"] == pid["id"] and p["node"] == "3" for p in progress)
    executed = next(d for k, d in msgs if k == "executed")
    assert executed["node"] == "9" and executed["output"]["images"][0]["filename"] == "vibes_00001_.png"
    first = msgs[0]
    assert first[0] == "status" and first[1]["sid"] == "seq"
    previews = [d for k, d in msgs if k == "binary"]
    assert previews and previews[0].mime == "image/jpeg" and previews[0].image[:2] == b"\xff\xd8"


async def test_prompt_messages_go_only_to_the_submitter_and_status_to_everyone(sim, http):
    seen_by_other = []
    async with connect(f"ws://127.0.0.1:{sim.port}/ws?clientId=other") as other:

        async def submit():
            await post_prompt(http, txt2img(), client_id="mine")

        await ws_messages(sim, "mine", submit)
        await post_prompt(http, txt2img(seed=99), client_id="mine")  # another queue change after the first ended

        async def read_other():
            async for raw in other:
                msg = json.loads(raw)
                seen_by_other.append(msg["type"])
                idle = msg["type"] == "status" and msg["data"]["status"]["exec_info"]["queue_remaining"] == 0
                if idle and len(seen_by_other) > 2:
                    return

        await asyncio.wait_for(read_other(), 10)
    assert set(seen_by_other) == {"status"}


async def test_second_socket_with_same_client_id_replaces_the_first(sim, http):
    async with connect(f"ws://127.0.0.1:{sim.port}/ws?clientId=dup") as first:
        await first.recv()  # its status greeting

        async def submit():
            await post_prompt(http, txt2img(), client_id="dup")

        msgs = await ws_messages(sim, "dup", submit)
        assert any(k == "execution_success" for k, _ in msgs)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(first.recv(), 0.2)


async def test_reconnect_while_running_resends_executing_for_current_node(sim, http):
    sim.faults.hang_after = 1
    async with connect(f"ws://127.0.0.1:{sim.port}/ws?clientId=rc") as ws:
        await ws.recv()
        pid = (await post_prompt(http, txt2img(), client_id="rc")).json()["prompt_id"]

        async def until_sampler():
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "executing" and msg["data"]["node"] == "3":
                    return

        await asyncio.wait_for(until_sampler(), 10)
    async with connect(f"ws://127.0.0.1:{sim.port}/ws?clientId=rc") as ws:
        assert json.loads(await ws.recv())["type"] == "status"
        again = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert again == {"type": "executing", "data": {"node": "3", "display_node": "3", "prompt_id": pid}}
    await http.post("/interrupt", json={})


async def test_identical_graph_is_served_from_cache(sim, http):
    async def submit():
        await post_prompt(http, txt2img(), client_id="c")

    await ws_messages(sim, "c", submit)
    second = await ws_messages(sim, "c", submit)
    cached = next(d for k, d in second if k == "execution_cached")
    assert sorted(cached["nodes"]) == sorted(txt2img())
    assert not any(k == "progress" for k, _ in second)
    executed = next(d for k, d in second if k == "executed")
    assert executed["output"]["images"][0]["filename"] == "vibes_00001_.png"
    assert sim.stats.checkpoint_loads == 1 and sim.stats.prompts[-1].cached_nodes == 7


async def test_new_seed_reuses_loader_and_text_nodes_but_samples_again(sim, http):
    async def submit_seed(seed):
        async def go():
            await post_prompt(http, txt2img(seed=seed), client_id="c")

        return go

    await ws_messages(sim, "c", await submit_seed(1))
    msgs = await ws_messages(sim, "c", await submit_seed(2))
    cached = next(d for k, d in msgs if k == "execution_cached")["nodes"]
    assert set(cached) == {"4", "5", "6", "7"}
    assert [d["value"] for k, d in msgs if k == "progress"] == [1, 2, 3, 4]
    assert sim.stats.checkpoint_loads == 1


# --- queue, interrupt, history --------------------------------------------------------------------------------


async def wait_running(sim, prompt_id):
    """Wait until the simulator's /queue lists this prompt as running (each poll awaits a server answer)."""
    async with httpx.AsyncClient(base_url=sim.base_url) as http:

        async def check():
            while True:
                q = (await http.get("/queue")).json()
                if any(row[1] == prompt_id for row in q["queue_running"]):
                    return

        await asyncio.wait_for(check(), 10)


async def test_fifo_queue_front_delete_and_interrupt(sim, http):
    sim.faults.hang_after = 1
    first = (await post_prompt(http, txt2img(seed=1))).json()
    await wait_running(sim, first["prompt_id"])
    second = (await post_prompt(http, txt2img(seed=2))).json()
    front = (await http.post("/prompt", json={"prompt": txt2img(seed=3), "client_id": "t", "front": True})).json()
    assert front["number"] < 0 < second["number"]
    q = (await http.get("/queue")).json()
    assert [r[1] for r in q["queue_running"]] == [first["prompt_id"]]
    assert len(q["queue_running"][0]) == 5
    assert {r[1] for r in q["queue_pending"]} == {second["prompt_id"], front["prompt_id"]}
    assert (await http.get("/prompt")).json() == {"exec_info": {"queue_remaining": 3}}
    r = await http.post("/queue", json={"delete": [second["prompt_id"]]})
    assert r.status_code == 200
    q = (await http.get("/queue")).json()
    assert [r[1] for r in q["queue_pending"]] == [front["prompt_id"]]
    # an interrupt naming another prompt does nothing; naming the running one stops it
    await http.post("/interrupt", json={"prompt_id": front["prompt_id"]})
    await http.post("/interrupt", json={"prompt_id": first["prompt_id"]})

    async def until_done(pid):
        while not (await http.get(f"/history/{pid}")).json():
            pass

    await asyncio.wait_for(until_done(front["prompt_id"]), 10)
    hist = (await http.get(f"/history/{first['prompt_id']}")).json()[first["prompt_id"]]
    assert hist["status"]["status_str"] == "error" and not hist["status"]["completed"]
    assert hist["status"]["messages"][-1][0] == "execution_interrupted"
    ok = (await http.get(f"/history/{front['prompt_id']}")).json()[front["prompt_id"]]
    assert ok["status"] == {"status_str": "success", "completed": True, "messages": ok["status"]["messages"]}
    assert ok["outputs"]["9"]["images"][0]["type"] == "output"
    assert sim.stats.record(second["prompt_id"]).status == "deleted"
    assert list((await http.get("/history", params={"max_items": 1})).json()) == [front["prompt_id"]]
    await http.post("/history", json={"delete": [front["prompt_id"]]})
    assert (await http.get(f"/history/{front['prompt_id']}")).json() == {}


# --- files ---------------------------------------------------------------------------------------------------------


async def test_view_refuses_traversal_and_missing_files(http):
    assert (await http.get("/view", params={"filename": "/etc/passwd"})).status_code == 400
    assert (await http.get("/view", params={"filename": "../secret.png"})).status_code == 400
    assert (await http.get("/view", params={"filename": "x.png", "subfolder": "../.."})).status_code == 403
    assert (await http.get("/view", params={"filename": "nothing.png"})).status_code == 404


async def test_upload_renames_only_a_different_file_with_the_same_name(http, sim):
    async def up(data, overwrite):
        r = await http.post(
            "/upload/image", files={"image": ("x.png", data, "image/png")}, data={"overwrite": overwrite}
        )
        assert r.status_code == 200
        return r.json()

    assert await up(png(color=(1, 2, 3)), "false") == {"name": "x.png", "subfolder": "", "type": "input"}
    assert (await up(png(color=(1, 2, 3)), "false"))["name"] == "x.png"  # identical bytes keep the name
    assert (await up(png(color=(9, 9, 9)), "false"))["name"] == "x (1).png"
    assert (await up(png(color=(7, 7, 7)), "false"))["name"] == "x (2).png"
    assert (await up(png(color=(5, 5, 5)), "true"))["name"] == "x.png"
    assert sim.files[("input", "", "x.png")] == png(color=(5, 5, 5))
    info = (await http.get("/api/object_info/LoadImage")).json()
    assert info["LoadImage"]["input"]["required"]["image"][1]["options"] == ["x (1).png", "x (2).png", "x.png"]


async def test_view_serves_png_and_jpeg_preview(sim, http):
    async def submit():
        await post_prompt(http, txt2img(side=64), client_id="v")

    msgs = await ws_messages(sim, "v", submit)
    ref = next(d for k, d in msgs if k == "executed")["output"]["images"][0]
    r = await http.get("/view", params=ref)
    assert r.headers["content-type"] == "image/png" and image_size(r.content) == (64, 64)
    j = await http.get("/view", params={**ref, "preview": "jpeg;90"})
    assert j.headers["content-type"] == "image/jpeg" and j.content[:2] == b"\xff\xd8"


async def test_other_routes_and_api_prefix(http, sim):
    assert (await http.get("/api/embeddings")).json() == []
    assert (await http.get("/models/checkpoints")).json() == [SD15, SDXL]
    assert (await http.get("/api/models/loras")).json() == ["detail_tweaker.safetensors"]
    assert (await http.get("/models/nope")).status_code == 404
    assert (await http.get("/object_info/Nope")).json() == {}
    stats = (await http.get("/api/system_stats")).json()
    assert stats["system"]["comfyui_version"] and stats["devices"][0]["vram_total"] == 8 * 1024**3
    assert (await http.post("/api/free", json={"unload_models": True, "free_memory": True})).status_code == 200
    assert (await http.post("/api/queue", json={"clear": True})).status_code == 200


# --- faults, farm, rendering --------------------------------------------------------------------------------------


async def test_die_fault_stops_answering_and_revive_serves_again(sim, http):
    sim.faults.die_after = 1
    async with connect(f"ws://127.0.0.1:{sim.port}/ws?clientId=d") as ws:
        await ws.recv()
        await post_prompt(http, txt2img(), client_id="d")

        async def until_cut():
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()

        await asyncio.wait_for(until_cut(), 10)
    assert not sim.alive
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient(base_url=sim.base_url) as fresh:
            await fresh.get("/system_stats")
    # Dead, its address stays its own: no other server (another test's simulator) can take the port meanwhile.
    with socket.socket() as other, pytest.raises(OSError):
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers bind
        other.bind(("127.0.0.1", sim.port))
    await sim.revive()
    async with httpx.AsyncClient(base_url=sim.base_url) as fresh:
        assert (await fresh.get("/system_stats")).status_code == 200
        assert (await fresh.get("/queue")).json() == {"queue_running": [], "queue_pending": []}


async def test_error_fault_sends_execution_error_with_cuda_message(sim, http):
    sim.faults.error_after = 1

    async def submit():
        await post_prompt(http, txt2img(), client_id="e")

    msgs = await ws_messages(sim, "e", submit)
    err = next(d for k, d in msgs if k == "execution_error")
    assert err["node_type"] == "KSampler" and "CUDA out of memory" in err["exception_message"]
    assert not any(k == "execution_success" for k, _ in msgs)


async def test_sim_farm_serves_every_sim_node_on_ephemeral_ports():
    cfg = Config(nodes=(node_config(), replace(node_config(), id="b")))
    async with SimFarm(cfg, time_scale=SCALE) as bound:
        assert set(s for s in bound.nodes if s.port == 0) == set()
        assert {n.id for n in bound.nodes} == {"gpu-test", "b"}
        for n in bound.nodes:
            async with httpx.AsyncClient(base_url=n.base_url) as http:
                assert (await http.get("/system_stats")).status_code == 200


def test_family_is_inferred_from_the_checkpoint_name():
    # The simulator times a checkpoint by the one family-guessing rule the session engine uses.
    assert guess_family("flux1-dev-fp8.safetensors") is Family.FLUX
    assert guess_family("sd_xl_base_1.0.safetensors") is Family.SDXL
    assert guess_family("v1-5-pruned-emaonly.safetensors") is Family.SD15


def test_render_is_deterministic_and_img2img_stays_close_to_its_source():
    a = sim_render.render_txt2img("a red fox", 1, 96, 64)
    assert a.size == (96, 64)
    assert a.tobytes() == sim_render.render_txt2img("a red fox", 1, 96, 64).tobytes()
    assert a.tobytes() != sim_render.render_txt2img("a red fox", 2, 96, 64).tobytes()
    other = sim_render.render_txt2img("a blue whale", 7, 96, 64)
    derived = sim_render.render_img2img(a, "a blue whale", 7, 0.5, 96, 64)

    def dist(x, y):
        return sum(abs(p - q) for p, q in zip(x.tobytes(), y.tobytes(), strict=True))

    assert dist(derived, a) < dist(derived, other) or dist(derived, a) < dist(a, other)
    assert sim_render.upscale(a).size == (384, 256)
    assert sim_render.decode(sim_render.encode_png(a)).size == (96, 64)


async def test_vibes_sim_refuses_a_non_loopback_node(tmp_path, capsys):
    import argparse

    import yaml

    from orchestrator.cli.sim import serve

    node = {
        "id": "lan",
        "name": "LAN box",
        "tier": "draft",
        "host": "203.0.113.50",
        "port": 8188,
        "capabilities": ["sd15"],
        "sim": {"seconds_per_step": {"sd15": 0.1}},
    }
    (tmp_path / "gpus.yaml").write_text(yaml.safe_dump({"nodes": [node]}))
    code = await serve(argparse.Namespace(config=str(tmp_path), time_scale=0.01))
    assert code == 2
    assert "refusing node lan" in capsys.readouterr().err
