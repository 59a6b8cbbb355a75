"""The simulator's faults as the real client sees them, and the client's bounds against a misbehaving node.

Each fault is checked through ComfyClient over loopback: malformed WebSocket frames are dropped and the listener
keeps delivering; malformed health answers, undecodable bodies, dripping, oversized and non-image /view bodies
raise the documented errors; a wedged node accepts and answers but never reports; floods stay bounded.
Where the client must have received everything sent so far, a later prompt on the same socket is run to the
end first (the socket is ordered), instead of waiting for time to pass.
"""

from __future__ import annotations

import logging

import pytest

from orchestrator.comfy.client import ComfyClient
from orchestrator.comfy.parsing import parse_ws_binary, parse_ws_text
from orchestrator.comfy.protocol import (
    Executed,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    PreviewFrame,
    ProgressMsg,
)
from orchestrator.comfy.sim import Garbage, garbage_frame
from orchestrator.comfy.watch import MAX_PENDING_EVENTS, MAX_PENDING_TOTAL
from orchestrator.config import SimFaults, load_config
from orchestrator.errors import ComfyError, ConfigError, NodeUnavailable
from tests.orchestrator.comfy import collect, txt2img

pytestmark = pytest.mark.timeout(60)

#: every kind the client must reject; UNKNOWN_TYPE is well-formed and ignored instead
REJECTED = [k for k in Garbage if k is not Garbage.UNKNOWN_TYPE]


async def run(client, graph):
    accepted = await client.submit(graph)
    return accepted, await collect(client.watch(accepted.prompt_id))


def assert_delivered(events, prompt_id):
    assert isinstance(events[0], ExecutionStart) and events[0].prompt_id == prompt_id
    assert isinstance(events[-1], ExecutionSuccess) and events[-1].prompt_id == prompt_id
    assert [e for e in events if isinstance(e, ExecutionSuccess)] == [events[-1]]
    executed = [e for e in events if isinstance(e, Executed)]
    assert len(executed) == 1 and len(executed[0].images) == 1


async def test_every_garbage_kind_is_rejected_by_the_parsers():
    for kind in Garbage:
        frame = garbage_frame(kind, "p1")
        parse = parse_ws_text if isinstance(frame, str) else parse_ws_binary
        if kind is Garbage.UNKNOWN_TYPE:
            assert type(parse(frame)).__name__ == "UnknownMsg"
        else:
            with pytest.raises(ComfyError):
                parse(frame)


async def test_injected_garbage_is_dropped_with_one_warning_and_the_listener_keeps_delivering(client, sim, caplog):
    client.drop_warning_interval_s = 3600.0
    with caplog.at_level(logging.WARNING, logger="orchestrator.comfy.client"):
        for kind in Garbage:
            await sim.inject_garbage(kind)
        accepted, events = await run(client, txt2img(seed=11))
        await sim.inject_garbage(Garbage.DEEP_NESTING)
        second, more = await run(client, txt2img(seed=12))
    assert_delivered(events, accepted.prompt_id)
    assert_delivered(more, second.prompt_id)
    assert sim.stats.garbage_sent == len(Garbage) + 1
    assert client.dropped_messages == len(REJECTED) + 1
    warnings = [r for r in caplog.records if "dropped a WebSocket message" in r.getMessage()]
    assert len(warnings) == 1, "a burst of garbage gives one warning, not one per frame"
    assert client.connected


async def test_a_bug_while_routing_a_message_drops_that_message_only(client, monkeypatch):
    real = client.dispatch
    failures = []

    def dispatch(msg):
        if isinstance(msg, ProgressMsg) and not failures:
            failures.append(msg)
            raise RuntimeError("a routing bug")
        real(msg)

    monkeypatch.setattr(client, "dispatch", dispatch)
    accepted, events = await run(client, txt2img(seed=13, steps=4))
    assert_delivered(events, accepted.prompt_id)
    assert [e.value for e in events if isinstance(e, ProgressMsg)] == [2, 3, 4]
    assert client.dropped_messages == 1 and client.connected


async def test_malformed_ws_fault_mixes_garbage_into_a_running_prompt(client, sim):
    sim.faults.malformed_ws = True
    accepted, events = await run(client, txt2img(seed=21, steps=8))
    sim.faults.malformed_ws = False
    # Once a clean prompt has finished, every frame sent before it has been handled.
    _, clean = await run(client, txt2img(seed=22))
    assert_delivered(events, accepted.prompt_id)
    assert [e.value for e in events if isinstance(e, ProgressMsg)] == list(range(1, 9))
    assert all(
        isinstance(e.image, bytes) and e.image.endswith(b"\xff\xd9") for e in events if isinstance(e, PreviewFrame)
    )
    sent = sim.stats.garbage_sent
    unknown = sum(1 for i in range(sent) if list(Garbage)[i % len(Garbage)] is Garbage.UNKNOWN_TYPE)
    assert sent > len(Garbage)
    assert client.dropped_messages == sent - unknown
    assert isinstance(clean[-1], ExecutionSuccess)


