"""
The DB is the truth: a periodic pass compares the unfinished jobs in the DB with what memory holds, and heals.

Healing: a job unfinished in the DB but in neither the queue nor a run is queued again; a run whose task ended
without settling its job is judged again; a job memory holds that the DB says has ended is let go; a batch
whose jobs have all ended but that was never announced is announced. Every heal is counted and logged, because
each one is a bug found: a fault-free run heals nothing, and the tests assert so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from orchestrator.db import Database
from orchestrator.farm.job_state import transition
from orchestrator.farm.job_table import JobTable, Run
from orchestrator.models import JobStatus

log = logging.getLogger(__name__)

_UNFINISHED = (JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING)


class Reconciler:
    """Compares the DB's unfinished jobs with the scheduler's memory and heals every difference."""

    def __init__(self, db: Database, table: JobTable, judge_run: Callable[[str, Run], None]) -> None:
        self._db = db
        self._table = table
        self._judge_run = judge_run
        self._poke = asyncio.Event()
        #: heals by kind since start
        self.heals: Counter[str] = Counter()
        self.passes = 0

    @property
    def total_heals(self) -> int:
        """Every heal since start (zero in a run without bugs)."""
        return sum(self.heals.values())

    def poke(self) -> None:
        """Run a pass now (a node went up or down)."""
        self._poke.set()

    async def run(self, interval: float) -> None:
        """Reconcile every `interval` seconds and whenever poked, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), interval)
            self._poke.clear()
            await self.reconcile_once()

    def _heal(self, kind: str, what: str) -> None:
        self.heals[kind] += 1
        log.warning("reconciler heal (%s): %s", kind, what)

    async def reconcile_once(self) -> int:
        """One pass; returns how many heals it made."""
        before = self.total_heals
        table = self._table
        for nid, runs in table.running.items():
            for run in list(runs.values()):
                if run.task_done and runs.get(run.job.id) is run:
                    self._heal("unsettled run", f"job {run.job.id[:8]} on {nid}: its task ended, the job did not")
                    self._judge_run(nid, run)
        rows = await self._db.jobs_with_status(_UNFINISHED)
        unfinished = {j.id for j in rows}
        for job in rows:
            # Memory may have moved on while the rows were read: judge by memory now, and by the row now.
            if table.is_known(job.id) or table.is_terminal(job):
                continue
            current = await self._db.get_job(job.id)
            if current is None or current.status.terminal or table.is_known(job.id) or table.is_terminal(job):
                continue
            if current.batch_id not in table.batches:
                table.load_batch(current.batch_id, await self._db.batch_jobs(current.batch_id))
            if table.is_known(job.id) or table.is_terminal(current):
                continue
            again = current if current.status is JobStatus.QUEUED else transition(current, JobStatus.QUEUED)
            self._heal("orphan", f"job {job.id[:8]} was {current.status.value} in the DB and nowhere in memory")
            table.queued[again.id] = again
            table.idle.clear()
            if again is not current:
                await table.atomically(table.persist(again))
        for jid in [j for j in table.queued if j not in unfinished]:
            current = await self._db.get_job(jid)
            if current is not None and current.status.terminal and jid in table.queued:
                self._heal("ended in the DB", f"job {jid[:8]} queued in memory but {current.status.value} in the DB")
                del table.queued[jid]
                table.mark_terminal(current)
        for batch_id, b in table.batches.items():
            if b.job_ids and b.terminal >= b.job_ids and not b.finished.is_set():
                self._heal("unannounced batch", f"batch {batch_id[:8]} ended without being announced")
                table.announce_if_complete(batch_id)
        table.forget_finished()
        table.check_idle()
        table.wake_all()
        self.passes += 1
        return self.total_heals - before
