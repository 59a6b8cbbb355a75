"""
The persistent job queue and one pull loop per node: submit, launch, cancel, and one task per run.

Job state changes happen only in `transition` (job_state.py), which rejects illegal ones. Routing decisions
(which job a free node takes, or when to ask it again) are the pure `router.choose`. Running one job on one node
is the `JobRunner`'s (job_runner.py), judging a run that did not deliver is the `Settler`'s (settling.py), backup
copies of stragglers are `Racing`'s (racing.py), reconciling unfinished jobs after a restart is `Recovery`'s
(recovery.py), and the queue, runs and batches they all share are the `JobTable` (job_table.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.config import SchedulerSettings
from orchestrator.db import Database
from orchestrator.errors import NoCapableNode
from orchestrator.events import EventBus, JobQueued, NodeHealthChanged
from orchestrator.farm import router
from orchestrator.farm.idle_lane import IdleLane
from orchestrator.farm.job_runner import JobRunner, Stalled
from orchestrator.farm.job_state import transition
from orchestrator.farm.job_table import Batch, JobTable, Run, node_outlook
from orchestrator.farm.racing import Racing
from orchestrator.farm.reconciler import Reconciler
from orchestrator.farm.recovery import Recovery
from orchestrator.farm.registry import Node, Registry
from orchestrator.farm.settling import Settler
from orchestrator.farm.speculative import is_speculative_batch
from orchestrator.models import GenerationParams, ImageRecord, Job, JobSpec, JobStatus, Mode
from orchestrator.store import ImageStore
from orchestrator.supervisor import Supervisor
from orchestrator.workflows import WorkflowEngine

__all__ = ["BatchResult", "Scheduler"]

log = logging.getLogger(__name__)

#: the supervised loops' names: reconciliation, and hearing nodes go up and down
RECONCILER_TASK = "reconciler"
HEALTH_TASK = "scheduler-health"


def _earliest(a: float | None, b: float | None) -> float | None:
    """The sooner of two optional delays (None: never)."""
    return b if a is None else a if b is None else min(a, b)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a batch delivered."""

    batch_id: str
    images: list[ImageRecord]
    failed: list[Job]