@pytest.mark.parametrize("kind", ["vram_text", "list"])
async def test_bad_system_stats_is_a_comfy_error_until_the_reply_is_good(client, sim, kind):
    sim.faults.bad_system_stats = kind
    with pytest.raises(ComfyError, match="system_stats") as info:
        await client.system_stats()
    assert not isinstance(info.value, NodeUnavailable)
    if kind == "vram_text":
        assert "vram_total" in str(info.value) and "'8 GB'" in str(info.value)
    sim.faults.bad_system_stats = None
    stats = await client.system_stats()
    assert stats.devices[0].vram_total == 8 * 1024**3


async def test_bad_object_info_is_a_comfy_error(client, sim):
    sim.faults.bad_object_info = True
    with pytest.raises(ComfyError, match="object_info"):
        await client.object_info()
    with pytest.raises(ComfyError, match="object_info"):
        await client.models()
    sim.faults.bad_object_info = False
    assert "KSampler" in (await client.object_info()).nodes


async def test_gzip_lie_makes_json_answers_unreadable_as_node_unavailable(client, sim):
    accepted, events = await run(client, txt2img(seed=31))
    sim.faults.gzip_lie = True
    with pytest.raises(NodeUnavailable, match="DecodingError"):
        await client.system_stats()
    with pytest.raises(NodeUnavailable, match="DecodingError"):
        await client.history(accepted.prompt_id)
    # /view is not JSON: the image is still readable
    data = await client.view(events[-2].images[0])
    assert data.startswith(b"\x89PNG")


async def test_dripping_view_is_abandoned_at_its_deadline_and_complete_without_one(client, sim):
    _, events = await run(client, txt2img(seed=41))
    ref = events[-2].images[0]
    whole = await client.view(ref)
    sim.faults.drip_view_bytes_per_s = 50.0  # a few KB would take minutes
    with pytest.raises(NodeUnavailable, match=r"did not finish within 0\.2s"):
        await client.view(ref, timeout=0.2)
    sim.faults.drip_view_bytes_per_s = 10 * 1024 * 1024.0
    assert await client.view(ref, timeout=30) == whole


async def test_non_image_view_body_is_a_comfy_error(client, sim):
    _, events = await run(client, txt2img(seed=51))
    sim.faults.view_garbage = True
    with pytest.raises(ComfyError, match="not an image") as info:
        await client.view(events[-2].images[0])
    assert not isinstance(info.value, NodeUnavailable)


async def test_oversized_view_is_abandoned_under_the_cap(sim):
    cap = 1024 * 1024
    client = ComfyClient(sim.base_url, name="gpu-test", max_transfer_bytes=cap)
    try:
        await client.start()
        assert await client.wait_connected(5)
        _, events = await run(client, txt2img(seed=61))
        ref = events[-2].images[0]
        sim.faults.view_oversize_bytes = 512 * 1024 * 1024
        before = client.bytes_received
        with pytest.raises(ComfyError, match="over the 1 MiB limit") as info:
            await client.view(ref)
        assert "1 MiB" in info.value.user_message
        read = client.bytes_received - before
        assert cap < read <= cap + 512 * 1024, "stopped at the first chunk past the cap"
        assert sim.stats.view_bytes_sent < 64 * 1024 * 1024, "the server was stopped long before the end"
        # An announced length over the cap is refused before reading any of the body.
        sim.faults.view_oversize_bytes = None
        client.max_transfer_bytes = 16
        before = client.bytes_received
        with pytest.raises(ComfyError, match="announced"):
            await client.view(ref)
        assert client.bytes_received == before
    finally:
        await client.close()


async def test_upload_has_an_overall_deadline(client, sim):
    # An upload that the node holds (hold_upload_of) never completes; the deadline ends the call.
    sim.faults.hold_upload_of = b"held bytes"
    with pytest.raises(NodeUnavailable, match=r"did not finish within 0\.2s"):
        await client.upload_image(b"held bytes", "held.png", timeout=0.2)
    # Release the held request so that the server can stop at once.
    assert await client.upload_image(b"other bytes", "other.png") == "other.png"


