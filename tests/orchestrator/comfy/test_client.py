"""ComfyClient against the simulator on loopback: every endpoint, event routing, reconnects, faults and errors."""

from __future__ import annotations

import random

import httpx
import pytest

from orchestrator.backoff import Backoff
from orchestrator.comfy.client import ComfyClient
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
)
from orchestrator.comfy.sim import ComfySimulator
from orchestrator.errors import ComfyError, NodeUnavailable, PromptRejected
from tests.orchestrator.comfy import (
    LORA,
    SCALE,
    SD15,
    SDXL,
    UPSCALER,
    collect,
    image_size,
    img2img,
    node_config,
    png,
    txt2img,
    upscale_graph,
)

pytestmark = pytest.mark.timeout(60)


async def run(client, graph):
    accepted = await client.submit(graph)
    return accepted, await collect(client.watch(accepted.prompt_id))


async def test_txt2img_events_in_order_and_image_fetched(client):
    accepted, events = await run(client, txt2img(side=64, steps=4))
    kinds = [type(e) for e in events]
    assert kinds[0] is ExecutionStart and kinds[1] is ExecutionCached
    assert kinds[-1] is ExecutionSuccess and kinds[-2] is Executed
    assert [e.value for e in events if isinstance(e, ProgressMsg)] == [1, 2, 3, 4]
    assert {e.node for e in events if isinstance(e, Executing)} == {"3", "4", "5", "6", "7", "8", "9"}
    assert all(getattr(e, "prompt_id", accepted.prompt_id) == accepted.prompt_id for e in events)
    previews = [e for e in events if isinstance(e, PreviewFrame)]
    assert previews and previews[0].mime == "image/jpeg"
    ref = events[-2].images[0]
    data = await client.view(ref)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and image_size(data) == (64, 64)
    entry = await client.history(accepted.prompt_id)
    assert entry.completed and entry.status == "success" and entry.images == (ref,)


async def test_history_of_unfinished_or_unknown_prompt_is_none(client):
    assert await client.history("not-a-prompt") is None


async def test_events_arriving_before_watch_are_not_lost(client):
    first = await client.submit(txt2img(seed=5))
    # Once a later prompt has finished on the same socket, every event of the first one has been received.
    _, _ = await run(client, txt2img(seed=6))
    events = await collect(client.watch(first.prompt_id))
    assert isinstance(events[0], ExecutionStart) and isinstance(events[-1], ExecutionSuccess)
    assert any(isinstance(e, Executed) for e in events)


async def test_cached_identical_graph_finishes_with_the_earlier_outputs(client, sim):
    _, first = await run(client, txt2img())
    _, second = await run(client, txt2img())
    cached = next(e for e in second if isinstance(e, ExecutionCached))
    assert set(cached.nodes) == set(txt2img())
    assert not any(isinstance(e, ProgressMsg) for e in second)
    assert (
        next(e for e in second if isinstance(e, Executed)).images
        == next(e for e in first if isinstance(e, Executed)).images
    )
    assert isinstance(second[-1], ExecutionSuccess)


async def test_img2img_and_upscale_use_uploaded_images(client, sim):
    name = await client.upload_image(png(64), "seed.png")
    assert name == "seed.png"
    _, events = await run(client, img2img(name))
    assert isinstance(events[-1], ExecutionSuccess)
    _, events = await run(client, upscale_graph(name))
    ref = next(e for e in events if isinstance(e, Executed)).images[0]
    assert image_size(await client.view(ref)) == (256, 256)
    assert sim.stats.uploads == 1


async def test_upload_without_overwrite_gets_a_new_name(client):
    assert await client.upload_image(png(color=(1, 1, 1)), "in.png", overwrite=False) == "in.png"
    assert await client.upload_image(png(color=(2, 2, 2)), "in.png", overwrite=False) == "in (1).png"
    assert await client.upload_image(png(color=(3, 3, 3)), "in.png") == "in.png"


