"""
Running one job on one node, from uploading its input to delivering its image.

It posts the job's prompt in launch order, follows the prompt's events to the end, learns the node's speed from
them, and delivers the image to the store and the DB.

Failures are raised, not handled: what to do about them (retry, fail over, give up) is the scheduler's policy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.backoff import Backoff
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
from orchestrator.errors import ComfyError, ExecutionFailed, ImGenError, LocalStoreError, StoreError
from orchestrator.events import EventBus, JobFinished, JobPreview, JobProgress, JobStarted
from orchestrator.farm.job_state import transition
from orchestrator.farm.job_table import JobTable, Run
from orchestrator.farm.registry import Node, Registry
from orchestrator.farm.warmup import with_keep_alive
from orchestrator.models import ImageRecord, Job, JobStatus, Mode
from orchestrator.store import ImageStore, StoredImage
from orchestrator.workflows import WorkflowEngine

log = logging.getLogger(__name__)

#: tries to write a delivered image to a failing local disk before giving the job back to the queue
LOCAL_SAVE_ATTEMPTS = 8


class InputMissing(ImGenError):
    """The local input image of an img2img or upscale job cannot be read; no node can help."""


class Stalled(ComfyError):
    """A node said nothing about a job for longer than the stall timeout."""


@dataclass(slots=True, eq=False)
class JobRunner:
    """Runs one job on one node from upload to delivered image; raises what went wrong."""

    registry: Registry
    db: Database
    store: ImageStore
    workflows: WorkflowEngine
    bus: EventBus
    settings: SchedulerSettings
    table: JobTable
    #: the checkpoint a job's prompt should keep alive on a node (idle-lane work only), or None
    keep_alive: Callable[[Node, Job], str | None] | None = None

    async def execute(self, node: Node, run: Run) -> None:
        """Post the job's prompt on the node once the run before it has posted, then follow it to the end."""
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
        # Only the graph sent to the node carries it; the job's spec (which adoption compares) stays as it is.
        run.keep_alive = self.keep_alive(node, job) if self.keep_alive is not None else None
        if run.keep_alive is not None:
            graph = with_keep_alive(graph, run.keep_alive)
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
        if not run.backup:
            # Recorded so that a restart can re-attach to the prompt; a backup copy is not (its job's row names
            # the original run, and the first of them to deliver records its own node and prompt).
            await self.table.atomically(self.table.persist(job))
        log.info("↗ job=%s node=%s prompt=%s attempt=%d", job.id[:8], node.id, accepted.prompt_id, job.attempt)
        await self.follow(node, run)

    async def follow(self, node: Node, run: Run) -> None:
        """Follow a submitted prompt's events to the end, then store its image."""
        job = run.job
        assert job.prompt_id is not None
        watch = node.client.watch(job.prompt_id)
        images: list[ImageRef] = []
        t_start: float | None = None
        first: tuple[float, int] | None = None
        last: tuple[float, int] | None = None
        #: seconds per step between consecutive progress messages
        paces: list[float] = []
        prev_ckpt = node.stats.loaded_checkpoint
        prev_kept = node.stats.kept_checkpoint
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
                    # An upscale's model is no checkpoint: its prompt has no checkpoint loader.
                    params = job.params
                    upscale = params.mode is Mode.UPSCALE
                    real = job.id not in self.table.speculative and not upscale
                    model = None if upscale else params.model_name
                    self.registry.record_checkpoint(node.id, model, keep_alive=run.keep_alive, real=real)
                    # Not persisted: recovery treats submitted and running alike (it asks the node), and the
                    # start time is written with the result. One commit less per image.
                    now_job = self.table.current(job)
                    self.bus.publish(
                        JobStarted(
                            job.id, now_job.batch_id, node.id, job.attempt, now_job.spec.session_id,
                            now_job.spec.stage_id,
                        )
                    )  # fmt: skip
                elif isinstance(ev, ProgressMsg):
                    now = time.monotonic()
                    if first is None:
                        first = (now, ev.value)
                    elif last is not None and ev.value > last[1]:
                        paces.append((now - last[0]) / (ev.value - last[1]))
                    last = (now, ev.value)
                    run.progress = (first, last, ev.max)
                    now_job = self.table.current(job)
                    self.bus.publish(
                        JobProgress(
                            job.id, now_job.batch_id, node.id, ev.value, ev.max, now_job.spec.session_id,
                            now_job.spec.stage_id,
                        )
                    )  # fmt: skip
                elif isinstance(ev, PreviewFrame):
                    now_job = self.table.current(job)
                    self.bus.publish(
                        JobPreview(
                            job.id, now_job.batch_id, node.id, ev.image, ev.mime, now_job.spec.session_id,
                            now_job.spec.stage_id,
                        )
                    )  # fmt: skip
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
        self._learn_speed(node, job, t_start, first, paces, prev_ckpt, prev_kept)
        if not images and job.prompt_id is not None:
            entry = await node.client.history(job.prompt_id)
            images = list(entry.images) if entry else []
        if not images:
            raise ExecutionFailed("the node finished without an output image")
        run.rendered = True
        run.delivered = await self.deliver(node, run.job, images[0], t_start)

    def _learn_speed(
        self,
        node: Node,
        job: Job,
        t_start: float | None,
        first: tuple[float, int] | None,
        paces: list[float],
        prev_ckpt: str | None,
        prev_kept: str | None,
    ) -> None:
        p = job.params
        if p.mode is Mode.UPSCALE:
            if t_start is not None:
                self.registry.record_upscale(node.id, time.monotonic() - t_start)
            return
        if first is None or not paces:
            return
        # The node's speed is its usual step, not the run's average: one long pause (a node wedged for a while, a
        # stalled socket) would otherwise be learned as a card many times slower, and the router would starve it.
        per_step = statistics.median(paces)
        self.registry.record_speed(node.id, p.family, per_step / (p.pixels / p.family.native_size**2))
        if t_start is not None and prev_ckpt != p.checkpoint:
            seconds = max(0.0, first[0] - t_start - per_step)
            if prev_kept == p.checkpoint:
                self.registry.record_swap(node.id, seconds)
            else:
                self.registry.record_load(node.id, seconds)

    async def _history_or_none(self, node: Node, prompt_id: str) -> HistoryEntry | None:
        try:
            return await node.client.history(prompt_id)
        except ComfyError:
            return None

    async def deliver(self, node: Node, job: Job, ref: ImageRef, t_start: float | None) -> bool:
        """Fetch a finished image from the node, store it, and record the job as done; False if it already was."""
        data = await node.client.view(ref)
        if self.table.is_terminal(job):
            return False  # its other copy delivered first
        stored = await self._save(job, data)
        if self.table.is_terminal(job):
            return False
        done = transition(self.table.current(job), JobStatus.DONE)
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
            session_id=done.spec.session_id,
            stage_id=done.spec.stage_id,
            parent_id=done.spec.parent_id,
            index=done.spec.index,
        )
        self.registry.record_completed(node.id)
        # From here the job's fate is sealed for memory too: a cancel of this run (its node went down a moment
        # after sending the image) must not requeue a job whose delivery is being written.
        self.table.ending[done.id] = done
        delivered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self.table.atomically(self._record_delivery(node, done, image, delivered))
        return delivered.result()

    async def _save(self, job: Job, data: bytes) -> StoredImage:
        # A full or failing disk is ours, not the node's: wait it out here (the job's deadline bounds this) rather
        # than send the image back to a GPU; past the retries the job is requeued without blaming its node.
        backoff = Backoff(0.02, 1.0)
        for attempt in range(LOCAL_SAVE_ATTEMPTS):
            try:
                return await self.store.save(job.spec.session_id, job.id, data)
            except LocalStoreError as e:
                if attempt == LOCAL_SAVE_ATTEMPTS - 1:
                    raise
                log.warning("job=%s: %s; trying again", job.id[:8], e)
                await asyncio.sleep(backoff.delay())
        raise AssertionError("unreachable")

    async def _record_delivery(
        self, node: Node, done: Job, image: ImageRecord, delivered: asyncio.Future[bool]
    ) -> None:
        finished = await self.table.write(done.id, f"job {done.id[:8]} done", lambda: self.db.finish_job(done, image))
        # A stage may have adopted the job while its image was being written: announce it as that stage's.
        now_job = self.table.current(done)
        if now_job is not done:
            done = now_job
            image = dataclasses.replace(image, stage_id=done.spec.stage_id, session_id=done.spec.session_id,
                                        parent_id=done.spec.parent_id, index=done.spec.index)  # fmt: skip
        delivered.set_result(finished)
        if not finished:
            # The row was done already (its copy won): memory counts it ended too, idempotently.
            self.table.ending.pop(done.id, None)
            self.table.mark_terminal(done)
            log.info("job=%s already delivered; not delivering again", done.id[:8])
            return
        log.info("← job=%s node=%s %.2fs", done.id[:8], node.id, image.seconds)
        self.bus.publish(JobFinished(done.id, done.batch_id, image, done.spec.session_id, done.spec.stage_id))
        self.table.mark_terminal(done)

    async def remove_from_node(self, node: Node, job: Job) -> None:
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
