"""Regression tests for the ways the farm used to lose a job or a node (issue 11), through the real orchestrator.

Each asserts what was delivered, how many times, and by which node; and that the reconciler healed nothing
(a heal is a bug found: these faults are handled where they happen).
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import threading
from dataclasses import replace

import pytest

from orchestrator.events import JobFailed, JobFinished, JobRetried, NodeHealthChanged
from orchestrator.models import JobStatus
from orchestrator.service import GenerateRequest, Orchestrator
from tests.orchestrator.farm import TIME_SCALE, Recorder, assert_exactly_once, db_of, run_batch, scheduler_of, store_of

pytestmark = pytest.mark.timeout(90)


def with_scheduler(cfg, **kw):
    return cfg.with_settings(scheduler=replace(cfg.settings.scheduler, **kw))


async def db_retries_reach(orch: Orchestrator, n: int) -> None:
    table = scheduler_of(orch).table
    while table.db_retries < n:
        table.db_retried.clear()
        await asyncio.wait_for(table.db_retried.wait(), 30)


def heals(orch: Orchestrator) -> int:
    return scheduler_of(orch).reconciler.total_heals


@pytest.mark.parametrize("victim", ["gpu-standard", "gpu-quality", "gpu-premium"])
async def test_node_dying_after_its_second_prompt_loses_nothing_and_never_hangs(farm, victim):
    # Issue 11.1: the node's death was seen twice at once (the job's own failure and the health loop's "down"),
    # and the second cancelled the first while it was requeueing: the job was left in neither queue nor run.
    sim, cfg = farm
    sim.simulators[victim].faults.die_after = 2
    # No backup copies: a copy of the victim's second prompt winning its race would have it interrupted before it
    # dies (seen under load), and then there is no death to test.
    async with Orchestrator(with_scheduler(cfg, backups=False)) as orch:
        health = Recorder(orch.bus)
        # Enough drafts that even the slowest victim gets a second prompt, however the router rates it under load.
        rec, result = await run_batch(orch, 40)
        assert sim.simulators[victim].stats.prompts_started >= 2, "the victim never got the prompt it dies on"
        assert not sim.simulators[victim].alive, "the victim died on it"
        # Its death is seen (the batch may end before the health loop's second failed check: waited for, not raced).
        await health.wait_for(lambda r: any(not e.healthy and e.node_id == victim for e in r.of(NodeHealthChanged)))
        await health.close()
        assert heals(orch) == 0
        # A copy that lost its race may still be being taken off its node; then nothing is left anywhere.
        await asyncio.wait_for(scheduler_of(orch).run_until_idle(), 10)
        assert not scheduler_of(orch).queued and not any(scheduler_of(orch).running.values())
    assert_exactly_once(rec, result, 40)
    assert rec.per_node()[victim] <= 1, "the dead node finished at most its first prompt"
    assert rec.retried_from()[victim] >= 1


async def test_a_node_that_drips_its_image_is_bounded_by_the_jobs_deadline(farm):
    # Issue 11.4: /view ran outside every deadline. Without backup copies, only the run's deadline moves it.
    sim, cfg = farm
    sim.simulators["gpu-premium"].faults.slow_view_seconds = 60.0 / TIME_SCALE  # a minute, in simulated time
    # Per-read timeouts longer than the whole deadline: a node that drips bytes never trips them.
    cfg = with_scheduler(cfg, backups=False, deadline_floor_s=0.5, deadline_factor=1.0, http_timeout_s=120.0)
    async with Orchestrator(cfg) as orch:
        rec, result = await run_batch(orch, 6)
        assert heals(orch) == 0
    assert_exactly_once(rec, result, 6)
    moved = [e for e in rec.of(JobRetried) if e.from_node == "gpu-premium"]
    assert moved and all("deadline" in e.reason for e in moved)
    assert "gpu-premium" not in rec.per_node()


async def test_a_locked_database_delays_jobs_but_loses_none(farm):
    # Issue 11.6: a failed DB write in the failure path killed the job's task. Another connection holds the write
    # lock well past the busy timeout while the batch runs; every write is retried until it lands.
    sim, cfg = farm
    cfg = cfg.with_settings(storage=replace(cfg.settings.storage, busy_timeout_s=0.05))
    sim.simulators["gpu-premium"].faults.error_after = 2  # a failure path that writes while the lock is held
    async with Orchestrator(cfg) as orch:
        rec = Recorder(orch.bus)
        locked, release = threading.Event(), threading.Event()

        def hold_lock() -> None:
            conn = sqlite3.connect(cfg.settings.storage.db_path, timeout=5)
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(30)
            conn.rollback()
            conn.close()

        # The batch is in first, its prompts held on wedged nodes; the lock lands, then the nodes go on: the jobs'
        # writes as they run, fail and finish (the failure path's too) meet the lock.
        for node in sim.simulators.values():
            node.faults.wedge = True
        batch = await orch.generate(GenerateRequest(prompt="locked", count=8, seed=100))
        holder = asyncio.get_running_loop().run_in_executor(None, hold_lock)
        await asyncio.get_running_loop().run_in_executor(None, locked.wait, 10)
        for node in sim.simulators.values():
            node.unwedge()
        # Let the writes pile up against the lock: some job must have failed a write before the lock goes.
        await db_retries_reach(orch, 3)
        release.set()
        await holder
        result = await orch.wait_batch(batch)
        await rec.close()
        jobs = await db_of(orch).batch_jobs(batch)
        assert heals(orch) == 0
    assert_exactly_once(rec, result, 8)
    assert all(j.status is JobStatus.DONE for j in jobs)


async def test_a_full_database_is_waited_out(farm):
    # SQLite's own "database or disk is full" (a page limit on the connection) while a batch is submitted: the
    # insert is retried until there is room again, and the batch then runs as usual.
    _sim, cfg = farm
    async with Orchestrator(cfg) as orch:
        rec = Recorder(orch.bus)
        async with db_of(orch).conn.execute("PRAGMA page_count") as cur:
            pages = (await cur.fetchone())[0]
        await db_of(orch).conn.execute(f"PRAGMA max_page_count = {pages}")
        req = GenerateRequest(prompt="full " + "x" * 1000, count=20, seed=100)
        submitting = asyncio.create_task(orch.generate(req))
        await db_retries_reach(orch, 3)
        assert not submitting.done()
        await db_of(orch).conn.execute("PRAGMA max_page_count = 1073741823")
        result = await orch.wait_batch(await submitting)
        await rec.close()
        assert heals(orch) == 0
    assert_exactly_once(rec, result, 20)


async def test_a_full_local_disk_is_not_blamed_on_the_gpus(farm):
    # Issue 11.7: ENOSPC from the image store marked healthy nodes failed ("gpu-draft stopped answering").
    _sim, cfg = farm
    cfg = with_scheduler(cfg, max_attempts=2)
    async with Orchestrator(cfg) as orch:
        full = asyncio.Event()
        full.set()
        real_write = store_of(orch)._write_atomic

        def write(path, data):
            if full.is_set():
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(path, data)

        store_of(orch)._write_atomic = write  # our own disk: no protocol peer can make it full
        rec = Recorder(orch.bus)
        batch = await orch.generate(GenerateRequest(prompt="disk", count=4, seed=100))
        result = await orch.wait_batch(batch)
        await rec.close()
        assert heals(orch) == 0
        assert all(n.stats.recent_failures == 0 and n.stats.healthy for n in orch.registry)
        jobs = await db_of(orch).batch_jobs(batch)
    # Out of retries the jobs fail with our disk named, and no node is excluded for it.
    assert not result.images and len(result.failed) == 4
    assert all("disk" in (j.error or "") for j in jobs)
    assert all(not j.failed_nodes for j in jobs)
    assert not rec.of(JobFinished) and len(rec.of(JobFailed)) == 4


async def test_a_disk_full_for_a_moment_delivers_everything_once(farm):
    _sim, cfg = farm
    async with Orchestrator(cfg) as orch:
        failures = 0
        real_write = store_of(orch)._write_atomic

        def write(path, data):
            nonlocal failures
            if failures < 6:
                failures += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(path, data)

        store_of(orch)._write_atomic = write
        rec, result = await run_batch(orch, 8)
        assert heals(orch) == 0
        assert all(n.stats.recent_failures == 0 for n in orch.registry)
    assert failures == 6
    assert_exactly_once(rec, result, 8)
    assert not rec.of(JobRetried), "a full local disk is waited out locally, not sent back to a GPU"


async def test_a_wedged_node_is_backed_up_and_the_copy_wins(farm):
    # A node that accepts a prompt and then goes silent held the batch for the whole stall timeout (121 s for 20
    # drafts). An idle node runs a copy of the overdue job; the copy delivers; the stall timeout stays long.
    sim, cfg = farm
    sim.simulators["gpu-standard"].faults.hang_after = 2
    cfg = with_scheduler(cfg, stall_timeout_s=600.0)
    async with Orchestrator(cfg) as orch:
        rec, result = await run_batch(orch, 20)
        assert scheduler_of(orch).backups_won >= 1
        assert heals(orch) == 0
        hung = [r.prompt_id for r in sim.simulators["gpu-standard"].stats.prompts][1]
        jobs = {j.id: j for j in await db_of(orch).batch_jobs(result.batch_id)}
    assert_exactly_once(rec, result, 20)
    assert not any(j.prompt_id == hung for j in jobs.values()), "the hung prompt delivered nothing"
    assert not rec.of(JobRetried), "the copy won; the original was never retried"


async def test_the_reconciler_heals_a_job_memory_lost_and_counts_it(farm):
    # A job the DB holds as queued but memory never heard of (what issue 11.1 left behind): the reconciler
    # queues it again, it is delivered once, and the heal is counted (each heal is a bug found).
    from orchestrator.models import Job

    _sim, cfg = farm
    async with Orchestrator(cfg) as orch:
        rec = Recorder(orch.bus)
        [spec] = orch.build_specs(GenerateRequest(prompt="lost", seed=7))
        lost = Job(id="lost-job", batch_id="lost-batch", spec=spec)
        await db_of(orch).insert_jobs([lost])
        assert await scheduler_of(orch).reconciler.reconcile_once() == 1
        result = await orch.wait_batch("lost-batch")
        await rec.close()
        assert dict(scheduler_of(orch).reconciler.heals) == {"orphan": 1}
        assert orch.farm_health().reconciler_heals == 1
    assert [im.id for im in result.images] == ["lost-job"]
    assert rec.finished_per_job() == {"lost-job": 1}