class Scheduler:
    """Owns the queue, the per-node pull loops and every job task."""

    def __init__(
        self,
        registry: Registry,
        db: Database,
        store: ImageStore,
        workflows: WorkflowEngine,
        bus: EventBus,
        settings: SchedulerSettings,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.registry = registry
        self.supervisor = supervisor or Supervisor()
        self.db = db
        self.store = store
        self.workflows = workflows
        self.bus = bus
        self.settings = settings
        self.table = JobTable(bus, registry.nodes, db)
        self.runner = JobRunner(registry, db, store, workflows, bus, settings, self.table)
        self.recovery = Recovery(registry, db, self.table, self.runner, self._start_run)
        self.reconciler = Reconciler(db, self.table, self._judge_orphan_run)
        self.settler = Settler(registry, self.table, self.runner, bus)
        self.racing = Racing(registry, self.table, settings, self.settler, self._start_run)
        #: the idle-only lane (voting time): adoption, preemption, warm-ups, speculative GPU-seconds
        self.lane = IdleLane(registry, db, bus, self.table)
        self.runner.keep_alive = self.lane.keep_alive_for
        self.speculation = self.lane.ledger
        self._aux: set[asyncio.Task[None]] = set()
        self._closing = False
        # Subscribed now, not in start(): a node that changes health while recovery runs is heard too.
        self._health = bus.subscribe(accept=lambda e: isinstance(e, NodeHealthChanged))

    @property
    def backups_started(self) -> int:
        """Backup copies of stragglers started since start."""
        return self.racing.started

    @property
    def backups_won(self) -> int:
        """Backup copies that delivered before their original."""
        return self.racing.won

    @property
    def queued(self) -> dict[str, Job]:
        """Jobs waiting for a node, by id."""
        return self.table.queued

    @property
    def running(self) -> dict[str, dict[str, Run]]:
        """The runs on each node, by node id then job id, in launch order."""
        return self.table.running

    @property
    def batches(self) -> dict[str, Batch]:
        """The batches this process knows, by id."""
        return self.table.batches

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Recover unfinished jobs from the DB, then start one pull loop per node."""
        await self.recovery.recover()
        # Speculative work of a previous process predicted votes that have moved on since: none of it is kept.
        for batch_id in [b for b in self.batches if is_speculative_batch(b)]:
            await self.cancel_batch(batch_id)
        for nid in self.registry.nodes:
            self.supervisor.spawn(f"pull-{nid}", functools.partial(self._node_loop, nid))
        self.supervisor.spawn(RECONCILER_TASK, self._reconcile_loop)
        self.supervisor.spawn(HEALTH_TASK, self._health_loop)
        self.table.wake_all()

    async def stop(self) -> None:
        """Cancel loops and job tasks; jobs stay in the DB as they are, for the next start to reconcile."""
        self._closing = True
        for name in [f"pull-{nid}" for nid in self.registry.nodes] + [RECONCILER_TASK, HEALTH_TASK]:
            await self.supervisor.cancel(name)
        self._health.close()
        await self.lane.warmer.close()
        tasks = list(self._aux)
        for runs in self.running.values():
            tasks += [r.task for r in runs.values() if r.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.table.finish_commits()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._aux.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._aux.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ public operations

    def check_capable(self, spec: JobSpec) -> None:
        """Raise NoCapableNode when no configured node could ever run this spec."""
        probe = Job(id="probe", batch_id="probe", spec=spec)
        p = spec.params
        nodes = [n for n in self.registry if router.could_ever_run(n.config, probe)]
        if not nodes:
            what = "upscale" if p.mode is Mode.UPSCALE else f"{p.family.value} at {p.width}x{p.height}"
            raise NoCapableNode(f"no node can run {what}", user_message=f"No GPU in the farm can run {what}.")
        # A node that has not reported its models yet (down since start) might still hold them.
        if any(not n.stats.models.checkpoints for n in nodes):
            return
        for kind, name, held in self._required_files(p, nodes):
            if name and not any(name in h for h in held):
                have = sorted({f for h in held for f in h})
                listed = ", ".join(have[:8]) + (" ..." if len(have) > 8 else "")
                raise NoCapableNode(
                    f"{kind} {name} is on no node",
                    user_message=f"No GPU has the {kind} `{name}`" + (f" (the farm has: {listed})." if listed else "."),
                )

    @staticmethod
    def _required_files(p: GenerationParams, nodes: list[Node]) -> list[tuple[str, str, list[tuple[str, ...]]]]:
        if p.mode is Mode.UPSCALE:
            return [("upscale model", p.upscale_model or "", [n.stats.models.upscale_models for n in nodes])]
        out = [("checkpoint", p.checkpoint, [n.stats.models.checkpoints for n in nodes])]
        out += [("LoRA", lo.name, [n.stats.models.loras for n in nodes]) for lo in p.loras]
        return out

    async def submit(
        self,
        specs: Sequence[JobSpec],
        *,
        batch_id: str | None = None,
        reserve: Sequence[str] = (),
        stage: tuple[str, str] | None = None,
    ) -> tuple[str, list[Job]]:
        """
        Queue a batch; returns its id and jobs (already persisted).

        A speculative batch (its id starts with SPECULATIVE_BATCH_PREFIX) goes to the idle-only lane. `reserve`:
        ids of jobs the batch will adopt next (`adopt`), so that it is not announced complete before they join.
        `stage`: the (session id, stage id) the batch belongs to, when no spec says so (every job is adopted).
        """
        if not specs and not reserve:
            raise ValueError("empty batch")
        for s in specs:
            self.check_capable(s)
        batch_id = batch_id or uuid.uuid4().hex
        now = time.time()
        jobs = [
            Job(
                id=uuid.uuid4().hex,
                batch_id=batch_id,
                spec=s,
                max_attempts=self.settings.max_attempts,
                created_at=now,
            )
            for s in specs
        ]
        session_id, stage_id = stage or ((specs[0].session_id, specs[0].stage_id) if specs else (None, None))
        b = self.batches.setdefault(batch_id, Batch(set(), session_id=session_id, stage_id=stage_id))
        b.job_ids |= set(reserve)
        if not is_speculative_batch(batch_id):
            self.lane.forget_warm_ups()
        if not jobs:
            return batch_id, jobs
        ids = {j.id for j in jobs}
        self.table.inserting |= ids
        try:
            await self.table.retrying(f"batch {batch_id[:8]}", lambda: self.db.insert_jobs(jobs))
        finally:
            self.table.inserting -= ids
        if is_speculative_batch(batch_id):
            self.table.speculative |= ids
            self.speculation.submitted += len(jobs)
        for j in jobs:
            b.job_ids.add(j.id)
            self.queued[j.id] = j
            self.bus.publish(JobQueued(j.id, batch_id, j.spec.session_id, j.spec.stage_id))
        log.info("→ batch=%s jobs=%d session=%s", batch_id, len(jobs), jobs[0].spec.session_id)
        self.table.idle.clear()
        self.table.wake_all()
        return batch_id, jobs

    async def wait_batch(self, batch_id: str) -> BatchResult:
        """Wait until every job of the batch is terminal."""
        b = self.batches.get(batch_id)
        if b is not None:
            await b.finished.wait()
        images = await self.db.batch_images(batch_id)
        failed = [j for j in await self.db.batch_jobs(batch_id) if j.status is not JobStatus.DONE]
        return BatchResult(batch_id, images, failed)

    async def run_until_idle(self) -> None:
        """Wait until no job is queued or running."""
        await self.table.idle.wait()

    async def cancel_batch(self, batch_id: str) -> int:
        """Cancel every unfinished job of a batch; returns how many were cancelled."""
        cur = self.table.current
        ids = [j.id for j in self.queued.values() if cur(j).batch_id == batch_id]
        ids += [jid for runs in self.running.values() for jid, r in runs.items() if cur(r.job).batch_id == batch_id]
        n = 0
        for jid in ids:
            n += await self.cancel_job(jid)
        return n

    async def cancel_job(self, job_id: str) -> bool:
        """Cancel one unfinished job; False when there is nothing to cancel or it is too late to."""
        job = self.queued.pop(job_id, None)
        if job is not None:
            await self.settler.cancel(job)
            return True
        runs = self.table.runs_of(job_id)
        if not runs or job_id in self.table.ending:
            return False  # nothing to cancel, or too late: its image (or its failure) is being recorded
        if any(r.rendered and not r.task_done for _, r in runs):
            # Its image is made and being stored: too late to cancel (an interrupted store would leave a file no
            # row names). Should storing it fail, the job ends cancelled instead of going round again.
            self.settler.cancel_after.add(job_id)
            return False
        primary = next((r for _, r in runs if not r.backup), runs[0][1])
        ended = transition(primary.job, JobStatus.CANCELLED, error="cancelled")
        self.table.ending[job_id] = ended
        for nid, run in runs:
            run.abandon = "cancelled"
            run.posted.set()
            self.running[nid].pop(job_id, None)
        for _, run in runs:
            if run.task is not None:
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task
        await self.settler.terminal(ended, cancelled=True)
        self.table.wake_all()
        return True

    def jobs_in_flight(self, node_id: str) -> list[Job]:
        """The jobs running (or posted) on a node now, in launch order."""
        return [r.job for r in self.running[node_id].values()]

    # ------------------------------------------------------------------ pull loops

    def run_times(self, job: Job) -> list[float]:
        """The router's estimate of `job`'s run time (no checkpoint load) on each node able to run it now."""
        return [
            router.run_seconds(n.config, n.stats, job) for n in self.registry if router.can_run(n.config, n.stats, job)
        ]

    def _views(self, *, real_only: bool = False) -> list[router.NodeView]:
        """What the router knows of every node; real_only: as if speculative runs were not there (they yield)."""
        now = time.monotonic()
        views = []
        for node in self.registry:
            runs = list(self.running[node.id].values())
            if real_only:
                runs = [r for r in runs if r.job.id not in self.table.speculative]
            # The same estimate of each run's remaining time as the backup copies use (Run.outlook).
            busy = node_outlook(runs, now)
            next_ckpt = runs[-1].checkpoint_after if runs else node.stats.loaded_checkpoint
            kept = None if runs else node.stats.kept_checkpoint
            views.append(
                router.NodeView(
                    config=node.config,
                    stats=node.stats,
                    busy_for=busy.seconds,
                    next_checkpoint=next_ckpt,
                    in_flight=len(runs),
                    depth=self.settings.node_depth,
                    load_seconds=self.registry.load_estimate(node.id),
                    kept_checkpoint=kept,
                    swap_seconds=self.registry.swap_estimate(node.id),
                    busy_rate=busy.rate,
                    steady_for=busy.steady_for,
                )
            )
        return views

    async def _node_loop(self, node_id: str) -> None:
        node = self.registry.get(node_id)
        wake = self.table.wake[node_id]
        recheck: float | None = None
        while True:
            # Woken when a job is queued or a run ends; else at `recheck`, the moment the router said its answer
            # could change (a run on another node turning overdue) or a straggler becomes worth a copy.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(recheck):
                    await wake.wait()
            wake.clear()
            recheck = None
            while not self._closing and self.queued:
                choice = self._next_job(node)
                if choice.job is None:
                    recheck = choice.recheck_in
                    break
                self._launch(node, choice.job)
            if self.settings.backups and not self._closing:
                recheck = _earliest(recheck, self.racing.maybe_backup(node))
            if not self._closing and not self.running[node_id]:
                self.lane.idle(node)

    def _next_job(self, node: Node) -> router.Choice:
        """
        The job this node takes now: a real one first; a speculative one only when no real job it can run waits.

        Speculative runs are invisible to real routing: a real job the router gives this node interrupts them
        (preempts, the backup-copy way: abandoned, taken off the node, queued again in the idle-only lane).
        """
        spec = self.table.speculative
        real = [j for j in self.queued.values() if j.id not in spec]
        choice = router.choose(node.id, real, self._views(real_only=True)) if real else router.Choice(None)
        if choice.job is not None:
            self.lane.preempt(node)
            return choice
        if any(router.can_run(node.config, node.stats, j) for j in real):
            return choice  # real work waits for it (the router leaves it to a faster node for now)
        if self.running[node.id] or self.lane.warmer.busy(node.id):
            return router.Choice(None)  # idle-only: a speculative job never queues behind anything on a node
        idle = [j for j in self.queued.values() if j.id in spec]
        return router.choose(node.id, idle, self._views()) if idle else router.Choice(None)

    def _launch(self, node: Node, job: Job) -> None:
        del self.queued[job.id]
        # A preempted speculative run is on its way off the node: what this job loads depends on the rest.
        prev = [r for r in self.running[node.id].values() if not r.preempted]
        next_ckpt = prev[-1].checkpoint_after if prev else node.stats.loaded_checkpoint
        kept = None if prev else node.stats.kept_checkpoint
        load = self.registry.switch_estimate(node.id, job.params.loads_checkpoint, next_ckpt, kept)
        run = Run(job=job, estimate=load + router.run_seconds(node.config, node.stats, job), posted=asyncio.Event())
        self._start_run(node, run)

    def _start_run(self, node: Node, run: Run, body: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run a job on a node in its own task (body: what to do there; by default, post and follow its prompt)."""
        prev = self.running[node.id]
        ahead = sum(r.estimate for r in prev.values())
        s = self.settings
        allowed = min(s.deadline_cap_s, max(s.deadline_floor_s, s.deadline_factor * (ahead + run.estimate)))
        run.deadline = asyncio.get_running_loop().time() + allowed
        run.launched = time.monotonic()
        run.expected = ahead + run.estimate
        if prev:
            run.after = next(reversed(prev.values()))
        prev[run.job.id] = run
        tag = "backup" if run.backup else "job"
        run.task = asyncio.create_task(self._run(node, run, body), name=f"{tag}-{run.job.id[:8]}-{node.id}")
        run.task.add_done_callback(functools.partial(self._run_ended, node, run))

    def _run_ended(self, node: Node, run: Run, _task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never enters _run, so its cleanup never ran: do it here, so a job
        # is never left in a run whose task is gone.
        if self.running[node.id].get(run.job.id) is not run:
            return
        del self.running[node.id][run.job.id]
        run.posted.set()
        if not self._closing and run.abandon != "cancelled" and not run.backup:
            self._settle_later(run.job, node.id, run.abandon or "its run ended unsettled")
        self.table.check_idle()
        self.table.wake_all()

    def _settle_later(self, job: Job, node_id: str, reason: str) -> None:
        """The verdict on a run that ended without one (it is out of `running` already); its write follows."""
        if self.table.is_terminal(job):
            return
        write = self.settler.settle(job, node_id, reason)
        if write is not None:
            self._spawn(write, name=f"settle-{job.id[:8]}")

    # ------------------------------------------------------------------ one job task: run it, then judge failures

    async def _run(self, node: Node, run: Run, body: Callable[[], Awaitable[None]] | None) -> None:
        job = run.job
        speculative = job.id in self.table.speculative
        try:
            try:
                async with asyncio.timeout_at(run.deadline) as deadline:
                    await (body() if body is not None else self.runner.execute(node, run))
                self.racing.settle_race(node, run)
            except asyncio.CancelledError:
                if run.abandon is None or self._closing or run.abandon == "cancelled":
                    raise
                # Cancelled by the scheduler itself (its node went down, or its copy delivered first): the job is
                # still this task's to hand back, so it is never left in neither the queue nor a run.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                await self.settler.abandoned(node, run)
            except TimeoutError:
                if not deadline.expired():
                    raise
                await self.settler.judge(node, run, Stalled(f"{node.id} took longer than this image's deadline"))
            except Exception as e:
                await self.settler.judge(node, run, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The judging itself failed (a bug): the reconciler finds the job in neither queue nor run and heals it.
            log.exception("job=%s node=%s: could not settle a failed run", job.id[:8], node.id)
        finally:
            run.posted.set()
            if speculative and job.id not in self.table.adopted and run.started is not None and not run.backup:
                spent = time.monotonic() - run.started
                if run.delivered:
                    self.speculation.ran(job.id, spent)
                else:
                    self.speculation.wasted_gpu_s += spent
            if self.running[node.id].get(job.id) is run:
                del self.running[node.id][job.id]
                if run.abandon is not None and run.abandon != "cancelled" and not run.backup and not self._closing:
                    # Its node went down while a failure of this run was being judged, before the verdict: the
                    # job is still this run's to hand back, so it is never left in neither the queue nor a run.
                    self._settle_later(run.job, node.id, run.abandon)
            self.table.check_idle()
            self.table.wake_all()

    async def _health_loop(self) -> None:
        async for event in self._health:
            assert isinstance(event, NodeHealthChanged)
            self._on_health(event.node_id)

    def _on_health(self, node_id: str) -> None:
        self.reconciler.poke()
        # By the node's health now, not the event's: a node that went down and came back since must keep its work.
        if self.registry.get(node_id).stats.healthy:
            self.table.wake_all()
            return
        # Each run's own task hands its job back (see _run): no second actor touches the job.
        for r in list(self.running[node_id].values()):
            # A run whose image is already here (being stored) no longer needs its node.
            if r.task is not None and not r.task.done() and not r.rendered:
                r.abandon = f"{node_id} went down"
                r.task.cancel()

    # ------------------------------------------------------------------ reconciliation

    async def _reconcile_loop(self) -> None:
        await self.reconciler.run(self.settings.reconcile_interval_s)

    def _judge_orphan_run(self, node_id: str, run: Run) -> None:
        """A run whose task ended without settling its job: hand the job back to the queue (a reconciler heal)."""
        self.running[node_id].pop(run.job.id, None)
        write = self.settler.settle(run.job, node_id, "its run ended unsettled", run=run)
        if write is not None:
            self._spawn(write, f"heal-{node_id}")
