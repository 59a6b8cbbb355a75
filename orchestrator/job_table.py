"""
The unfinished jobs the scheduler, the job runner and recovery share: the queue, the runs per node, the batches.

Also the bookkeeping every one of them does when a job ends: counting the job into its batch (and announcing
the batch when it is complete), noticing that nothing is left to do, waking the pull loops, and committing a DB
write together with the event announcing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from orchestrator.events import BatchDone, EventBus
from orchestrator.models import Job, JobStatus

log = logging.getLogger(__name__)


def _posted() -> asyncio.Event:
    ev = asyncio.Event()
    ev.set()
    return ev


@dataclass(slots=True)
class Run:
    """One job on one node and the task following it."""

    job: Job
    task: asyncio.Task[None] | None = None
    estimate: float = 0.0
    started: float | None = None
    #: set once the prompt is on the node (or will never be); the next run on the node posts after it. Runs found
    #: on a node after a restart are there already; a launched run starts with it clear.
    posted: asyncio.Event = field(default_factory=_posted)
    #: the run launched before this one on the same node
    after: Run | None = None


@dataclass(slots=True)
class Batch:
    """The jobs of one batch and how many of them have ended, and how."""

    job_ids: set[str]
    terminal: set[str] = field(default_factory=set)
    done: int = 0
    failed: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    session_id: str | None = None
    stage_id: str | None = None


class JobTable:
    """The queued jobs, the runs on each node and the batches, with what to do when a job ends."""

    def __init__(self, bus: EventBus, node_ids: Collection[str]) -> None:
        self.bus = bus
        self.queued: dict[str, Job] = {}
        self.running: dict[str, dict[str, Run]] = {nid: {} for nid in node_ids}
        self.batches: dict[str, Batch] = {}
        #: one per pull loop, set when that node might have something to take
        self.wake: dict[str, asyncio.Event] = {nid: asyncio.Event() for nid in node_ids}
        #: DB writes with their events, which a stop lets finish
        self.commits: set[asyncio.Task[None]] = set()
        self.idle = asyncio.Event()
        self.idle.set()

    def wake_all(self) -> None:
        for ev in self.wake.values():
            ev.set()

    def check_idle(self) -> None:
        if not self.queued and not any(self.running.values()):
            self.idle.set()

    def mark_terminal(self, job: Job) -> None:
        b = self.batches.get(job.batch_id)
        if b is None or job.id in b.terminal:
            return
        b.terminal.add(job.id)
        if job.status is JobStatus.DONE:
            b.done += 1
        else:
            b.failed += 1
        if b.terminal >= b.job_ids and not b.finished.is_set():
            b.finished.set()
            log.info("✓ batch=%s done=%d failed=%d", job.batch_id, b.done, b.failed)
            self.bus.publish(BatchDone(job.batch_id, b.done, b.failed, b.session_id, b.stage_id))
        self.check_idle()

    async def atomically(self, work: Coroutine[Any, Any, None]) -> None:
        """
        Run a DB write and the event announcing it to the end even when the caller is cancelled meanwhile.

        A stop between the two would leave a row that no front end ever heard of; stop() waits for these.
        """
        task = asyncio.create_task(work)
        self.commits.add(task)
        task.add_done_callback(self.commits.discard)
        await asyncio.shield(task)

    async def finish_commits(self) -> None:
        """Wait for every DB write started with `atomically` (and its event) to be done."""
        if self.commits:
            await asyncio.gather(*self.commits, return_exceptions=True)
