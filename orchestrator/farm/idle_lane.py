"""
The idle-only lane's operations: adopting speculative jobs, preempting them for real work, warming up nodes.

Routing between real and speculative work is the scheduler's (`Scheduler._next_job`); a preempted run is stopped
the way a losing backup copy is (racing.py): its task is abandoned and cancelled, the settler takes its prompt off
the node and queues the job again (speculative.py has the accounting).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from orchestrator.db import Database
from orchestrator.events import EventBus, JobFinished
from orchestrator.farm import router
from orchestrator.farm.job_table import JobTable
from orchestrator.farm.registry import Node, Registry
from orchestrator.farm.speculative import SpeculationLedger, is_speculative_batch
from orchestrator.farm.warmup import Warmer
from orchestrator.models import Job, JobSpec, JobStatus, Mode

log = logging.getLogger(__name__)


class IdleLane:
    """Adoption, preemption and warm-ups of the idle-only lane; counts speculative GPU-seconds."""

    def __init__(self, registry: Registry, db: Database, bus: EventBus, table: JobTable) -> None:
        self.registry = registry
        self.db = db
        self.bus = bus
        self.table = table
        #: speculative GPU-seconds and jobs (voting time), useful and wasted
        self.ledger = SpeculationLedger()
        #: checkpoint loads on idle nodes ahead of the next stage
        self.warmer = Warmer(registry, table.wake_all)
        #: the standing warm-up's specs, until real work is submitted (nodes are warmed as they go idle)
        self._pending: tuple[JobSpec, ...] = ()
        #: idle-lane prompts keep the checkpoint of the node's last real work cached (speculation.keep_alive)
        self.keep_alive = True

    def keep_alive_for(self, node: Node, job: Job) -> str | None:
        """
        The checkpoint a job's prompt keeps alive on `node`; None for real work or when not needed.

        Speculative jobs keep the node's last real checkpoint, and so do upscales: an upscale's prompt loads no
        checkpoint, so without a dangling loader the node would drop the one its real work uses.
        """
        if job.id not in self.table.speculative and job.params.mode is not Mode.UPSCALE:
            return None
        return self._keep(node, job.params.model_name)

    def _keep(self, node: Node, model: str) -> str | None:
        real = node.stats.last_real_checkpoint
        return real if self.keep_alive and real and real != model else None

    async def adopt(self, job_id: str, batch_id: str, spec: JobSpec) -> bool:
        """
        Make a speculative job the job `spec` of batch `batch_id` (a stage at Continue), queued, running or done.

        False when it cannot be (it failed or was cancelled, or is no speculative job): submit the spec instead.
        Reserve the id in the batch first (`submit(reserve=...)`); `release` a refused one after its replacement.
        """
        table = self.table
        b = self.table.batches.get(batch_id)
        assert b is not None, "adopt into a batch opened by submit(reserve=...)"
        row = await self.db.get_job(job_id)
        known = table.is_known(job_id)
        if row is None or not is_speculative_batch(row.batch_id) or not (known or row.status is JobStatus.DONE):
            return False
        if row.status.terminal and row.status is not JobStatus.DONE and not known:
            return False
        if known:
            ended = table.ending.get(job_id)
            if ended is not None and ended.status is not JobStatus.DONE:
                return False  # being cancelled or failed right now
            # Memory first: from here every copy of the job in flight is announced as the stage's.
            table.adopted[job_id] = (batch_id, spec)
            table.speculative.discard(job_id)
            if job_id in table.queued:
                table.queued[job_id] = table.current(table.queued[job_id])
            now = time.monotonic()
            for _, r in table.runs_of(job_id):
                if r.started is not None:
                    self.ledger.ran(job_id, now - r.started)
            self.ledger.adopt(job_id)
            self._leave(row.batch_id, job_id)
            await table.retrying(f"adopt {job_id[:8]}", lambda: self.db.adopt_job(job_id, batch_id, spec))
            table.wake_all()
            return True
        # Done already: its image becomes the stage's and is announced as any of the stage's would be.
        table.adopted[job_id] = (batch_id, spec)
        self.ledger.adopt(job_id)
        self._leave(row.batch_id, job_id)
        await table.retrying(f"adopt {job_id[:8]}", lambda: self.db.adopt_job(job_id, batch_id, spec))
        image = await self.db.image(job_id)
        done = table.current(row)
        if image is not None:
            self.bus.publish(JobFinished(job_id, batch_id, image, spec.session_id, spec.stage_id))
        table.mark_terminal(done)
        return True

    def _leave(self, batch_id: str, job_id: str) -> None:
        """An adopted job leaves its speculative batch; a batch whose every job was adopted is forgotten."""
        old = self.table.batches.get(batch_id)
        if old is None:
            return
        old.job_ids.discard(job_id)
        old.terminal.discard(job_id)
        # Its place in the speculative batch was its only one: nothing is ever added to that batch again.
        if not old.job_ids:
            del self.table.batches[batch_id]

    def release(self, batch_id: str, job_ids: Sequence[str]) -> None:
        """Free places reserved for adoptions that were refused (replacements are submitted first)."""
        b = self.table.batches.get(batch_id)
        if b is None:
            return
        b.job_ids -= set(job_ids)
        if b.job_ids:
            self.table.announce_if_complete(batch_id)

    def warm_up(self, specs: Sequence[JobSpec]) -> int:
        """
        Load the checkpoint these (next stage's) jobs need on the idle nodes the router would give them to.

        Idle time only: a node with work, or with real work it could take waiting, is left alone, and real work
        arriving stops a warm-up. Until real work is submitted the warm-up stands (`idle`): a node passed over
        because it was still busy, or that ran something else since (a straggler's backup copy of the last
        stage), is warmed once it is idle. Returns how many warm-ups started.
        """
        self.warmer.gave_up.clear()
        return self._warm(specs)

    def _warm(self, specs: Sequence[JobSpec]) -> int:
        started = 0
        by_model: dict[str, list[Job]] = {}
        for s in specs:
            if s.params.model_name:
                by_model.setdefault(s.params.model_name, []).append(Job(id="probe", batch_id="probe", spec=s))
        real = [j for j in self.table.queued.values() if j.id not in self.table.speculative]
        for model, probes in by_model.items():
            probe = probes[0]
            nodes = [n for n in self.registry if router.can_run(n.config, n.stats, probe)]
            # The nodes the router would use first for these jobs: the fastest for them.
            nodes.sort(key=lambda n: router.run_seconds(n.config, n.stats, probe))
            for node in nodes[: len(probes)]:
                if node.stats.loaded_checkpoint == model or self.warmer.busy(node.id):
                    continue
                if (node.id, model) in self.warmer.gave_up:
                    continue
                if any(router.can_run(node.config, node.stats, j) for j in real):
                    continue
                if self.table.running[node.id]:
                    continue  # still busy (a straggler's copy, an image being stored): its turn comes when idle
                self.warmer.start(node, model, self._keep(node, model))
                started += 1
        self._pending = tuple(specs) if by_model else ()
        return started

    def idle(self, node: Node) -> None:
        """The node has nothing to run: warm it up if the standing warm-up wants its checkpoint there."""
        if self._pending and not self.table.running[node.id] and not self.warmer.busy(node.id):
            self._warm(self._pending)

    def forget_warm_ups(self) -> None:
        """Real work was submitted: what the farm does next is its to decide, not a pending warm-up's."""
        self._pending = ()

    def preempt(self, node: Node) -> None:
        """Real work goes to this node now: stop its warm-up and interrupt its speculative runs (requeued)."""
        self.warmer.stop(node.id)
        for r in list(self.table.running[node.id].values()):
            # The scheduler asks once per free slot: a run stopped already is not stopped (nor counted) again.
            if r.preempted or r.job.id not in self.table.speculative:
                continue
            if not r.rendered and r.task is not None and not r.task.done():
                log.info("⏏ speculative job=%s stops on node=%s: real work needs it", r.job.id[:8], node.id)
                r.preempted = True
                r.abandon = "real work needs its node"
                self.ledger.preempted += 1
                r.task.cancel()
