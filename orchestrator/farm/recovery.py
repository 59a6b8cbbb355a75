"""
Restart safety: reconcile the jobs a previous process left unfinished with the nodes they were on.

A queued job is queued again; a job whose node has finished it is adopted (its image delivered); a job still
running or pending on its node is re-attached (followed to the end); any other is requeued as lost.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from orchestrator.comfy.protocol import HistoryEntry
from orchestrator.db import Database
from orchestrator.errors import ComfyError, ExecutionFailed
from orchestrator.farm import router
from orchestrator.farm.job_runner import JobRunner
from orchestrator.farm.job_state import transition
from orchestrator.farm.job_table import JobTable, Run
from orchestrator.farm.registry import Node, Registry
from orchestrator.models import Job, JobStatus

log = logging.getLogger(__name__)


class StartRun(Protocol):
    """The scheduler's way to run a job's run on a node: it judges whatever the body raises, as for any run."""

    def __call__(self, node: Node, run: Run, body: Callable[[], Awaitable[None]]) -> None:
        """Run `body` as `run`'s task on `node`."""
        ...


@dataclass(slots=True, eq=False)
class Recovery:
    """Adopts, re-attaches or requeues the jobs a previous process left unfinished."""

    registry: Registry
    db: Database
    table: JobTable
    runner: JobRunner
    start_run: StartRun

    async def recover(self) -> None:
        """Reconcile jobs a previous process left queued or on a node: adopt, re-attach or requeue."""
        pending = await self.db.jobs_with_status([JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING])
        if not pending:
            return
        for batch_id in {j.batch_id for j in pending}:
            self.table.load_batch(batch_id, await self.db.batch_jobs(batch_id))
        self.table.idle.clear()
        for job in pending:
            if job.status is JobStatus.QUEUED:
                self.table.queued[job.id] = job
                continue
            node = self.registry.nodes.get(job.node_id or "")
            if node is None or job.prompt_id is None or not node.stats.healthy:
                await self._requeue_lost(job, "its node was not reachable after a restart")
                continue
            await self._reattach(node, job)
        log.info("recovered %d unfinished jobs", len(pending))

    async def _requeue_lost(self, job: Job, reason: str) -> None:
        again = transition(job, JobStatus.QUEUED, error=reason)
        self.table.queued[again.id] = again
        await self.table.atomically(self.table.persist(again))

    async def _reattach(self, node: Node, job: Job) -> None:
        assert job.prompt_id is not None
        try:
            entry = await node.client.history(job.prompt_id)
            q = await node.client.queue() if entry is None else None
        except ComfyError:
            await self._requeue_lost(job, "its node was not reachable after a restart")
            return
        if entry is not None and entry.completed:
            run = Run(job=job)
            log.info("adopting finished job=%s from node=%s", job.id[:8], node.id)
            self.start_run(node, run, functools.partial(self._adopt, node, run, entry))
            return
        if q is not None and job.prompt_id in (*q.running, *q.pending):
            run = Run(job=job, estimate=router.run_seconds(node.config, node.stats, job))
            if job.prompt_id in q.running:
                run.started = time.monotonic()
            log.info("re-attached job=%s on node=%s", job.id[:8], node.id)
            self.start_run(node, run, functools.partial(self.runner.follow, node, run))
            return
        await self._requeue_lost(job, "lost by its node during a restart")

    async def _adopt(self, node: Node, run: Run, entry: HistoryEntry) -> None:
        if entry.status != "success" or not entry.images:
            raise ExecutionFailed(entry.error_message or "the prompt failed")
        run.rendered = True
        run.delivered = await self.runner.deliver(node, run.job, entry.images[0], None)
