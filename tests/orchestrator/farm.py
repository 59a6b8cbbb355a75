"""Helpers for tests that run the orchestrator against the simulated farm on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from orchestrator.comfy.sim import SimFarm
from orchestrator.config import Config, HealthSettings, SchedulerSettings, StorageSettings, load_config
from orchestrator.db import Database
from orchestrator.events import Event, EventBus, JobFinished, JobRetried, JobStarted, Subscription
from orchestrator.farm.scheduler import BatchResult, Scheduler
from orchestrator.service import GenerateRequest, Orchestrator
from orchestrator.store import ImageStore

ROOT = Path(__file__).resolve().parents[2]

#: simulated seconds are multiplied by this in tests: a 10-step sd15 draft takes ~5-15 ms
TIME_SCALE = 0.01


@asynccontextmanager
async def sim_farm(config: Config, time_scale: float = TIME_SCALE) -> AsyncIterator[tuple[SimFarm, Config]]:
    """Serve the config's simulated nodes on ephemeral loopback ports: the farm, and the config bound to them."""
    sim = SimFarm(config, time_scale=time_scale, ephemeral_ports=True)
    bound = await sim.start()
    try:
        yield sim, bound
    finally:
        await sim.stop()


def farm_config(tmp_path: Path, **scheduler: object) -> Config:
    """The shipped simulated farm with a temp data dir, fast health checks and short stall timeouts."""
    cfg = load_config(ROOT / "config", env={})
    sched = replace(SchedulerSettings(stall_timeout_s=2.0, http_timeout_s=5.0), **scheduler)
    return cfg.with_settings(
        storage=StorageSettings(data_dir=tmp_path / "data"),
        health=HealthSettings(interval_s=0.2, timeout_s=1.0, failures_to_down=2),
        scheduler=sched,
    )


class Recorder:
    """Collects every event of a bus in the background and lets a test wait for conditions."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Event] = []
        self._sub: Subscription = bus.subscribe(maxsize=100_000)
        self._cond = asyncio.Condition()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for ev in self._sub:
            async with self._cond:
                self.events.append(ev)
                self._cond.notify_all()

    async def wait_for(self, predicate, timeout: float = 30.0) -> None:
        async def check() -> None:
            async with self._cond:
                await self._cond.wait_for(lambda: predicate(self))

        await asyncio.wait_for(check(), timeout)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def finished_per_job(self) -> Counter:
        return Counter(e.job_id for e in self.of(JobFinished))

    def per_node(self) -> Counter:
        return Counter(e.image.node_id for e in self.of(JobFinished))

    def started_on(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for e in self.of(JobStarted):
            out[e.node_id].add(e.job_id)
        return out

    def retried_from(self) -> Counter:
        return Counter(e.from_node for e in self.of(JobRetried))

    async def close(self) -> None:
        """Stop listening after taking in every event already published."""
        self._sub.close()
        await asyncio.wait_for(self._task, 10)


async def run_batch(orch: Orchestrator, count: int, **kw) -> tuple[Recorder, BatchResult]:
    """One batch of `count` drafts with seeds 100.., and every event it caused."""
    rec = Recorder(orch.bus)
    batch = await orch.generate(GenerateRequest(prompt="a lighthouse at dusk", count=count, seed=100, **kw))
    result = await orch.wait_batch(batch)
    await rec.close()
    return rec, result


def assert_exactly_once(rec: Recorder, result: BatchResult, count: int) -> None:
    """Every image of a `run_batch` delivered, each once, every seed rendered once."""
    per_job = rec.finished_per_job()
    assert len(result.images) == count, [j.error for j in result.failed]
    assert sorted(per_job) == sorted(im.id for im in result.images)
    assert set(per_job.values()) == {1}, "an image was delivered more than once"
    seeds = sorted(im.seed for im in result.images)
    assert seeds == list(range(100, 100 + count)), "every seed rendered exactly once"


# The farm's own tests (and the chaos runs) look at what the facade keeps to itself: the scheduler's table,
# reconciler and backup counters, the DB a disk-full test fills, the store whose writes a test makes fail.
# This is the one place they reach behind it.


def scheduler_of(orch: Orchestrator) -> Scheduler | None:
    """The orchestrator's scheduler (None before start)."""
    return orch._scheduler


def db_of(orch: Orchestrator) -> Database:
    """The orchestrator's own Database connection."""
    return orch._db


def store_of(orch: Orchestrator) -> ImageStore:
    """The orchestrator's image store."""
    return orch._store