async def test_rejected_graph_raises_prompt_rejected_with_comfyuis_message(client):
    with pytest.raises(PromptRejected) as info:
        await client.submit(txt2img(ckpt="missing.safetensors"))
    e = info.value
    assert e.error_type == "prompt_outputs_failed_validation"
    detail = e.node_errors[0]
    assert (detail.node_id, detail.class_type, detail.type) == ("4", "CheckpointLoaderSimple", "value_not_in_list")
    assert "ckpt_name: 'missing.safetensors' not in" in detail.details
    assert "Value not in list" in e.user_message


async def test_object_info_models_and_system_stats(client):
    info = await client.object_info()
    assert {"KSampler", "SaveImage", "LoraLoader", "FluxGuidance", "PreviewImage"} <= set(info.nodes)
    one = await client.object_info("KSampler")
    assert set(one.nodes) == {"KSampler"}
    assert (await client.object_info("Nope")).nodes == {}
    models = await client.models()
    assert models.checkpoints == (SD15, SDXL) and models.loras == (LORA,) and models.upscale_models == (UPSCALER,)
    assert info.models() == models
    stats = await client.system_stats()
    assert stats.comfyui_version and stats.devices[0].type == "cuda"


async def test_interrupt_running_and_delete_pending(client, sim):
    sim.faults.hang_after = 1
    running = await client.submit(txt2img(seed=1))
    watch = client.watch(running.prompt_id)
    async for ev in watch:  # wait until the sampler runs
        if isinstance(ev, Executing) and ev.node == "3":
            break
    pending = await client.submit(txt2img(seed=2))
    q = await client.queue()
    assert q.running == (running.prompt_id,) and q.pending == (pending.prompt_id,)
    await client.delete_queued([pending.prompt_id])
    assert (await client.queue()).pending == ()
    await client.interrupt(running.prompt_id)
    rest = await collect(watch)
    assert isinstance(rest[-1], ExecutionInterrupted) and rest[-1].node_type == "KSampler"
    entry = await client.history(running.prompt_id)
    assert entry.status == "error" and entry.error_message == "interrupted"
    assert sim.stats.record(pending.prompt_id).status == "deleted"


async def test_a_prompt_given_up_on_leaves_nothing_buffered_when_it_ends(client, sim):
    # The losing copy of a backup race: its follower stops watching, then its prompt is interrupted on the node.
    sim.faults.hang_after = 1
    lost = await client.submit(txt2img(seed=1))
    watch = client.watch(lost.prompt_id)
    async for ev in watch:
        if isinstance(ev, Executing) and ev.node == "3":
            break
    watch.close()
    await client.interrupt(lost.prompt_id)
    sim.faults.hang_after = None
    # Once a later prompt has finished on the same socket, every event of the first one has been received.
    _, events = await run(client, txt2img(seed=2))
    assert isinstance(events[-1], ExecutionSuccess)
    assert (await client.history(lost.prompt_id)).error_message == "interrupted"
    stats = client.buffer_stats()
    assert (stats.pending_prompts, stats.pending_events) == (0, 0)


async def test_interrupt_without_prompt_id_stops_whatever_runs(client, sim):
    sim.faults.hang_after = 1
    accepted = await client.submit(txt2img())
    watch = client.watch(accepted.prompt_id)
    async for ev in watch:
        if isinstance(ev, ProgressMsg) or (isinstance(ev, Executing) and ev.node == "3"):
            break
    await client.interrupt()
    assert isinstance((await collect(watch))[-1], ExecutionInterrupted)


async def test_execution_error_reaches_the_watch(client, sim):
    sim.faults.error_after = 1
    accepted, events = await run(client, txt2img())
    err = events[-1]
    assert isinstance(err, ExecutionError) and "CUDA out of memory" in err.exception_message
    assert (await client.history(accepted.prompt_id)).error_message.startswith("CUDA out of memory")


