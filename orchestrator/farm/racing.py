"""
Backup copies of stragglers at work: starting them on idle nodes, and stopping the losers.

An idle node starts a copy of the straggler `backups.choose_backup` picks; the first run of a job to deliver
stops the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from orchestrator.config import SchedulerSettings
from orchestrator.farm import backups, router
from orchestrator.farm.job_table import JobTable, Outlook, Run
from orchestrator.farm.registry import Node, Registry
from orchestrator.farm.settling import Settler
from orchestrator.models import JobStatus

log = logging.getLogger(__name__)


class Racing:
    """Starts backup copies on idle nodes and stops the losers of each race; counts copies started and won."""

    def __init__(
        self,
        registry: Registry,
        table: JobTable,
        settings: SchedulerSettings,
        settler: Settler,
        start_run: Callable[[Node, Run], None],
    ) -> None:
        self.registry = registry
        self.table = table
        self.settings = settings
        self.settler = settler
        self.start_run = start_run
        #: backup copies started, and how many of them delivered before the original
        self.started = 0
        self.won = 0

    def maybe_backup(self, node: Node) -> float | None:
        """On an idle node, copy a straggler from another node; returns when to look again (None: on a wake)."""
        if not node.stats.healthy or self.table.running[node.id]:
            return None
        if any(router.can_run(node.config, node.stats, j) for j in self.table.queued.values()):
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
        self.started += 1
        log.info(
            "⇉ backup of job=%s from node=%s on node=%s (%s)",
            job.id[:8],
            copy.node_id,
            node.id,
            "overdue" if choice.overdue else f"{copy.copy_seconds:.1f}s here vs {copy.remaining:.1f}s there",
        )
        self.start_run(node, run)
        return None

    def _stragglers(self, idle: Node) -> list[backups.Straggler]:
        now = time.monotonic()
        loaded, kept = idle.stats.loaded_checkpoint, idle.stats.kept_checkpoint
        out = []
        for nid, runs in self.table.running.items():
            if nid == idle.id:
                continue
            ahead = Outlook(0.0)
            for i, r in enumerate(runs.values()):
                # The router's estimate too (node_outlook): one figure for when a node will be free.
                ahead += r.outlook(now, first=i == 0)
                job = r.job
                if r.backup or r.rendered or len(self.table.runs_of(job.id)) > 1 or self.table.is_terminal(job):
                    continue
                if job.id in self.table.speculative:
                    continue  # idle-only work is not worth a second GPU
                if idle.id in job.failed_nodes or not router.can_run(idle.config, idle.stats, job):
                    continue
                # The router's switch cost too: a checkpoint the idle node keeps in its cache is a swap, not a load.
                load = self.registry.switch_estimate(idle.id, job.params.loads_checkpoint, loaded, kept)
                out.append(
                    backups.Straggler(
                        job=job,
                        node_id=nid,
                        remaining=ahead.seconds,
                        elapsed=now - r.launched,
                        expected=r.expected,
                        copy_seconds=load + router.run_seconds(idle.config, idle.stats, job),
                        remaining_rate=ahead.rate,
                        steady_for=ahead.steady_for,
                    )
                )
        return out

    def settle_race(self, node: Node, run: Run) -> None:
        """After a run delivered, stop the job's other copy (it lost the race)."""
        if not run.delivered:
            return
        self.settler.cancel_after.discard(run.job.id)
        if run.backup:
            self.won += 1
        for nid, other in self.table.runs_of(run.job.id):
            if other is not run and other.task is not None and not other.task.done():
                log.info("job=%s delivered by node=%s; stopping its copy on node=%s", run.job.id[:8], node.id, nid)
                other.abandon = "its copy delivered first"
                other.task.cancel()
