"""
The unfinished jobs the scheduler, the job runner and recovery share: the queue, the runs per node, the batches.

Also the bookkeeping every one of them does when a job ends: counting the job into its batch (and announcing
the batch when it is complete), noticing that nothing is left to do, waking the pull loops, and committing a DB
write together with the event announcing it.

Memory changes first, synchronously; the DB write follows, shielded from cancellation and retried until it lands
(`persist`, `write`). So a job is never in neither the queue nor a run while its row says it is unfinished,
whatever is cancelled when: the reconciler (reconciler.py) checks exactly that.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orchestrator.backoff import Backoff
from orchestrator.db import DB_WRITE_ERRORS, Database
from orchestrator.events import BatchDone, EventBus
from orchestrator.models import Job, JobSpec, JobStatus, Mode

_T = TypeVar("_T")

log = logging.getLogger(__name__)


#: a run past its expected end is expected to need this share of the time it has taken so far. Run times have a
#: heavy tail (a checkpoint load from a cold disk, a node swapping, a wedged GPU that still answers): the longer a
#: run has overrun, the longer it is likely to go on, so its expected remaining time grows with its age instead of
#: staying at "any moment". The share also decides when a run on time starts counting as overdue: once what its
#: estimate leaves is less than this share of its age (at 1 / 1.25 = 80 % of its estimate), with no jump.
OVERRUN_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class Outlook:
    """
    Seconds until a run (or a node's runs) is expected to be done, and how that figure moves meanwhile.

    While nothing new is heard it moves `rate` seconds per second (-1 counting down as planned, 0 waiting, positive
    overdue and growing) for `steady_for` seconds (infinite: until an event, such as a run ending, changes it).
    """

    seconds: float
    rate: float = 0.0
    steady_for: float = math.inf

    def __add__(self, other: Outlook) -> Outlook:
        return Outlook(self.seconds + other.seconds, self.rate + other.rate, min(self.steady_for, other.steady_for))


def expected_remaining(span: float, elapsed: float) -> Outlook:
    """The outlook of a run expected to take `span` seconds, `elapsed` into it: on time, then overrunning."""
    turn = span / (1.0 + OVERRUN_SHARE)
    if elapsed < turn:
        return Outlook(span - elapsed, -1.0, turn - elapsed)
    return Outlook(OVERRUN_SHARE * elapsed, OVERRUN_SHARE)


def node_outlook(runs: Sequence[Run], now: float) -> Outlook:
    """A node's runs (in launch order) summed: when the node is expected to be free, and how that moves."""
    total = Outlook(0.0)
    for i, r in enumerate(runs):
        total += r.outlook(now, first=i == 0)
    return total


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
    #: a copy of a straggler on another node: not persisted, never retried; the first result of a job wins
    backup: bool = False
    #: why the scheduler cancelled this run's task (node down, lost the race to a copy); None: a stop or a cancel
    abandon: str | None = None
    #: loop time by which the whole run must be over
    deadline: float = float("inf")
    #: when it was launched (monotonic) and how long it was expected to take from then, its node's queue included
    launched: float = 0.0
    expected: float = 0.0
    #: sampler progress: the first and the latest (monotonic time, step) seen, and the step count
    progress: tuple[tuple[float, int], tuple[float, int], int] | None = None
    #: set once the node has finished rendering (the image is being fetched and stored): no copy helps now
    rendered: bool = False
    #: set once this run's image is the job's delivered image
    delivered: bool = False
    #: a speculative run stopped because real work needs its node: its job goes back to the idle-only lane
    preempted: bool = False
    #: the checkpoint its prompt keeps alive in the node's cache (a dangling loader; speculative runs and upscales)
    keep_alive: str | None = None

    @property
    def checkpoint_after(self) -> str | None:
        """The checkpoint its node holds once this run's prompt has started (an upscale loads none of its own)."""
        p = self.job.params
        return self.keep_alive if p.mode is Mode.UPSCALE else p.model_name

    def outlook(self, now: float, *, first: bool = True) -> Outlook:
        """
        Seconds until this run leaves its node: the one estimate the router and the backup copies use.

        From its sampler's pace once it has one, else from its estimate; past either, by the overrun rule
        (`expected_remaining`). Fetching and storing the image count too: until they are done the run holds one of
        its node's slots (a locked DB keeps it there). `first`: nothing is ahead of it on its node, so if it has not
        started it is late.
        """
        if self.started is None:
            if not first or not self.launched:
                return Outlook(self.estimate)
            waited = now - self.launched
            if waited < self.estimate:
                return Outlook(self.estimate, 0.0, self.estimate - waited)
            # First in line, launched longer ago than its whole estimate and still not started (a slow upload, a
            # locked DB, a node that took the prompt and went quiet): expect it to take as long again as it has.
            return Outlook(waited, 1.0)
        span = self.estimate
        if self.progress is not None:
            (t0, s0), (t1, s1), total = self.progress
            if s1 > s0:
                span = t1 + (total - s1) * (t1 - t0) / (s1 - s0) - self.started
        return expected_remaining(span, now - self.started)

    @property
    def task_done(self) -> bool:
        """True once the task following this run has ended."""
        return self.task is not None and self.task.done()


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

    def __init__(
        self, bus: EventBus, node_ids: Collection[str], db: Database, *, retry: tuple[float, float] = (0.05, 2.0)
    ) -> None:
        self.bus = bus
        self.db = db
        self._retry = retry
        #: jobs whose terminal DB write is under way: ended for memory, not yet for the DB
        self.ending: dict[str, Job] = {}
        #: jobs of a batch being inserted: in the DB (or about to be), not yet in the queue
        self.inserting: set[str] = set()
        #: DB writes that failed and were tried again (a locked or full disk); the event is set at each one
        self.db_retries = 0
        self.db_retried = asyncio.Event()
        self._job_locks: dict[str, asyncio.Lock] = {}
        self._stopping = False
        self.queued: dict[str, Job] = {}
        self.running: dict[str, dict[str, Run]] = {nid: {} for nid in node_ids}
        self.batches: dict[str, Batch] = {}
        #: one per pull loop, set when that node might have something to take
        self.wake: dict[str, asyncio.Event] = {nid: asyncio.Event() for nid in node_ids}
        #: DB writes with their events, which a stop lets finish
        self.commits: set[asyncio.Task[object]] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        #: jobs in the idle-only lane (speculative: taken only when no real job a node can run waits)
        self.speculative: set[str] = set()
        #: speculative jobs adopted by a stage while queued or running: their new batch and spec. Frozen job
        #: objects held by runs in flight still carry the old ones; `current` gives the job as it is now.
        self.adopted: dict[str, tuple[str, JobSpec]] = {}

    def current(self, job: Job) -> Job:
        """The job with its adopting stage's batch and spec when a stage adopted it since this copy was made."""
        a = self.adopted.get(job.id)
        if a is None or job.batch_id == a[0]:
            return job
        return job.with_(batch_id=a[0], spec=a[1])

    def wake_all(self) -> None:
        """Wake every node's pull loop (work or a free slot appeared)."""
        for ev in self.wake.values():
            ev.set()

    def check_idle(self) -> None:
        """Set `idle` when nothing is queued or running."""
        if not self.queued and not any(self.running.values()):
            self.idle.set()

    def runs_of(self, job_id: str) -> list[tuple[str, Run]]:
        """Every run of a job (a straggler and its backup copy), with its node id."""
        return [(nid, runs[job_id]) for nid, runs in self.running.items() if job_id in runs]

    def is_known(self, job_id: str) -> bool:
        """Queued, running, or ending: a job memory is responsible for."""
        return (
            job_id in self.queued
            or job_id in self.ending
            or job_id in self.inserting
            or any(job_id in r for r in self.running.values())
        )

    def forget_finished(self) -> int:
        """
        Drop the batches announced as done none of whose jobs is still in flight; returns how many.

        A bot runs for weeks: what has ended lives in the DB (wait_batch reads it there), so memory keeps nothing
        per ended job. A batch stays while any of its jobs is known: a backup copy still running must still find
        its job counted as ended (`is_terminal`) and deliver nothing.
        """
        gone = [
            batch_id
            for batch_id, b in self.batches.items()
            if b.finished.is_set() and not any(self.is_known(j) for j in b.job_ids)
        ]
        for batch_id in gone:
            b = self.batches.pop(batch_id)
            for job_id in b.job_ids | b.terminal:
                self.adopted.pop(job_id, None)
                lock = self._job_locks.get(job_id)
                if lock is not None and not lock.locked():
                    del self._job_locks[job_id]
        return len(gone)

    def load_batch(self, batch_id: str, jobs: Collection[Job]) -> Batch:
        """Know a batch from its rows (after a restart, or when the reconciler meets one): counts its ended jobs."""
        first = next(iter(jobs))
        b = self.batches.setdefault(
            batch_id, Batch(set(), session_id=first.spec.session_id, stage_id=first.spec.stage_id)
        )
        for j in jobs:
            b.job_ids.add(j.id)
            if j.status.terminal and j.id not in b.terminal:
                b.terminal.add(j.id)
                b.done += j.status is JobStatus.DONE
                b.failed += j.status is not JobStatus.DONE
        return b

    def is_terminal(self, job: Job) -> bool:
        """Whether memory already counts this job as ended."""
        b = self.batches.get(self.current(job).batch_id)
        return job.id in self.ending or (b is not None and job.id in b.terminal)

    def mark_terminal(self, job: Job) -> None:
        """A job ended for good (its row says so): count it into its batch and announce the batch when complete."""
        job = self.current(job)
        self.speculative.discard(job.id)
        self.ending.pop(job.id, None)
        lock = self._job_locks.get(job.id)
        if lock is not None and not lock.locked():
            del self._job_locks[job.id]
        b = self.batches.get(job.batch_id)
        if b is None or job.id in b.terminal:
            return
        b.terminal.add(job.id)
        if job.status is JobStatus.DONE:
            b.done += 1
        else:
            b.failed += 1
        self.announce_if_complete(job.batch_id)
        self.check_idle()

    def announce_if_complete(self, batch_id: str) -> None:
        """Announce a batch whose jobs have all ended, once."""
        b = self.batches.get(batch_id)
        if b is not None and b.terminal >= b.job_ids and not b.finished.is_set():
            b.finished.set()
            log.info("✓ batch=%s done=%d failed=%d", batch_id, b.done, b.failed)
            self.bus.publish(BatchDone(batch_id, b.done, b.failed, b.session_id, b.stage_id))

    async def atomically(self, work: Coroutine[Any, Any, object]) -> None:
        """
        Run a DB write and the event announcing it to the end even when the caller is cancelled meanwhile.

        A stop between the two would leave a row that no front end ever heard of; stop() waits for these.
        """
        task = asyncio.create_task(work)
        self.commits.add(task)
        task.add_done_callback(self.commits.discard)
        await asyncio.shield(task)

    async def finish_commits(self, timeout: float = 10.0) -> None:
        """Wait for every DB write started with `atomically` (and its event) to be done; give up after `timeout`."""
        if not self.commits:
            return
        _done, pending = await asyncio.wait(set(self.commits), timeout=timeout)
        self._stopping = True
        for t in pending:
            # A DB that stays locked or full: the rows stay as they are and the next start reconciles them.
            log.warning("stopping with a DB write still failing (%s)", t.get_name())
            t.cancel()
        if pending:
            await asyncio.wait(pending)

    async def write(self, job_id: str, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """
        Run one DB write of a job, retried with backoff until it lands.

        Writes of one job land in the order they were asked for (a retried write cannot overtake a later one).
        """
        lock = self._job_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            return await self.retrying(what, call)

    async def persist(self, job: Job) -> bool:
        """Write a job's state in order with its other writes, retried; False if its row had already ended."""
        return await self.write(job.id, f"job {job.id[:8]} {job.status.value}", lambda: self.db.update_job(job))

    async def retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a DB call until it succeeds; a locked or full DB is waited out, not allowed to lose a job."""
        backoff = Backoff(*self._retry)
        first_failure: float | None = None
        while True:
            try:
                return await call()
            except DB_WRITE_ERRORS as e:
                if self._stopping:
                    raise
                self.db_retries += 1
                self.db_retried.set()
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    log.warning("DB write failed (%s): %s; retrying", what, e)
                elif now - first_failure > 30:
                    log.error("DB write still failing after %.0fs (%s): %s", now - first_failure, what, e)
                    first_failure = now
                await asyncio.sleep(backoff.delay())
