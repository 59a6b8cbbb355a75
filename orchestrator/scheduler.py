"""
The persistent job queue and one pull loop per node: submit, follow, store, retry, fail over, cancel, recover.

Job state changes happen only in `transition`, which rejects illegal ones. Routing decisions
(which job a free node takes) are the pure `router.choose_job`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import router
from orchestrator.comfy.protocol import (
    Executed,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    HistoryEntry,
    ImageRef,
    PreviewFrame,
    ProgressMsg,
)
from orchestrator.config import SchedulerSettings
from orchestrator.db import Database
from orchestrator.errors import (
    ComfyError,
    ExecutionFailed,
    ImGenError,
    NoCapableNode,
    NodeUnavailable,
    PromptRejected,
    StoreError,
    WorkflowError,
)
from orchestrator.events import (
    BatchDone,
    EventBus,
    JobFailed,
    JobFinished,
    JobPreview,
    JobProgress,
    JobQueued,
    JobRetried,
    JobStarted,
)
from orchestrator.models import GenerationParams, ImageRecord, Job, JobSpec, JobStatus, Mode
from orchestrator.registry import Node, Registry
from orchestrator.store import ImageStore
from orchestrator.workflows import WorkflowEngine

log = logging.getLogger(__name__)

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SUBMITTED, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.SUBMITTED: frozenset(
        {JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.DONE, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.DONE: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class IllegalTransition(ImGenError):
    """A job state change that the life cycle does not allow."""


def transition(job: Job, to: JobStatus, **fields: object) -> Job:
    """The one place a job changes status."""
    if to not in ALLOWED[job.status]:
        raise IllegalTransition(f"job {job.id}: {job.status.value} -> {to.value} is not allowed")
    now = time.time()
    if to is JobStatus.RUNNING and "started_at" not in fields:
        fields["started_at"] = now
    if to.terminal and "finished_at" not in fields:
        fields["finished_at"] = now
    if to is JobStatus.QUEUED:
        fields.setdefault("node_id", None)
        fields.setdefault("prompt_id", None)
    return job.with_(status=to, **fields)


class InputMissing(ImGenError):
    """The local input image of an img2img or upscale job cannot be read; no node can help."""


class Stalled(ComfyError):
    """A node said nothing about a job for longer than the stall timeout."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a batch delivered."""

    batch_id: str
    images: list[ImageRecord]
    failed: list[Job]


def _posted() -> asyncio.Event:
    ev = asyncio.Event()
    ev.set()
    return ev


@dataclass(slots=True)
class _Run:
    job: Job
    task: asyncio.Task[None] | None = None
    estimate: float = 0.0
    started: float | None = None
    #: set once the prompt is on the node (or will never be); the next run on the node posts after it. Runs found
    #: on a node after a restart are there already; a launched run starts with it clear.
    posted: asyncio.Event = field(default_factory=_posted)
    #: the run launched before this one on the same node
    after: _Run | None = None


