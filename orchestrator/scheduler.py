"""
The persistent job queue and one pull loop per node: submit, launch, retry, fail over, cancel.

Job state changes happen only in `transition` (job_state.py), which rejects illegal ones. Routing decisions
(which job a free node takes) are the pure `router.choose_job`. Running one job on one node is the
`JobRunner`'s (job_runner.py), reconciling unfinished jobs after a restart is `Recovery`'s (recovery.py), and
the queue, runs and batches they all share are the `JobTable` (job_table.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator import backups, router
from orchestrator.config import SchedulerSettings
from orchestrator.db import Database
from orchestrator.errors import (
    ComfyError,
    ExecutionFailed,
    LocalStoreError,
    NoCapableNode,
    NodeUnavailable,
    PromptRejected,
    StoreError,
    WorkflowError,
)
from orchestrator.events import EventBus, JobFailed, JobQueued, JobRetried
from orchestrator.job_runner import InputMissing, JobRunner, Stalled
from orchestrator.job_state import ALLOWED, IllegalTransition, transition
from orchestrator.job_table import Batch, JobTable, Run
from orchestrator.models import GenerationParams, ImageRecord, Job, JobSpec, JobStatus, Mode
from orchestrator.reconciler import Reconciler
from orchestrator.recovery import Recovery
from orchestrator.registry import Node, Registry
from orchestrator.store import ImageStore
from orchestrator.supervisor import Supervisor
from orchestrator.workflows import WorkflowEngine

__all__ = [
    "ALLOWED",
    "BatchResult",
    "IllegalTransition",
    "InputMissing",
    "Scheduler",
    "Stalled",
    "transition",
]

log = logging.getLogger(__name__)

#: the supervised reconciliation loop's name
RECONCILER_TASK = "reconciler"


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
        self._aux: set[asyncio.Task[None]] = set()
        self._closing = False
        #: backup copies started, and how many of them delivered before the original
        self.backups_started = 0
        self.backups_won = 0
        #: jobs a cancel came too late for (their image was being stored): they end cancelled if that fails
        self._cancel_after: set[str] = set()
        registry.listeners.append(self._on_health)

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
        for nid in self.registry.nodes:
            self.supervisor.spawn(f"pull-{nid}", functools.partial(self._node_loop, nid))
        self.supervisor.spawn(RECONCILER_TASK, self._reconcile_loop)
        self.table.wake_all()

    async def stop(self) -> None:
        """Cancel loops and job tasks; jobs stay in the DB as they are, for the next start to reconcile."""
        self._closing = True
        for name in [f"pull-{nid}" for nid in self.registry.nodes] + [RECONCILER_TASK]:
            await self.supervisor.cancel(name)
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

    async def submit(self, specs: Sequence[JobSpec], *, batch_id: str | None = None) -> tuple[str, list[Job]]:
        """Queue a batch; returns its id and jobs (already persisted)."""
        if not specs:
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
        b = self.batches.setdefault(batch_id, Batch(set(), session_id=specs[0].session_id, stage_id=specs[0].stage_id))
        ids = {j.id for j in jobs}
        self.table.inserting |= ids
        try:
            await self.table.retrying(f"batch {batch_id[:8]}", lambda: self.db.insert_jobs(jobs))
        finally:
            self.table.inserting -= ids
        for j in jobs:
            b.job_ids.add(j.id)
            self.queued[j.id] = j
            self.bus.publish(JobQueued(j.id, batch_id, j.spec.session_id, j.spec.stage_id))
        log.info("→ batch=%s jobs=%d session=%s", batch_id, len(jobs), specs[0].session_id)
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
        ids = [j.id for j in self.queued.values() if j.batch_id == batch_id]
        ids += [jid for runs in self.running.values() for jid, r in runs.items() if r.job.batch_id == batch_id]
        n = 0
        for jid in ids:
            n += await self.cancel_job(jid)
        return n

    async def cancel_job(self, job_id: str) -> bool:
        job = self.queued.pop(job_id, None)
        if job is not None:
            await self._terminal(transition(job, JobStatus.CANCELLED, error="cancelled"), cancelled=True)
            return True
        runs = self.table.runs_of(job_id)
        if not runs or job_id in self.table.ending:
            return False  # nothing to cancel, or too late: its image (or its failure) is being recorded
        if any(r.rendered and not r.task_done for _, r in runs):
            # Its image is made and being stored: too late to cancel (an interrupted store would leave a file no
            # row names). Should storing it fail, the job ends cancelled instead of going round again.
            self._cancel_after.add(job_id)
            return False
        primary = next((r for _, r in runs if not r.backup), runs[0][1])
        ended = transition(primary.job, JobStatus.CANCELLED, error="cancelled")
        self.table.ending[job_id] = ended
        for nid, run in runs:
            run.abandon = "cancelled"
            run.posted.set()
            self.running[nid].pop(job_id, None)
            self.registry.get(nid).stats.in_flight = len(self.running[nid])
        for _, run in runs:
            if run.task is not None:
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task
        await self._terminal(ended, cancelled=True)
        self.table.wake_all()
        return True

    def jobs_in_flight(self, node_id: str) -> list[Job]:
        return [r.job for r in self.running[node_id].values()]

    # ------------------------------------------------------------------ pull loops

    def _views(self) -> list[router.NodeView]:
        now = time.monotonic()
        views = []
        for node in self.registry:
            runs = list(self.running[node.id].values())
            busy = 0.0
            for i, r in enumerate(runs):
                if r.started is not None:
                    busy += max(0.05 * r.estimate, r.started + r.estimate - now)
                elif i == 0 and r.launched:
                    # First in line and still not started, past its estimate (a slow upload, a locked DB, a node
                    # that took the prompt and went quiet): expect it to take as long again as it already has,
                    # so that waiting work goes to an idle node instead of waiting on a promise.
                    busy += max(r.estimate, now - r.launched)
                else:
                    busy += r.estimate
            next_ckpt = runs[-1].job.params.model_name if runs else node.stats.loaded_checkpoint
            views.append(
                router.NodeView(
                    config=node.config,
                    stats=node.stats,
                    busy_for=busy,
                    next_checkpoint=next_ckpt,
                    in_flight=len(runs),
                    depth=self.settings.node_depth,
                    load_seconds=self.registry.load_estimate(node.id),
                )
            )
        return views

    async def _node_loop(self, node_id: str) -> None:
        node = self.registry.get(node_id)
        wake = self.table.wake[node_id]
        recheck: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(recheck):
                    await wake.wait()
            wake.clear()
            while not self._closing and self.queued:
                job = router.choose_job(node_id, list(self.queued.values()), self._views())
                if job is None:
                    break
                self._launch(node, job)
            recheck = self._maybe_backup(node) if self.settings.backups and not self._closing else None

    # ------------------------------------------------------------------ backup copies of stragglers

    def _maybe_backup(self, node: Node) -> float | None:
        """On an idle node, copy a straggler from another node; returns when to look again (None: on a wake)."""
        if not node.stats.healthy or self.running[node.id]:
            return None
        if any(router.can_run(node.config, node.stats, j) for j in self.queued.values()):
            return None  # real work waits for it; the router decided to leave it to a faster node for now
        candidates = self._stragglers(node)
        choice = backups.choose_backup(candidates, self.settings.backup_after_factor)
        if choice.job is None:
            return choice.recheck_in
        runs = self.table.runs_of(choice.job.id)
        primary = next(r for _, r in runs if not r.backup)
        copy = next(c for c in candidates if c.job.id == choice.job.id)
        # The copy starts from the job as it was queued: its own attempt, node and prompt (not persisted).
        job = dataclasses.replace(
            primary.job, status=JobStatus.QUEUED, node_id=None, prompt_id=None, attempt=max(0, primary.job.attempt - 1)
        )
        run = Run(job=job, estimate=copy.copy_seconds, posted=asyncio.Event(), backup=True)
        self.backups_started += 1
        log.info(
            "⇉ backup of job=%s from node=%s on node=%s (%s)",
            job.id[:8],
            copy.node_id,
            node.id,
            "overdue" if choice.overdue else f"{copy.copy_seconds:.1f}s here vs {copy.remaining:.1f}s there",
        )
        self._start_run(node, run)
        return None

    def _stragglers(self, idle: Node) -> list[backups.Straggler]:
        now = time.monotonic()
        loaded = idle.stats.loaded_checkpoint
        out = []
        for nid, runs in self.running.items():
            if nid == idle.id:
                continue
            ahead = 0.0
            for r in runs.values():
                ahead += r.remaining(now)
                job = r.job
                if r.backup or r.rendered or len(self.table.runs_of(job.id)) > 1 or self.table.is_terminal(job):
                    continue
                if idle.id in job.failed_nodes or not router.can_run(idle.config, idle.stats, job):
                    continue
                model = job.params.model_name
                load = 0.0 if not model or model == loaded else self.registry.load_estimate(idle.id)
                out.append(
                    backups.Straggler(
                        job=job,
                        node_id=nid,
                        remaining=ahead,
                        elapsed=now - r.launched,
                        expected=r.expected,
                        copy_seconds=load + router.run_seconds(idle.config, idle.stats, job),
                    )
                )
        return out

    def _launch(self, node: Node, job: Job) -> None:
        del self.queued[job.id]
        prev = self.running[node.id]
        next_ckpt = next(reversed(prev.values())).job.params.model_name if prev else node.stats.loaded_checkpoint
        load = 0.0
        if job.params.model_name and next_ckpt != job.params.model_name:
            load = self.registry.load_estimate(node.id)
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
        node.stats.in_flight = len(prev)
        tag = "backup" if run.backup else "job"
        run.task = asyncio.create_task(self._run(node, run, body), name=f"{tag}-{run.job.id[:8]}-{node.id}")
        run.task.add_done_callback(functools.partial(self._run_ended, node, run))

    def _run_ended(self, node: Node, run: Run, _task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never enters _run, so its cleanup never ran: do it here, so a job
        # is never left in a run whose task is gone.
        if self.running[node.id].get(run.job.id) is not run:
            return
        del self.running[node.id][run.job.id]
        node.stats.in_flight = len(self.running[node.id])
        run.posted.set()
        if not self._closing and run.abandon != "cancelled" and not run.backup and not self.table.is_terminal(run.job):
            write = self._settle(run.job, node.id, run.abandon or "its run ended unsettled", run=run)
            if write is not None:
                self._spawn(write, name=f"settle-{run.job.id[:8]}")
        self.table.check_idle()
        self.table.wake_all()

    # ------------------------------------------------------------------ one job task: run it, then judge failures

    async def _run(self, node: Node, run: Run, body: Callable[[], Awaitable[None]] | None) -> None:
        job = run.job
        try:
            try:
                async with asyncio.timeout_at(run.deadline) as deadline:
                    await (body() if body is not None else self.runner.execute(node, run))
                self._settle_race(node, run)
            except asyncio.CancelledError:
                if run.abandon is None or self._closing or run.abandon == "cancelled":
                    raise
                # Cancelled by the scheduler itself (its node went down, or its copy delivered first): the job is
                # still this task's to hand back, so it is never left in neither the queue nor a run.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                await self._abandoned(node, run)
            except TimeoutError:
                if not deadline.expired():
                    raise
                await self._judge(node, run, Stalled(f"{node.id} took longer than this image's deadline"))
            except Exception as e:
                await self._judge(node, run, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The judging itself failed (a bug): the reconciler finds the job in neither queue nor run and heals it.
            log.exception("job=%s node=%s: could not settle a failed run", job.id[:8], node.id)
        finally:
            run.posted.set()
            if self.running[node.id].get(job.id) is run:
                del self.running[node.id][job.id]
            node.stats.in_flight = len(self.running[node.id])
            self.table.check_idle()
            self.table.wake_all()

    def _settle_race(self, node: Node, run: Run) -> None:
        """After a run delivered, stop the job's other copy (it lost the race)."""
        if not run.delivered:
            return
        self._cancel_after.discard(run.job.id)
        if run.backup:
            self.backups_won += 1
        for nid, other in self.table.runs_of(run.job.id):
            if other is not run and other.task is not None and not other.task.done():
                log.info("job=%s delivered by node=%s; stopping its copy on node=%s", run.job.id[:8], node.id, nid)
                other.abandon = "its copy delivered first"
                other.task.cancel()

    async def _abandoned(self, node: Node, run: Run) -> None:
        reason = run.abandon or "abandoned"
        if self.table.is_terminal(run.job):
            # Lost the race to its copy: take the prompt off the node so the GPU is free for real work.
            await self.runner.remove_from_node(node, run.job)
            return
        if run.backup:
            return
        await self._retry_or_fail(run.job, node.id, reason, run=run)

    async def _judge(self, node: Node, run: Run, e: Exception) -> None:
        """Decide what a failed run means: retry elsewhere (blaming the node or not) or fail the job."""
        job = run.job
        if self.table.is_terminal(job):
            # Its copy delivered; nothing to decide but freeing the node.
            if isinstance(e, Stalled):
                await self.runner.remove_from_node(node, job)
            return
        if run.backup:
            # A copy's failure changes nothing for its job: the original is still running.
            log.info("backup of job=%s on node=%s ended: %s", job.id[:8], node.id, e)
            if isinstance(e, NodeUnavailable):
                self.registry.report_failure(node.id, str(e))
            if isinstance(e, Stalled):
                await self.runner.remove_from_node(node, job)
            return
        if isinstance(e, PromptRejected):
            # A missing model is the node's problem (try another); any other rejection is the graph's.
            if any(d.type == "value_not_in_list" for d in e.node_errors):
                await self._retry_or_fail(job, node.id, e.user_message, run=run)
            else:
                await self._fail(job, e.user_message)
        elif isinstance(e, InputMissing):
            await self._fail(job, e.user_message)
        elif isinstance(e, LocalStoreError):
            # Our own disk: not the node's fault, so it is not reported and not excluded for the next attempt.
            await self._retry_or_fail(job, node.id, e.user_message, blame_node=False, run=run)
        elif isinstance(e, WorkflowError):
            await self._retry_or_fail(job, node.id, e.user_message, blame_node=False, run=run)
        elif isinstance(e, (NodeUnavailable, OSError)):
            self.registry.report_failure(node.id, str(e))
            await self._retry_or_fail(job, node.id, f"{node.id} stopped answering", run=run)
        elif isinstance(e, Stalled):
            await self.runner.remove_from_node(node, job)
            await self._retry_or_fail(job, node.id, str(e), run=run)
        elif isinstance(e, (ExecutionFailed, StoreError, ComfyError)):
            await self._retry_or_fail(job, node.id, e.user_message, run=run)
        else:
            log.error("job=%s node=%s unexpected failure", job.id[:8], node.id, exc_info=e)
            await self._retry_or_fail(job, node.id, f"unexpected error ({type(e).__name__})", run=run)

    # ------------------------------------------------------------------ failure handling

    async def _retry_or_fail(
        self, job: Job, node_id: str, reason: str, *, blame_node: bool = True, run: Run | None = None
    ) -> None:
        """Requeue a job (blaming its node unless told not to) or fail it when it is out of attempts."""
        write = self._settle(job, node_id, reason, blame_node=blame_node, run=run)
        if write is not None:
            await write

    def _settle(
        self, job: Job, node_id: str, reason: str, *, blame_node: bool = True, run: Run | None = None
    ) -> Coroutine[Any, Any, None] | None:
        """
        The verdict on a failed run, in memory at once; returns the DB write (and event) still to be awaited.

        Synchronous on purpose: whatever is cancelled afterwards, the job is already queued again, ending, or
        carried by its copy, so it is never in neither the queue nor a run (which the reconciler would heal).
        """
        if run is not None and self.running[node_id].get(job.id) is run:
            # The verdict is this run's last word: it no longer carries the job (its task may linger a moment in
            # clean-up, and a later failure of the job's next run must not take it for a live copy).
            del self.running[node_id][job.id]
            self.registry.get(node_id).stats.in_flight = len(self.running[node_id])
        others = [r for _, r in self.table.runs_of(job.id) if r is not run and not r.task_done and r.abandon is None]
        if others:
            # Its backup copy is still running: that run carries the job now (and its row says so).
            log.info("job=%s failed on node=%s (%s); its copy carries on", job.id[:8], node_id, reason)
            other = others[0]
            other.backup = False
            return self.table.atomically(self.table.persist(other.job))
        if job.id in self.queued or job.id in self.table.ending:
            return None  # already requeued or ending (a second verdict on the same job)
        if job.id in self._cancel_after:
            self._cancel_after.discard(job.id)
            return self._terminal(transition(job, JobStatus.CANCELLED, error="cancelled"), cancelled=True)
        self.table.idle.clear()
        self.table.wake_all()
        failed_nodes = (*job.failed_nodes, node_id) if blame_node else job.failed_nodes
        if job.status is JobStatus.QUEUED:
            # Its run was stopped before it posted anything: no attempt was used, nothing to blame.
            self.queued[job.id] = job
            return None
        if job.attempt >= job.max_attempts:
            log.warning("! job=%s failed: %s", job.id[:8], reason)
            return self._terminal(transition(job.with_(failed_nodes=failed_nodes), JobStatus.FAILED, error=reason))
        log.warning("↻ job=%s node=%s attempt=%d: %s", job.id[:8], node_id, job.attempt, reason)
        again = transition(job, JobStatus.QUEUED, failed_nodes=failed_nodes, error=reason)
        self.queued[again.id] = again
        self.bus.publish(
            JobRetried(
                again.id, again.batch_id, node_id, reason, again.attempt, again.spec.session_id, again.spec.stage_id
            )
        )
        return self.table.atomically(self.table.persist(again))

    async def _fail(self, job: Job, reason: str) -> None:
        log.warning("! job=%s failed: %s", job.id[:8], reason)
        await self._terminal(transition(job, JobStatus.FAILED, error=reason))

    def _terminal(self, job: Job, *, cancelled: bool = False) -> Coroutine[Any, Any, None]:
        """Mark a job ended in memory now; returns its DB write and event to await."""
        self.table.ending[job.id] = job
        return self.table.atomically(self._record_terminal(job, cancelled))

    async def _record_terminal(self, job: Job, cancelled: bool) -> None:
        if not await self.table.persist(job):
            # Its row ended first (a delivery that was already being written won): that ending stands.
            log.info("job=%s had already ended; not marking it %s", job.id[:8], job.status.value)
            self.table.ending.pop(job.id, None)
            return
        self.bus.publish(
            JobFailed(job.id, job.batch_id, job.error or "", cancelled, job.spec.session_id, job.spec.stage_id)
        )
        self.table.mark_terminal(job)

    def _on_health(self, node_id: str, healthy: bool) -> None:
        self.reconciler.poke()
        if healthy:
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
        node = self.registry.get(node_id)
        node.stats.in_flight = len(self.running[node_id])
        write = self._settle(run.job, node_id, "its run ended unsettled", run=run)
        if write is not None:
            self._spawn(write, f"heal-{node_id}")
