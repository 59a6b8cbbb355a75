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
import functools
import logging
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator import router
from orchestrator.config import SchedulerSettings
from orchestrator.db import Database
from orchestrator.errors import (
    ComfyError,
    ExecutionFailed,
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
        self.table = JobTable(bus, registry.nodes)
        self.runner = JobRunner(registry, db, store, workflows, bus, settings, self.table)
        self.recovery = Recovery(registry, db, self.table, self.runner, self._retry_or_fail)
        self._aux: set[asyncio.Task[None]] = set()
        self._closing = False
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
        self.table.wake_all()

    async def stop(self) -> None:
        """Cancel loops and job tasks; jobs stay in the DB as they are, for the next start to reconcile."""
        self._closing = True
        for nid in self.registry.nodes:
            await self.supervisor.cancel(f"pull-{nid}")
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
        await self.db.insert_jobs(jobs)
        b = self.batches.setdefault(batch_id, Batch(set(), session_id=specs[0].session_id, stage_id=specs[0].stage_id))
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
        for nid, runs in self.running.items():
            run = runs.get(job_id)
            if run is None:
                continue
            run.posted.set()
            if run.task is not None:
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task
            runs.pop(job_id, None)
            await self.runner.remove_from_node(self.registry.get(nid), run.job)
            await self._terminal(transition(run.job, JobStatus.CANCELLED, error="cancelled"), cancelled=True)
            self.table.wake_all()
            return True
        return False

    def jobs_in_flight(self, node_id: str) -> list[Job]:
        return [r.job for r in self.running[node_id].values()]

    # ------------------------------------------------------------------ pull loops

    def _views(self) -> list[router.NodeView]:
        now = time.monotonic()
        views = []
        for node in self.registry:
            runs = list(self.running[node.id].values())
            busy = 0.0
            for r in runs:
                if r.started is not None:
                    busy += max(0.05 * r.estimate, r.started + r.estimate - now)
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
        while True:
            await wake.wait()
            wake.clear()
            while not self._closing and self.queued:
                job = router.choose_job(node_id, list(self.queued.values()), self._views())
                if job is None:
                    break
                self._launch(node, job)

    def _launch(self, node: Node, job: Job) -> None:
        del self.queued[job.id]
        prev = self.running[node.id]
        next_ckpt = next(reversed(prev.values())).job.params.model_name if prev else node.stats.loaded_checkpoint
        load = 0.0
        if job.params.model_name and next_ckpt != job.params.model_name:
            load = self.registry.load_estimate(node.id)
        run = Run(job=job, estimate=load + router.run_seconds(node.config, node.stats, job), posted=asyncio.Event())
        if prev:
            run.after = next(reversed(prev.values()))
        prev[job.id] = run
        node.stats.in_flight = len(prev)
        run.task = asyncio.create_task(self._run(node, run), name=f"job-{job.id[:8]}-{node.id}")

    # ------------------------------------------------------------------ one job task: run it, then judge failures

    async def _run(self, node: Node, run: Run) -> None:
        job = run.job
        try:
            try:
                await self.runner.execute(node, run)
            except asyncio.CancelledError:
                raise
            except PromptRejected as e:
                # A missing model is the node's problem (try another); any other rejection is the graph's.
                if any(d.type == "value_not_in_list" for d in e.node_errors):
                    await self._retry_or_fail(run.job, node.id, e.user_message)
                else:
                    await self._fail(run.job, e.user_message)
            except InputMissing as e:
                await self._fail(run.job, e.user_message)
            except WorkflowError as e:
                await self._retry_or_fail(run.job, node.id, e.user_message, blame_node=False)
            except (NodeUnavailable, OSError) as e:
                self.registry.report_failure(node.id, str(e))
                await self._retry_or_fail(run.job, node.id, f"{node.id} stopped answering")
            except Stalled as e:
                await self.runner.remove_from_node(node, run.job)
                await self._retry_or_fail(run.job, node.id, str(e))
            except (ExecutionFailed, StoreError, ComfyError) as e:
                await self._retry_or_fail(run.job, node.id, e.user_message)
            except Exception as e:
                log.exception("job=%s node=%s unexpected failure", job.id, node.id)
                await self._retry_or_fail(run.job, node.id, f"unexpected error ({type(e).__name__})")
        finally:
            run.posted.set()
            if self.running[node.id].get(job.id) is run:
                del self.running[node.id][job.id]
            node.stats.in_flight = len(self.running[node.id])
            self.table.check_idle()
            self.table.wake_all()

    # ------------------------------------------------------------------ failure handling

    async def _retry_or_fail(self, job: Job, node_id: str, reason: str, *, blame_node: bool = True) -> None:
        failed_nodes = (*job.failed_nodes, node_id) if blame_node else job.failed_nodes
        if job.attempt >= job.max_attempts:
            await self._fail(job.with_(failed_nodes=failed_nodes), reason)
            return
        log.warning("↻ job=%s node=%s attempt=%d: %s", job.id[:8], node_id, job.attempt, reason)
        again = transition(job, JobStatus.QUEUED, failed_nodes=failed_nodes, error=reason)
        await self.db.update_job(again)
        self.queued[again.id] = again
        self.bus.publish(
            JobRetried(
                again.id, again.batch_id, node_id, reason, again.attempt, again.spec.session_id, again.spec.stage_id
            )
        )
        self.table.wake_all()

    async def _fail(self, job: Job, reason: str) -> None:
        log.warning("! job=%s failed: %s", job.id[:8], reason)
        await self._terminal(transition(job, JobStatus.FAILED, error=reason))

    async def _terminal(self, job: Job, *, cancelled: bool = False) -> None:
        await self.table.atomically(self._record_terminal(job, cancelled))

    async def _record_terminal(self, job: Job, cancelled: bool) -> None:
        await self.db.update_job(job)
        self.bus.publish(
            JobFailed(job.id, job.batch_id, job.error or "", cancelled, job.spec.session_id, job.spec.stage_id)
        )
        self.table.mark_terminal(job)

    def _on_health(self, node_id: str, healthy: bool) -> None:
        if healthy:
            self.table.wake_all()
            return
        runs = list(self.running[node_id].values())
        for r in runs:
            if r.task is not None:
                r.task.cancel()
        if runs:
            self._spawn(self._requeue_after_down(node_id, runs), name=f"requeue-{node_id}")

    async def _requeue_after_down(self, node_id: str, runs: list[Run]) -> None:
        for r in runs:
            if r.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await r.task
            self.running[node_id].pop(r.job.id, None)
            jid = r.job.id
            # The task may have requeued (or even relaunched) the job itself while it was being cancelled.
            if jid in self.queued or any(jid in runs for runs in self.running.values()):
                continue
            current = await self.db.get_job(jid)
            if current is not None and current.status.active and current.node_id == node_id:
                await self._retry_or_fail(r.job.with_(attempt=current.attempt), node_id, f"{node_id} went down")
        self.registry.get(node_id).stats.in_flight = len(self.running[node_id])
        self.table.wake_all()