@dataclass(slots=True)
class _Batch:
    job_ids: set[str]
    terminal: set[str] = field(default_factory=set)
    done: int = 0
    failed: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    session_id: str | None = None
    stage_id: str | None = None


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
    ) -> None:
        self.registry = registry
        self.db = db
        self.store = store
        self.workflows = workflows
        self.bus = bus
        self.settings = settings
        self.queued: dict[str, Job] = {}
        self.running: dict[str, dict[str, _Run]] = {nid: {} for nid in registry.nodes}
        self.batches: dict[str, _Batch] = {}
        self._wake: dict[str, asyncio.Event] = {nid: asyncio.Event() for nid in registry.nodes}
        self._loops: list[asyncio.Task[None]] = []
        self._aux: set[asyncio.Task[None]] = set()
        #: DB writes with their events, which a stop lets finish
        self._commits: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        registry.listeners.append(self._on_health)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Recover unfinished jobs from the DB, then start one pull loop per node."""
        await self._recover()
        for nid in self.registry.nodes:
            self._loops.append(asyncio.create_task(self._node_loop(nid), name=f"pull-{nid}"))
        self._wake_all()

    async def stop(self) -> None:
        """Cancel loops and job tasks; jobs stay in the DB as they are, for the next start to reconcile."""
        self._closing = True
        tasks = list(self._loops) + list(self._aux)
        for runs in self.running.values():
            tasks += [r.task for r in runs.values() if r.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        self._loops.clear()

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
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
        b = self.batches.setdefault(batch_id, _Batch(set(), session_id=specs[0].session_id, stage_id=specs[0].stage_id))
        for j in jobs:
            b.job_ids.add(j.id)
            self.queued[j.id] = j
            self.bus.publish(JobQueued(j.id, batch_id, j.spec.session_id, j.spec.stage_id))
        log.info("→ batch=%s jobs=%d session=%s", batch_id, len(jobs), specs[0].session_id)
        self._idle.clear()
        self._wake_all()
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
        await self._idle.wait()

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
            await self._remove_from_node(self.registry.get(nid), run.job)
            await self._terminal(transition(run.job, JobStatus.CANCELLED, error="cancelled"), cancelled=True)
            self._wake_all()
            return True
        return False

    def jobs_in_flight(self, node_id: str) -> list[Job]:
        return [r.job for r in self.running[node_id].values()]

    # ------------------------------------------------------------------ pull loops

    def _wake_all(self) -> None:
        for ev in self._wake.values():
            ev.set()

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
        wake = self._wake[node_id]
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
        run = _Run(job=job, estimate=load + router.run_seconds(node.config, node.stats, job), posted=asyncio.Event())
        if prev:
            run.after = next(reversed(prev.values()))
        prev[job.id] = run
        node.stats.in_flight = len(prev)
        run.task = asyncio.create_task(self._run(node, run), name=f"job-{job.id[:8]}-{node.id}")

    # ------------------------------------------------------------------ one job on one node

    async def _run(self, node: Node, run: _Run) -> None:
        job = run.job
        try:
            try:
                await self._execute(node, run)
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
                await self._remove_from_node(node, run.job)
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
            self._check_idle()
            self._wake_all()

    async def _execute(self, node: Node, run: _Run) -> None:
        job = run.job
        client = node.client
        p = job.params
        job = transition(job, JobStatus.SUBMITTED, node_id=node.id, attempt=job.attempt + 1)
        run.job = job
        input_name = None
        if p.init_image:
            try:
                data = await self.store.read(Path(p.init_image))
            except StoreError as e:
                raise InputMissing(f"the input image of this job cannot be read ({e.user_message})") from e
            input_name = await client.upload_image(data, f"vibes_{job.id}.png")
        graph = self.workflows.build(p, input_image=input_name)
        if node.object_info is not None:
            self.workflows.validate(graph, node.object_info)
        if run.after is not None:
            # ComfyUI runs prompts in the order they arrive and the estimates (checkpoint loads above all) assume
            # launch order; an upload that finishes early must not let a later job overtake.
            await run.after.posted.wait()
            run.after = None
        try:
            accepted = await client.submit(graph)
        finally:
            run.posted.set()
        job = job.with_(prompt_id=accepted.prompt_id)
        run.job = job
        await self.db.update_job(job)
        log.info("↗ job=%s node=%s prompt=%s attempt=%d", job.id[:8], node.id, accepted.prompt_id, job.attempt)
        await self._follow(node, run)

    async def _follow(self, node: Node, run: _Run) -> None:
        """Follow a submitted prompt's events to the end, then store its image."""
        job = run.job
        assert job.prompt_id is not None
        watch = node.client.watch(job.prompt_id)
        images: list[ImageRef] = []
        t_start: float | None = None
        first: tuple[float, int] | None = None
        last: tuple[float, int] | None = None
        prev_ckpt = node.stats.loaded_checkpoint
        deadline = time.monotonic() + self.settings.timeout_for(job.spec.task)
        stall_at = time.monotonic() + self.settings.stall_timeout_s
        reported = False
        try:
            while True:
                limit = min(stall_at, deadline)
                wait = max(0.0, limit - time.monotonic())
                if not node.client.connected:
                    # A dropped socket may be a dead node: look again every second instead of waiting out the stall.
                    wait = min(wait, 1.0)
                try:
                    async with asyncio.timeout(wait):
                        ev = await anext(watch)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if time.monotonic() < limit:
                        if not reported:
                            reported = True
                            self.registry.report_failure(node.id, "its WebSocket dropped")
                        continue
                    entry = await self._history_or_none(node, job.prompt_id)
                    if entry is not None and entry.completed:
                        images = list(entry.images) or images
                        if entry.status != "success":
                            raise ExecutionFailed(entry.error_message or "the prompt failed") from None
                        break
                    over = "timed out" if time.monotonic() >= deadline else "stalled"
                    raise Stalled(f"{node.id} {over} on this image") from None
                stall_at = time.monotonic() + self.settings.stall_timeout_s
                if isinstance(ev, ExecutionStart):
                    t_start = time.monotonic()
                    run.started = t_start
                    job = transition(job, JobStatus.RUNNING)
                    run.job = job
                    node.stats.loaded_checkpoint = job.params.model_name or node.stats.loaded_checkpoint
                    # Not persisted: recovery treats submitted and running alike (it asks the node), and the
                    # start time is written with the result. One commit less per image.
                    self.bus.publish(
                        JobStarted(job.id, job.batch_id, node.id, job.attempt, job.spec.session_id, job.spec.stage_id)
                    )
                elif isinstance(ev, ProgressMsg):
                    now = time.monotonic()
                    if first is None:
                        first = (now, ev.value)
                    last = (now, ev.value)
                    self.bus.publish(
                        JobProgress(
                            job.id, job.batch_id, node.id, ev.value, ev.max, job.spec.session_id, job.spec.stage_id
                        )
                    )
                elif isinstance(ev, PreviewFrame):
                    self.bus.publish(
                        JobPreview(
                            job.id, job.batch_id, node.id, ev.image, ev.mime, job.spec.session_id, job.spec.stage_id
                        )
                    )
                elif isinstance(ev, Executed):
                    images.extend(ev.images)
                elif isinstance(ev, ExecutionSuccess):
                    break
                elif isinstance(ev, ExecutionError):
                    raise ExecutionFailed(ev.exception_message, node_type=ev.node_type)
                elif isinstance(ev, ExecutionInterrupted):
                    raise ExecutionFailed("interrupted on the node", node_type=ev.node_type, interrupted=True)
        finally:
            watch.close()
        self._learn_speed(node, job, t_start, first, last, prev_ckpt)
        if not images and job.prompt_id is not None:
            entry = await node.client.history(job.prompt_id)
            images = list(entry.images) if entry else []
        if not images:
            raise ExecutionFailed("the node finished without an output image")
        await self._deliver(node, run.job, images[0], t_start)

    def _learn_speed(
        self,
        node: Node,
        job: Job,
        t_start: float | None,
        first: tuple[float, int] | None,
        last: tuple[float, int] | None,
        prev_ckpt: str | None,
    ) -> None:
        p = job.params
        if p.mode is Mode.UPSCALE:
            if t_start is not None:
                self.registry.record_upscale(node.id, time.monotonic() - t_start)
            return
        if first is None or last is None or last[1] <= first[1]:
            return
        per_step = (last[0] - first[0]) / (last[1] - first[1])
        self.registry.record_speed(node.id, p.family, per_step / (p.pixels / p.family.native_size**2))
        if t_start is not None and prev_ckpt != p.checkpoint:
            self.registry.record_load(node.id, max(0.0, first[0] - t_start - per_step))

    async def _history_or_none(self, node: Node, prompt_id: str) -> HistoryEntry | None:
        try:
            return await node.client.history(prompt_id)
        except ComfyError:
            return None

    async def _deliver(self, node: Node, job: Job, ref: ImageRef, t_start: float | None) -> None:
        data = await node.client.view(ref)
        stored = await self.store.save(job.spec.session_id, job.id, data)
        done = transition(job, JobStatus.DONE)
        seconds = (time.monotonic() - t_start) if t_start is not None else 0.0
        p = job.params
        image = ImageRecord(
            id=job.id,
            job_id=job.id,
            path=str(stored.path),
            thumbnail=str(stored.thumbnail),
            node_id=node.id,
            seed=p.seed,
            seconds=round(seconds, 3),
            checkpoint=p.model_name,
            width=stored.width,
            height=stored.height,
            prompt=p.prompt,
            negative_prompt=p.negative_prompt,
            session_id=job.spec.session_id,
            stage_id=job.spec.stage_id,
            parent_id=job.spec.parent_id,
            index=job.spec.index,
        )
        node.stats.completed += 1
        await self._atomically(self._record_delivery(node, done, image))

    async def _record_delivery(self, node: Node, done: Job, image: ImageRecord) -> None:
        if not await self.db.finish_job(done, image):
            log.warning("job=%s already delivered; not delivering again", done.id[:8])
            return
        log.info("← job=%s node=%s %.2fs", done.id[:8], node.id, image.seconds)
        self.bus.publish(JobFinished(done.id, done.batch_id, image, done.spec.session_id, done.spec.stage_id))
        self._mark_terminal(done)

    async def _atomically(self, work: Coroutine[Any, Any, None]) -> None:
        """
        Run a DB write and the event announcing it to the end even when the caller is cancelled meanwhile.

        A stop between the two would leave a row that no front end ever heard of; stop() waits for these.
        """
        task = asyncio.create_task(work)
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        await asyncio.shield(task)

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
        self._wake_all()

    async def _fail(self, job: Job, reason: str) -> None:
        log.warning("! job=%s failed: %s", job.id[:8], reason)
        await self._terminal(transition(job, JobStatus.FAILED, error=reason))

    async def _terminal(self, job: Job, *, cancelled: bool = False) -> None:
        await self._atomically(self._record_terminal(job, cancelled))

    async def _record_terminal(self, job: Job, cancelled: bool) -> None:
        await self.db.update_job(job)
        self.bus.publish(
            JobFailed(job.id, job.batch_id, job.error or "", cancelled, job.spec.session_id, job.spec.stage_id)
        )
        self._mark_terminal(job)

    def _mark_terminal(self, job: Job) -> None:
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
        self._check_idle()

    def _check_idle(self) -> None:
        if not self.queued and not any(self.running.values()):
            self._idle.set()

    async def _remove_from_node(self, node: Node, job: Job) -> None:
        """Best effort: stop a prompt we no longer want on a node (interrupt if running, else unqueue)."""
        if job.prompt_id is None:
            return
        try:
            q = await node.client.queue()
            if job.prompt_id in q.running:
                await node.client.interrupt(job.prompt_id)
            elif job.prompt_id in q.pending:
                await node.client.delete_queued([job.prompt_id])
        except (ComfyError, OSError):
            log.debug("node=%s could not remove prompt %s", node.id, job.prompt_id)

    def _on_health(self, node_id: str, healthy: bool) -> None:
        if healthy:
            self._wake_all()
            return
        runs = list(self.running[node_id].values())
        for r in runs:
            if r.task is not None:
                r.task.cancel()
        if runs:
            self._spawn(self._requeue_after_down(node_id, runs), name=f"requeue-{node_id}")

    async def _requeue_after_down(self, node_id: str, runs: list[_Run]) -> None:
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
        self._wake_all()

    # ------------------------------------------------------------------ restart safety

    async def _recover(self) -> None:
        """Reconcile jobs a previous process left queued or on a node: adopt, re-attach or requeue."""
        pending = await self.db.jobs_with_status([JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING])
        if not pending:
            return
        for batch_id in {j.batch_id for j in pending}:
            all_jobs = await self.db.batch_jobs(batch_id)
            b = self.batches.setdefault(
                batch_id, _Batch(set(), session_id=all_jobs[0].spec.session_id, stage_id=all_jobs[0].spec.stage_id)
            )
            for j in all_jobs:
                b.job_ids.add(j.id)
                if j.status.terminal:
                    b.terminal.add(j.id)
                    b.done += j.status is JobStatus.DONE
                    b.failed += j.status is not JobStatus.DONE
        self._idle.clear()
        for job in pending:
            if job.status is JobStatus.QUEUED:
                self.queued[job.id] = job
                continue
            node = self.registry.nodes.get(job.node_id or "")
            if node is None or job.prompt_id is None or not node.stats.healthy:
                await self._requeue_lost(job, "its node was not reachable after a restart")
                continue
            await self._reattach(node, job)
        log.info("recovered %d unfinished jobs", len(pending))

    async def _requeue_lost(self, job: Job, reason: str) -> None:
        again = transition(job, JobStatus.QUEUED, error=reason)
        await self.db.update_job(again)
        self.queued[again.id] = again

    async def _reattach(self, node: Node, job: Job) -> None:
        assert job.prompt_id is not None
        try:
            entry = await node.client.history(job.prompt_id)
            q = await node.client.queue() if entry is None else None
        except ComfyError:
            await self._requeue_lost(job, "its node was not reachable after a restart")
            return
        if entry is not None and entry.completed:
            run = _Run(job=job)
            self.running[node.id][job.id] = run
            run.task = asyncio.create_task(self._adopt(node, run, entry), name=f"adopt-{job.id[:8]}")
            log.info("adopting finished job=%s from node=%s", job.id[:8], node.id)
            return
        if q is not None and job.prompt_id in (*q.running, *q.pending):
            run = _Run(job=job, estimate=router.run_seconds(node.config, node.stats, job))
            if job.prompt_id in q.running:
                run.started = time.monotonic()
            self.running[node.id][job.id] = run
            run.task = asyncio.create_task(self._reattached(node, run), name=f"reattach-{job.id[:8]}")
            log.info("re-attached job=%s on node=%s", job.id[:8], node.id)
            return
        await self._requeue_lost(job, "lost by its node during a restart")

    async def _adopt(self, node: Node, run: _Run, entry: HistoryEntry) -> None:
        try:
            if entry.status != "success" or not entry.images:
                await self._retry_or_fail(run.job, node.id, entry.error_message or "the prompt failed")
                return
            await self._deliver(node, run.job, entry.images[0], None)
        except (ComfyError, StoreError, OSError) as e:
            await self._retry_or_fail(run.job, node.id, str(e))
        finally:
            self.running[node.id].pop(run.job.id, None)
            self._check_idle()
            self._wake_all()

    async def _reattached(self, node: Node, run: _Run) -> None:
        try:
            await self._follow(node, run)
        except asyncio.CancelledError:
            raise
        except Stalled as e:
            await self._remove_from_node(node, run.job)
            await self._retry_or_fail(run.job, node.id, str(e))
        except (ImGenError, OSError) as e:
            await self._retry_or_fail(run.job, node.id, str(e))
        finally:
            self.running[node.id].pop(run.job.id, None)
            self._check_idle()
            self._wake_all()
