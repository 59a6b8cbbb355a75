"""Fixtures shared by the orchestrator's tests against the simulated farm."""

from __future__ import annotations

import pytest

from orchestrator.comfy.sim import SimFarm
from tests.orchestrator.farm import TIME_SCALE, farm_config


@pytest.fixture
async def farm(tmp_path):
    """A running simulated farm (outliving any orchestrator, so restarts can be tested) and its config."""
    cfg = farm_config(tmp_path, reconcile_interval_s=0.2)
    sim = SimFarm(cfg, time_scale=TIME_SCALE, ephemeral_ports=True)
    bound = await sim.start()
    yield sim, bound
    await sim.stop()
