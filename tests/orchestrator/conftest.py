"""Fixtures shared by the orchestrator's tests against the simulated farm."""

from __future__ import annotations

import pytest

from tests.orchestrator.farm import TIME_SCALE, farm_config, sim_farm


@pytest.fixture
async def farm(tmp_path):
    """A running simulated farm (outliving any orchestrator, so restarts can be tested) and its config."""
    cfg = farm_config(tmp_path, reconcile_interval_s=0.2)
    async with sim_farm(cfg, TIME_SCALE) as (sim, bound):
        yield sim, bound
