"""
Runs one chaos schedule against the real orchestrator and simulated ComfyUI nodes, then checks the invariants.

Invariants, after every run:
- every job ends in exactly one terminal state (one JobFinished or JobFailed per job, across restarts) and none
  is left unfinished in the DB (a lost job);
- every delivered image is stored once and recorded once (one row, one file, one thumbnail per done job, and no
  other image file);
- no job waits while a capable node is idle for longer than the reconciler period plus a little;
- the batches end within a stated bound (their fault-free time plus the timeouts the faults can cost);
- no supervised task is dead at the end;
- the reconciler healed nothing (each heal is a bug found: no fault here needs one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.comfy.sim import SimFarm
from orchestrator.config import Config, HealthSettings, SchedulerSettings, StorageSettings, load_config
from orchestrator.events import JobFailed, JobFinished
from orchestrator.farm import router
from orchestrator.models import JobStatus
from orchestrator.service import GenerateRequest, Orchestrator
from tests.chaos.faults import ACTIONS, Fault, Schedule, World, install_disk
from tests.orchestrator.farm import ROOT, Recorder, db_of, scheduler_of, store_of

TIME_SCALE = 0.01
RECONCILE_S = 0.25
#: how long a job may wait while a capable node idles before that counts as a violation
IDLE_GRACE_S = RECONCILE_S + 0.75
#: how long stopping the orchestrators and the farm may take at the end of a run
TEARDOWN_S = 30.0


def chaos_config(tmp: Path) -> Config:
    """The shipped simulated farm with short timeouts, so that a fault costs a second, not minutes."""
    cfg = load_config(ROOT / "config", env={})
    return cfg.with_settings(
        storage=StorageSettings(data_dir=tmp / "data", busy_timeout_s=0.05),
        health=HealthSettings(interval_s=0.1, timeout_s=0.5, failures_to_down=2),
        scheduler=SchedulerSettings(
            max_attempts=4,
            stall_timeout_s=0.6,
            http_timeout_s=1.0,
            deadline_floor_s=1.5,
            deadline_factor=4.0,
            reconcile_interval_s=RECONCILE_S,
        ),
    )


def bound_seconds(schedule: Schedule) -> float:
    """The stated bound: a fault-free allowance plus what each fault can cost at these settings."""
    cost = {
        "kill": 2.0,
        "hang": 2.0,
        "error": 0.5,
        "drop_ws": 2.0,
        "slow_view": 3.0,
        "db_lock": 1.5,
        "disk_full": 3.0,
        "restart": 3.0,
        "cancel": 0.5,
        "garbage_ws": 2.0,
        "bad_health": 2.0,
        "bad_view": 3.0,
        "wedge": 3.0,
    }
    return 5.0 + sum(cost.get(f.kind, 3.0) + f.duration for f in schedule.faults)


@dataclass
class Outcome:
    """What one schedule did, and every invariant it broke (empty when it held them all)."""

    schedule: Schedule
    jobs: int = 0
    delivered: int = 0
    #: failed or cancelled (cancelled: also counted here, by a user's cancel)
    failed: int = 0
    cancelled: int = 0
    lost: int = 0
    heals: int = 0
    restarts: int = 0
    #: supervised tasks that crashed and were restarted, with their last error (each is a bug to look at)
    crashes: list[str] = field(default_factory=list)
    backups: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


class _IdleWatch:
    """Samples the scheduler: a job queued while a capable node idles, for longer than the grace, is a violation."""

    def __init__(self) -> None:
        self.orch: Orchestrator | None = None
        self.since: dict[str, float] = {}
        self.worst = 0.0
        self.worst_job = ""

    def sample(self) -> None:
        orch = self.orch
        if orch is None or scheduler_of(orch) is None or orch.registry is None:
            self.since.clear()
            return
        sched, now = scheduler_of(orch), time.monotonic()
        idle = [n for n in orch.registry if n.stats.healthy and not sched.running[n.id]]
        waiting = set()
        for job in sched.queued.values():
            if any(router.can_run(n.config, n.stats, job) for n in idle):
                waiting.add(job.id)
                start = self.since.setdefault(job.id, now)
                if now - start > self.worst:
                    self.worst, self.worst_job = now - start, job.id
        for jid in list(self.since):
            if jid not in waiting:
                del self.since[jid]

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.02)  # a monitor's sampling period, not synchronisation


async def _apply(world: World, fault: Fault) -> None:
    await asyncio.sleep(fault.at)  # the fault's random moment
    await ACTIONS[fault.kind](world, fault)


async def run_schedule(schedule: Schedule, tmp: Path) -> Outcome:
    """Run the schedule's batches under its faults and check every invariant."""
    out = Outcome(schedule)
    cfg = chaos_config(tmp)
    farm = SimFarm(cfg, time_scale=TIME_SCALE, ephemeral_ports=True)
    bound_cfg = await farm.start()
    world = World(farm, cfg.settings.storage.db_path)
    watch = _IdleWatch()
    recorders: list[Recorder] = []
    orchs: list[Orchestrator] = []
    fault_tasks: list[asyncio.Task[None]] = []
    watcher = asyncio.create_task(watch.run())

    async def start_orch() -> Orchestrator:
        orch = Orchestrator(bound_cfg)
        install_disk(world, store_of(orch))
        recorders.append(Recorder(orch.bus))  # before start: a restart's recovery publishes while starting
        orchs.append(orch)
        await orch.start()
        world.orch = orch
        watch.orch = orch
        return orch

    t0 = time.monotonic()
    orch: Orchestrator | None = None
    try:
        async with asyncio.timeout(bound_seconds(schedule)):
            orch = await start_orch()
            batches = []
            for i, count in enumerate(schedule.counts):
                req = GenerateRequest(prompt=f"chaos {schedule.seed}", count=count, seed=1000 * i, user_id=f"u{i}")
                batches.append(await orch.generate(req))
            world.batches = batches
            fault_tasks = [asyncio.create_task(_apply(world, f)) for f in schedule.faults if f.kind != "restart"]
            restart = schedule.restart
            waiting = asyncio.gather(*(orch.wait_batch(b) for b in batches))
            if restart is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(waiting), restart.at)
                except TimeoutError:
                    waiting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiting
                    watch.orch = world.orch = None
                    await orch.stop()
                    orch = await start_orch()
                    waiting = asyncio.gather(*(orch.wait_batch(b) for b in batches))
            await waiting
            out.seconds = time.monotonic() - t0
            # Undo what is still in force, then let copies that lost their race leave their nodes.
            for t in fault_tasks:
                t.cancel()
            for undo in world.undo:
                await undo()
            await scheduler_of(orch).run_until_idle()
            watch.sample()
            for rec in recorders:
                await rec.close()  # takes in every event already published
            await _check(out, orch, batches, recorders, world)
    except TimeoutError:
        out.seconds = time.monotonic() - t0
        out.violations.append(f"the batches did not end within the bound of {bound_seconds(schedule):.1f}s")
        if orch is not None:
            with contextlib.suppress(Exception):
                await _count_lost(out, orch)
    finally:
        watcher.cancel()
        for t in fault_tasks:
            t.cancel()
        try:
            # A stop that never ends is a bug too: say where every task is instead of hanging the suite.
            async with asyncio.timeout(TEARDOWN_S):
                await _teardown(world, recorders, orchs, farm)
        except TimeoutError:
            out.violations.append(f"stopping took longer than {TEARDOWN_S}s; tasks still running:\n{_task_dump()}")
    if watch.worst > IDLE_GRACE_S:
        out.violations.append(
            f"job {watch.worst_job[:8]} waited {watch.worst:.2f}s while a capable node was idle (grace {IDLE_GRACE_S}s)"
        )
    return out


