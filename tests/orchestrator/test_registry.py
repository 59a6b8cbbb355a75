"""The registry's health checks against simulated nodes: no answer, however odd, escapes a check or ends the loop."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.comfy.sim import ComfySimulator
from orchestrator.config import HealthSettings, TransferSettings
from orchestrator.events import EventBus, NodeHealthChanged
from orchestrator.farm.registry import HEALTH_TASK, Registry
from orchestrator.supervisor import Supervisor
from tests.orchestrator.comfy import SCALE, node_config
from tests.orchestrator.farm import Recorder

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sims():
    out = [ComfySimulator(replace(node_config(), id=f"n{i}"), time_scale=SCALE, port=0) for i in range(2)]
    for s in out:
        await s.start()
    yield out
    for s in out:
        await s.stop()


def node_configs(sims):
    return tuple(replace(s.node, port=s.port) for s in sims)


@pytest.fixture
async def registry(sims):
    bus = EventBus()
    supervisor = Supervisor()
    reg = Registry(node_configs(sims), HealthSettings(interval_s=0.02, timeout_s=2.0, failures_to_down=1), bus)
    rec = Recorder(bus)
    yield reg, supervisor, rec
    await reg.stop()
    await supervisor.stop()
    await rec.close()


def changes(rec, node_id):
    return [e.healthy for e in rec.of(NodeHealthChanged) if e.node_id == node_id]


@pytest.mark.parametrize(
    ("fault", "value", "reason"),
    [
        ("bad_system_stats", "vram_text", "vram_total is not a whole number"),
        ("bad_system_stats", "list", "malformed system_stats"),
        ("bad_object_info", True, "malformed object_info"),
        ("gzip_lie", True, "DecodingError"),
    ],
)
async def test_an_odd_answer_is_a_failed_probe_with_its_reason(sims, registry, fault, value, reason):
    reg, _, _ = registry
    setattr(sims[0].faults, fault, value)
    node = reg.get("n0")
    assert await reg.check(node) is False
    assert reason in node.stats.last_error and not node.stats.healthy
    setattr(sims[0].faults, fault, False if isinstance(value, bool) else None)
    assert await reg.check(node) is True
    assert node.stats.healthy and node.stats.models.checkpoints


async def test_a_bug_in_a_probe_is_a_failed_probe_not_an_escape(sims, registry, monkeypatch):
    reg, _, _ = registry
    node = reg.get("n0")

    async def broken_queue():
        raise KeyError("a bug in our own code")

    monkeypatch.setattr(node.client, "queue", broken_queue)
    assert await reg.check(node) is False
    assert node.stats.last_error.startswith("health check failed: KeyError")


async def test_the_loop_keeps_checking_every_node_and_a_node_comes_back(sims, registry):
    reg, supervisor, rec = registry
    sims[0].faults.bad_system_stats = "vram_text"
    await reg.start(supervisor)
    assert not reg.get("n0").stats.healthy and reg.get("n1").stats.healthy
    # The other node is still being checked: its death is noticed.
    sims[1].kill()
    await rec.wait_for(lambda r: changes(r, "n1") == [True, False])
    sims[0].faults.bad_system_stats = None
    await rec.wait_for(lambda r: changes(r, "n0") == [True])
    sims[0].faults.gzip_lie = True
    await rec.wait_for(lambda r: changes(r, "n0") == [True, False])
    sims[0].faults.gzip_lie = False
    await rec.wait_for(lambda r: changes(r, "n0") == [True, False, True])
    assert supervisor.restarts(HEALTH_TASK) == 0 and supervisor.dead() == []


async def test_transfer_settings_reach_every_client(sims):
    reg = Registry(
        node_configs(sims),
        HealthSettings(),
        EventBus(),
        transfer=TransferSettings(max_mib=2, timeout_s=7),
    )
    try:
        assert {n.client.max_transfer_bytes for n in reg} == {2 * 1024 * 1024}
        assert {n.client.transfer_timeout for n in reg} == {7}
    finally:
        await reg.stop()
