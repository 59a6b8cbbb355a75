"""The supervisor: a crashing task is logged, restarted with backoff and counted; a returning one is finished."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.cli.doctor import _engine_health
from orchestrator.service import Orchestrator
from orchestrator.supervisor import Supervisor
from tests.orchestrator.farm import farm_config

pytestmark = pytest.mark.timeout(30)


async def test_a_crashing_task_is_restarted_and_counted(caplog):
    sup = Supervisor(backoff=(0.001, 0.01))
    runs = 0
    third = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise ValueError(f"bad input #{runs}")
        third.set()
        await asyncio.Event().wait()

    sup.spawn("flaky", flaky)
    await asyncio.wait_for(third.wait(), 5)
    assert sup.restarts("flaky") == 2 and sup.total_restarts == 2
    [health] = sup.status()
    assert health.alive and health.last_error == "ValueError: bad input #2"
    assert sup.dead() == []
    assert "task flaky crashed" in caplog.text and "Traceback" in caplog.text
    await sup.stop()
    assert sup.dead() == []


async def test_a_task_that_returns_is_finished_not_restarted():
    sup = Supervisor()
    done = asyncio.Event()

    async def once() -> None:
        done.set()

    sup.spawn("once", once)
    await done.wait()
    await sup.cancel("absent")  # cancelling an unknown name is harmless
    assert sup.restarts("once") == 0 and sup.dead() == []


async def test_a_name_is_unique_while_alive():
    sup = Supervisor()
    sup.spawn("loop", lambda: asyncio.Event().wait())
    with pytest.raises(RuntimeError):
        sup.spawn("loop", lambda: asyncio.Event().wait())
    await sup.stop()


async def test_the_engine_runs_its_loops_supervised_and_doctor_reads_its_health(tmp_path, capsys):
    cfg = farm_config(tmp_path)
    async with Orchestrator(cfg, sim=True, time_scale=0.01, ephemeral_ports=True) as orch:
        names = {t.name for t in orch.supervisor.status() if t.alive}
        nodes = [n.id for n in orch.config.nodes]
        assert {f"pull-{n}" for n in nodes} | {f"comfy-ws-{n}" for n in nodes} <= names
        assert {"registry-health", "reconciler", "health-snapshot", "sessions-pump"} <= names
        health = orch.farm_health()
        assert health.task_restarts == 0 and health.reconciler_heals == 0 and not health.dead_tasks
    assert await _engine_health(cfg) == 0
    out = capsys.readouterr().out
    assert "supervised task restarts: 0" in out and "reconciler heals: 0" in out
