"""
The verdict on a run that did not deliver, and the ending of a job: requeue it elsewhere, or fail or cancel it.

Policy only: what a failure means (the node's fault or not, worth another attempt or not) and the one place a
job is made FAILED or CANCELLED. Running jobs is the job runner's, choosing nodes the router's.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

from orchestrator.errors import (
    ComfyError,
    ExecutionFailed,
    LocalStoreError,
    NodeUnavailable,
    PromptRejected,
    StoreError,
    WorkflowError,
)
from orchestrator.events import EventBus, JobFailed, JobRetried
from orchestrator.farm.job_runner import InputMissing, JobRunner, Stalled
from orchestrator.farm.job_state import transition
from orchestrator.farm.job_table import JobTable, Run
from orchestrator.farm.registry import Node, Registry
from orchestrator.models import Job, JobStatus

log = logging.getLogger(__name__)


class Settler:
    """Judges failed runs and ends jobs; the scheduler hands it every run that ended without delivering."""

    def __init__(self, registry: Registry, table: JobTable, runner: JobRunner, bus: EventBus) -> None:
        self.registry = registry
        self.table = table
        self.runner = runner
        self.bus = bus
        #: jobs a cancel came too late for (their image was being stored): they end cancelled if that fails
        self.cancel_after: set[str] = set()

    async def abandoned(self, node: Node, run: Run) -> None:
        """A run the scheduler itself cancelled (its node went down, its copy delivered): hand its job back."""
        reason = run.abandon or "abandoned"
        if run.preempted and not self.table.is_terminal(run.job):
            # Memory first (the job is queued again at once), then the prompt comes off the node.
            write = self.settle(run.job, node.id, reason, blame_node=False, run=run)
            await self.runner.remove_from_node(node, run.job)
            if write is not None:
                await write
            return
        if self.table.is_terminal(run.job):
            # Lost the race to its copy: take the prompt off the node so the GPU is free for real work.
            await self.runner.remove_from_node(node, run.job)
            return
        if run.backup:
            return
        await self.retry_or_fail(run.job, node.id, reason, run=run)

    async def judge(self, node: Node, run: Run, e: Exception) -> None:
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
                await self.retry_or_fail(job, node.id, e.user_message, run=run)
            else:
                await self.fail(job, e.user_message)
        elif isinstance(e, InputMissing):
            await self.fail(job, e.user_message)
        elif isinstance(e, LocalStoreError):
            # Our own disk: not the node's fault, so it is not reported and not excluded for the next attempt.
            await self.retry_or_fail(job, node.id, e.user_message, blame_node=False, run=run)
        elif isinstance(e, WorkflowError):
            await self.retry_or_fail(job, node.id, e.user_message, blame_node=False, run=run)
        elif isinstance(e, (NodeUnavailable, OSError)):
            self.registry.report_failure(node.id, str(e))
            await self.retry_or_fail(job, node.id, f"{node.id} stopped answering", run=run)
        elif isinstance(e, Stalled):
            await self.runner.remove_from_node(node, job)
            await self.retry_or_fail(job, node.id, str(e), run=run)
        elif isinstance(e, (ExecutionFailed, StoreError, ComfyError)):
            await self.retry_or_fail(job, node.id, e.user_message, run=run)
        else:
            log.error("job=%s node=%s unexpected failure", job.id[:8], node.id, exc_info=e)
            await self.retry_or_fail(job, node.id, f"unexpected error ({type(e).__name__})", run=run)

    async def retry_or_fail(
        self, job: Job, node_id: str, reason: str, *, blame_node: bool = True, run: Run | None = None
    ) -> None:
        """Requeue a job (blaming its node unless told not to) or fail it when it is out of attempts."""
        write = self.settle(job, node_id, reason, blame_node=blame_node, run=run)
        if write is not None:
            await write

    def settle(
        self, job: Job, node_id: str, reason: str, *, blame_node: bool = True, run: Run | None = None
    ) -> Coroutine[Any, Any, None] | None:
        """
        The verdict on a failed run, in memory at once; returns the DB write (and event) still to be awaited.

        Synchronous on purpose: whatever is cancelled afterwards, the job is already queued again, ending, or
        carried by its copy, so it is never in neither the queue nor a run (which the reconciler would heal).
        """
        running = self.table.running[node_id]
        if run is not None and running.get(job.id) is run:
            # The verdict is this run's last word: it no longer carries the job (its task may linger a moment in
            # clean-up, and a later failure of the job's next run must not take it for a live copy).
            del running[job.id]
        others = [r for _, r in self.table.runs_of(job.id) if r is not run and not r.task_done and r.abandon is None]
        if others:
            # Its backup copy is still running: that run carries the job now (and its row says so).
            log.info("job=%s failed on node=%s (%s); its copy carries on", job.id[:8], node_id, reason)
            other = others[0]
            other.backup = False
            return self.table.atomically(self.table.persist(other.job))
        if job.id in self.table.queued or job.id in self.table.ending:
            return None  # already requeued or ending (a second verdict on the same job)
        if job.id in self.cancel_after:
            self.cancel_after.discard(job.id)
            return self.cancel(job)
        self.table.idle.clear()
        self.table.wake_all()
        failed_nodes = (*job.failed_nodes, node_id) if blame_node else job.failed_nodes
        if job.status is JobStatus.QUEUED:
            # Its run was stopped before it posted anything: no attempt was used, nothing to blame.
            self.table.queued[job.id] = self.table.current(job)
            return None
        if run is not None and run.preempted:
            # A speculative run that real work took the node from: back to the idle-only lane, no attempt used.
            again = transition(self.table.current(job), JobStatus.QUEUED, attempt=max(0, job.attempt - 1))
            self.table.queued[again.id] = again
            return self.table.atomically(self.table.persist(again))
        if job.attempt >= job.max_attempts:
            return self.failing(job, reason, failed_nodes)
        log.warning("↻ job=%s node=%s attempt=%d: %s", job.id[:8], node_id, job.attempt, reason)
        again = transition(self.table.current(job), JobStatus.QUEUED, failed_nodes=failed_nodes, error=reason)
        self.table.queued[again.id] = again
        self.bus.publish(
            JobRetried(
                again.id, again.batch_id, node_id, reason, again.attempt, again.spec.session_id, again.spec.stage_id
            )
        )
        return self.table.atomically(self.table.persist(again))

    async def fail(self, job: Job, reason: str) -> None:
        """Fail a job for good now (its failure is not worth another attempt)."""
        await self.failing(job, reason)

    def failing(self, job: Job, reason: str, failed_nodes: tuple[str, ...] | None = None) -> Coroutine[Any, Any, None]:
        """The one place a job is made FAILED: in memory now; returns its DB write and event to await."""
        log.warning("! job=%s failed: %s", job.id[:8], reason)
        nodes = job.failed_nodes if failed_nodes is None else failed_nodes
        return self.terminal(transition(job, JobStatus.FAILED, failed_nodes=nodes, error=reason))

    def cancel(self, job: Job) -> Coroutine[Any, Any, None]:
        """Make a job CANCELLED in memory now; returns its DB write and event to await."""
        return self.terminal(transition(job, JobStatus.CANCELLED, error="cancelled"), cancelled=True)

    def terminal(self, job: Job, *, cancelled: bool = False) -> Coroutine[Any, Any, None]:
        """Mark a job ended in memory now; returns its DB write and event to await."""
        job = self.table.current(job)
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