async def test_free_unloads_the_checkpoint(client, sim):
    await run(client, txt2img())
    assert sim.stats.loaded_checkpoint == SD15
    await client.free(unload_models=True, free_memory=True)
    assert sim.stats.loaded_checkpoint is None
    await run(client, txt2img(seed=3))
    assert sim.stats.checkpoint_loads == 2


async def test_dropped_socket_mid_prompt_is_confirmed_from_history(sim):
    """The socket drops halfway; the prompt finishes before the client is back; /history supplies the result."""
    sim.faults.drop_ws_after = 1
    # A long reconnect delay: the prompt (milliseconds at this scale) surely finishes while the socket is down.
    client = ComfyClient(sim.base_url, ws_backoff=(0.3, 0.3))
    await client.start()
    try:
        assert await client.wait_connected(5)
        accepted = await client.submit(txt2img(steps=8))
        watch = client.watch(accepted.prompt_id)
        events = await collect(watch)
        assert isinstance(events[-1], ExecutionSuccess)
        images = [i for e in events if isinstance(e, Executed) for i in e.images]
        assert images and image_size(await client.view(images[0])) == (64, 64)
        assert watch.disconnects >= 1
        # node "" marks the outputs the client rebuilt from /history (the WS messages were lost)
        assert any(isinstance(e, Executed) and e.node == "" for e in events)
        assert sim.stats.record(accepted.prompt_id).status == "success"
    finally:
        await client.close()


async def test_client_reconnects_after_the_node_comes_back(sim):
    client = ComfyClient(sim.base_url, ws_backoff=(0.01, 0.05))
    await client.start()
    try:
        assert await client.wait_connected(5)
        sim.kill()
        with pytest.raises(NodeUnavailable):
            await client.system_stats()
        await sim.revive()
        await client.system_stats()  # a successful call also wakes the socket's reconnect at once
        assert await client.wait_connected(5)
        _, events = await run(client, txt2img(seed=11))
        assert isinstance(events[-1], ExecutionSuccess)
    finally:
        await client.close()


async def test_previews_off_sends_no_frames():
    s = ComfySimulator(node_config(), time_scale=SCALE, port=0, previews=False)
    await s.start()
    client = ComfyClient(s.base_url)
    await client.start()
    try:
        assert await client.wait_connected(5)
        _, events = await run(client, txt2img(steps=8))
        assert not any(isinstance(e, PreviewFrame) for e in events)
    finally:
        await client.close()
        await s.stop()


async def test_nothing_listening_is_node_unavailable():
    s = ComfySimulator(node_config(), time_scale=SCALE, port=0)
    await s.start()
    url = s.base_url
    await s.stop()
    client = ComfyClient(url, http_timeout=2)
    try:
        with pytest.raises(NodeUnavailable):
            await client.system_stats()
        with pytest.raises(NodeUnavailable):
            await client.submit(txt2img())
    finally:
        await client.close()


async def test_5xx_and_timeouts_are_node_unavailable_and_404_view_is_comfy_error():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/system_stats":
            return httpx.Response(502, text="bad gateway")
        if request.url.path == "/queue":
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(404)

    client = ComfyClient("http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(NodeUnavailable):
            await client.system_stats()
        with pytest.raises(NodeUnavailable):
            await client.queue()
        with pytest.raises(ComfyError) as info:
            await client.view(ImageRef("x.png"))
        assert not isinstance(info.value, NodeUnavailable)
    finally:
        await client.close()


async def test_watch_close_ends_iteration(client):
    watch = client.watch("never-submitted")
    watch.close()
    assert await collect(watch) == []


def test_backoff_grows_with_jitter_to_the_cap_and_resets():
    b = Backoff(0.1, 1.0, rng=random.Random(1))
    delays = [b.delay() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 1.0 for d in delays) and delays[-1] >= 0.5
    b.reset()
    assert b.delay() <= 0.1
