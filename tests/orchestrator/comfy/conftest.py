"""Fixtures of the ComfyUI tests: a simulator on an ephemeral loopback port and a client connected to it."""

from __future__ import annotations

import pytest

from orchestrator.comfy.client import ComfyClient
from orchestrator.comfy.sim import ComfySimulator
from tests.orchestrator.comfy import SCALE, node_config


@pytest.fixture
async def sim():
    """A running simulator on an ephemeral loopback port."""
    s = ComfySimulator(node_config(), time_scale=SCALE, port=0)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def client(sim):
    """A started client connected to the simulator."""
    c = ComfyClient(sim.base_url, name="gpu-test", ws_backoff=(0.01, 0.05))
    await c.start()
    assert await c.wait_connected(5)
    yield c
    await c.close()