async def test_wedged_node_accepts_and_answers_but_never_reports(client, sim):
    sim.faults.wedge_after = 1
    first = await client.submit(txt2img(seed=71))
    watch = client.watch(first.prompt_id)
    second = await client.submit(txt2img(seed=72))
    queue = await client.queue()
    assert queue.running == (first.prompt_id,) and queue.pending == (second.prompt_id,)
    assert sim.faults.wedge and sim.stats.prompts_started == 1
    await client.interrupt(first.prompt_id)  # taken, but nothing comes of it while the node is wedged
    assert (await client.system_stats()).devices, "health checks are still answered"
    # Nothing was said: the status broadcasts after each submit are suppressed too.
    assert watch.queued == 0 and client.buffer_stats().pending_events == 0
    sim.unwedge()
    events = await collect(watch)
    assert events[0] == ExecutionStart(first.prompt_id)
    assert isinstance(events[-1], ExecutionInterrupted), "the interrupt applies once the node is unstuck"
    rest = await collect(client.watch(second.prompt_id))
    assert isinstance(rest[-1], ExecutionSuccess)


async def test_previews_flooded_for_a_prompt_nobody_watches_are_dropped(client, sim):
    pid = await sim.flood_unwatched(1000, 64 * 1024)
    _, events = await run(client, txt2img(seed=81))
    assert isinstance(events[-1], ExecutionSuccess)
    stats = client.buffer_stats()
    assert stats.preview_bytes == 0
    assert stats.pending_events <= MAX_PENDING_EVENTS
    assert client.dropped_events >= 1000
    flooded = await collect(client.watch(pid))
    # The buffer kept the start and the end of the flooded prompt and only the newest progress.
    assert flooded[0] == ExecutionStart(pid) and flooded[-1] == ExecutionSuccess(pid)
    progress = [e.value for e in flooded if isinstance(e, ProgressMsg)]
    assert progress == list(range(1000 - len(progress) + 1, 1001))


async def test_a_watched_prompt_keeps_only_its_newest_preview_and_never_its_terminal_event(client, sim):
    watch = client.watch("flooded")
    await sim.flood_unwatched(300, 32 * 1024, prompt_id="flooded")
    _, events = await run(client, txt2img(seed=91))
    assert isinstance(events[-1], ExecutionSuccess)
    assert watch.preview_bytes <= 32 * 1024
    assert watch.queued <= 2 + 300 + 1  # start, progress, one preview, the end
    flooded = await collect(watch)
    assert sum(isinstance(e, PreviewFrame) for e in flooded) == 1
    assert flooded[-1] == ExecutionSuccess("flooded")


def test_sim_faults_are_read_from_gpus_yaml(tmp_path):
    def write(faults: str) -> None:
        (tmp_path / "gpus.yaml").write_text(
            "nodes:\n"
            "  - {id: a, name: A, vram_gb: 8, tier: draft, host: 127.0.0.1, port: 1, capabilities: [sd15],\n"
            f"     sim: {{seconds_per_step: {{sd15: 0.1}}, faults: {faults}}}}}\n"
        )

    write(
        "{malformed_ws: true, bad_system_stats: vram_text, bad_object_info: true, gzip_lie: true,"
        " drip_view_bytes_per_s: 100, view_garbage: true, view_oversize_bytes: 1000, wedge_after: 3}"
    )
    faults = load_config(tmp_path, env={}).nodes[0].sim.faults
    assert faults == SimFaults(
        malformed_ws=True,
        bad_system_stats="vram_text",
        bad_object_info=True,
        gzip_lie=True,
        drip_view_bytes_per_s=100.0,
        view_garbage=True,
        view_oversize_bytes=1000,
        wedge_after=3,
    )
    write("{bad_system_stats: sometimes}")
    with pytest.raises(ConfigError, match="bad_system_stats: expected one of vram_text, list"):
        load_config(tmp_path, env={})


async def test_buffers_of_many_unwatched_prompts_are_capped_in_total_oldest_first(client, sim):
    floods = [await sim.flood_unwatched(70, 16) for _ in range(40)]
    marker = client.watch("marker")
    await sim.flood_unwatched(1, 16, prompt_id="marker")
    assert (await collect(marker))[-1] == ExecutionSuccess("marker")
    stats = client.buffer_stats()
    assert stats.pending_events <= MAX_PENDING_TOTAL and stats.preview_bytes == 0
    assert stats.pending_prompts < len(floods), "the oldest prompts' buffers were let go"
    newest = await collect(client.watch(floods[-1]))
    assert newest[0] == ExecutionStart(floods[-1]) and newest[-1] == ExecutionSuccess(floods[-1])
    assert len(newest) == MAX_PENDING_EVENTS