async def _teardown(world: World, recorders: list[Recorder], orchs: list[Orchestrator], farm: SimFarm) -> None:
    for undo in world.undo:
        with contextlib.suppress(Exception):
            await undo()
    for rec in recorders:
        with contextlib.suppress(Exception):
            await rec.close()
    for o in orchs:
        with contextlib.suppress(Exception):
            await o.stop()
    await farm.stop()


def _task_dump() -> str:
    lines = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        frames = task.get_stack(limit=3)
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        lines.append(f"  {task.get_name()}: {where}")
    return "\n".join(sorted(lines)[:40])


async def _count_lost(out: Outcome, orch: Orchestrator) -> None:
    unfinished = await db_of(orch).jobs_with_status([JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING])
    out.lost = len(unfinished)
    if unfinished:
        states = Counter(j.status.value for j in unfinished)
        out.violations.append(f"{len(unfinished)} jobs never ended: {dict(states)}")


async def _check(out: Outcome, orch: Orchestrator, batches: list[str], recorders: list[Recorder], world: World) -> None:
    v = out.violations
    jobs = [j for b in batches for j in await db_of(orch).batch_jobs(b)]
    out.jobs = len(jobs)
    out.delivered = sum(j.status is JobStatus.DONE for j in jobs)
    out.failed = sum(j.status in (JobStatus.FAILED, JobStatus.CANCELLED) for j in jobs)
    out.cancelled = sum(j.status is JobStatus.CANCELLED for j in jobs)
    await _count_lost(out, orch)
    ends: Counter[str] = Counter()
    for rec in recorders:
        for ev in rec.events:
            if isinstance(ev, (JobFinished, JobFailed)):
                ends[ev.job_id] += 1
    for j in jobs:
        if j.status.terminal and ends[j.id] != 1:
            v.append(f"job {j.id[:8]} ({j.status.value}) was announced ending {ends[j.id]} times")
    for j in jobs:
        if j.status is JobStatus.FAILED and not j.error:
            v.append(f"job {j.id[:8]} failed without a reason")
    images = [im for b in batches for im in await db_of(orch).batch_images(b)]
    if Counter(im.id for im in images) != Counter(j.id for j in jobs if j.status is JobStatus.DONE):
        v.append(f"{len(images)} image rows for {out.delivered} delivered jobs")
    for im in images:
        if not Path(im.path).is_file() or not Path(im.thumbnail).is_file():
            v.append(f"image {im.id[:8]} is recorded but its file or thumbnail is missing")
    stored = list(store_of(orch).images_dir.rglob("*.png"))
    if len(stored) != out.delivered:
        named = {Path(im.path).name for im in images}
        extra = sorted(p.name for p in stored if p.name not in named)
        v.append(f"{len(stored)} image files on disk for {out.delivered} delivered jobs (no row names {extra})")
    out.heals = sum(scheduler_of(o).reconciler.total_heals for o in [orch])
    if out.heals:
        v.append(f"the reconciler healed {out.heals} times: {dict(scheduler_of(orch).reconciler.heals)}")
    dead = orch.supervisor.dead()
    if dead:
        v.append(f"supervised tasks dead at the end: {dead}")
    expected = {f"pull-{n.id}" for n in orch.registry} | {"reconciler", "registry-health", "scheduler-health"}
    alive = {t.name for t in orch.supervisor.status() if t.alive}
    if not expected <= alive:
        v.append(f"supervised tasks not running at the end: {sorted(expected - alive)}")
    out.restarts = orch.supervisor.total_restarts
    out.crashes = [f"{t.name}: {t.last_error}" for t in orch.supervisor.status() if t.restarts]
    out.backups = scheduler_of(orch).backups_started


def replace_counts(schedule: Schedule, counts: tuple[int, ...]) -> Schedule:
    """The same schedule with other batch sizes (a fault-free baseline uses no faults at all)."""
    return replace(schedule, counts=counts)
