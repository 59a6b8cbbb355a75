"""
StageWriter: plans, writes, replaces and closes a session's stages.

The only place a stage's jobs are queued or cancelled. A stage's batch id is its stage id, so a stage and its
jobs are tied together before anything runs, and a restart finds them again.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from orchestrator.errors import LimitExceeded
from orchestrator.events import StageStarted
from orchestrator.models import MAX_SEED, JobSpec
from orchestrator.sessions import concept
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.models import StageKind, StageStatus, StageView
from orchestrator.sessions.records import ConceptData, SessionRecord, StageData, StageRecord
from orchestrator.sessions.state import Action, transition

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """A planned stage, checked and not yet written."""

    session: SessionRecord
    stage: StageRecord
    specs: list[JobSpec]


class StageWriter:
    """Plans a stage, checks it can run, writes it with its jobs, and closes the stage it replaces."""

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self._rng = random.SystemRandom()

    async def prepare(
        self, rec: SessionRecord, idx: int, name: str, data: StageData, *, replacing: int = 0
    ) -> Prepared:
        """Plan a stage and check it can run, without writing anything."""
        ctx = self.ctx
        stage_id = uuid.uuid4().hex
        first = idx == 0 and data.kind in (StageKind.STAGE, StageKind.ROUND) and not data.prev
        ss = rec.settings
        if first and ss.seed is not None and not data.regen:
            seed = ss.seed
        elif data.seed is not None and not data.regen:
            seed = data.seed  # drawn when the stage before opened for votes (see StageData.next_seed)
        else:
            seed = self.seed()
        data = data.with_(seed=seed, regen=True, snapshot=rec.data.snapshot())
        plan = await ctx.planner.plan(rec, idx, data, stage_id)
        data = data.with_(labels=plan.labels)
        for spec in plan.specs:
            ctx.scheduler.check_capable(spec)
        queued = await ctx.db.queued_images_for_user(rec.owner_id) - replacing
        cap = ctx.settings.limits.max_queued_images_per_user
        if queued + len(plan.specs) > cap:
            raise LimitExceeded(
                "queued images",
                user_message=f"You have {queued} images waiting; {len(plan.specs)} more would pass the limit of "
                f"{cap}. Wait for them to finish.",
            )
        st = StageRecord(stage_id, rec.id, idx, name, StageStatus.GENERATING, stage_id, rec.prompt,
                         rec.negative_prompt, data, time.time())  # fmt: skip
        return Prepared(rec, st, plan.specs)

    async def prepare_concept(
        self, rec: SessionRecord, locked: dict[str, str], idx: int, prev: str | None = None
    ) -> Prepared:
        """Plan the Concept Builder stage after `locked`: a round of options for the next field, or the final."""
        field = concept.next_field(locked)
        rec = rec.with_(prompt=concept.compose(locked), data=rec.data.with_(concept=ConceptData(locked, field)))
        if field is None:
            return await self.prepare(rec, idx, "final", StageData(StageKind.FINAL, prev=prev))
        n = rec.settings.count or self.ctx.settings.funnel.concept_options
        options, source = await self.ctx.pipeline.concept_options(field, locked["subject"], locked, n)
        options = tuple(o for o in options if o)[:n] or (field,)
        data = StageData(StageKind.ROUND, field=field, options=options, options_source=str(source), prev=prev)
        return await self.prepare(rec, idx, field, data)

    async def commit(
        self, rec: SessionRecord, prepared: Prepared, *, adopt: Mapping[int, str] | None = None
    ) -> SessionRecord:
        """
        Write the stage, queue its jobs (batch id = stage id) and make it the session's current stage.

        `adopt`: speculative jobs (by spec index) that become the stage's own, whether queued, running or done;
        only the other specs are queued. Adopted done jobs are announced right after StageStarted.
        """
        ctx = self.ctx
        st = prepared.stage
        adopt = dict(adopt or {})
        state = transition(rec.state, Action.PLAN)
        await ctx.db.insert_stage(st.to_row())
        fresh = [s for i, s in enumerate(prepared.specs) if i not in adopt]
        await ctx.scheduler.submit(fresh, batch_id=st.id, reserve=list(adopt.values()), stage=(rec.id, st.id))
        data = rec.data.with_(stage_id=st.id, stage_name=st.name)
        rec = rec.with_(state=state, stage_index=st.idx, data=data)
        await ctx.save(rec)
        ctx.cancel_timer(rec.id)
        ctx.bus.publish(StageStarted(rec.id, st.id, st.name, st.idx, len(prepared.specs)))
        refused = []
        for i, job_id in adopt.items():
            if not await ctx.scheduler.lane.adopt(job_id, st.id, prepared.specs[i]):
                refused.append((i, job_id))
        if refused:
            # Failed or cancelled meanwhile: those images are queued as any other (then their places are freed).
            await ctx.scheduler.submit([prepared.specs[i] for i, _ in refused], batch_id=st.id)
            ctx.scheduler.lane.release(st.id, [job_id for _, job_id in refused])
        log.info(
            "session=%s stage=%s %s: %d images queued, %d adopted from speculation",
            rec.id, st.id[:8], st.name, len(prepared.specs) - len(adopt) + len(refused), len(adopt) - len(refused),
        )  # fmt: skip
        return rec

    async def close(self, st: StageRecord, status: StageStatus) -> None:
        """Leave a stage: DONE keeps it as history; CANCELLED also cancels its unfinished jobs."""
        fresh = await self.ctx.stage(st.id) or st
        was_generating = fresh.status is StageStatus.GENERATING
        await self.ctx.save_stage(fresh.moved(status))
        if was_generating:
            # The stage is marked first, so the BatchDone its cancellation causes is ignored.
            await self.ctx.scheduler.cancel_batch(st.batch_id or st.id)

    async def replan(self, rec: SessionRecord, st: StageRecord) -> SessionRecord:
        """Run the stage again with new seeds in place of the old one, whose unfinished jobs are cancelled."""
        data = st.data.with_(seed=None, deadline_at=None, labels=())
        unfinished = sum(1 for j in await self.ctx.db.stage_jobs(st.id) if not j.status.terminal)
        prepared = await self.prepare(rec, st.idx, st.name, data, replacing=unfinished)
        await self.close(st, StageStatus.CANCELLED)
        return await self.commit(rec, prepared)

    async def start_upscale(self, rec: SessionRecord, st: StageRecord, image_id: str) -> SessionRecord:
        """Follow `st` with a one-image upscale stage of `image_id`."""
        data = StageData(StageKind.UPSCALE, image_id=image_id, prev=st.id)
        prepared = await self.prepare(rec, st.idx + 1, "upscale", data)
        rec = await self.commit(rec, prepared)
        await self.close(st, StageStatus.DONE)
        return rec

    async def prune(self, view: StageView) -> None:
        """Delete the full-size files of the stage's unselected images (their thumbnails stay)."""
        chosen = set(view.selection)
        drop = [im.image for im in view.images if im.number not in chosen and im.image.path]
        if not drop:
            return
        await self.ctx.store.prune([Path(im.path) for im in drop])
        for im in drop:
            await self.ctx.db.clear_image_path(im.id)
        log.info("stage=%s pruned %d unselected images", view.id[:8], len(drop))

    def seed(self) -> int:
        """A random base seed for a stage."""
        # Leave room below 2**32 for the per-image offsets of a stage.
        return self._rng.randint(0, MAX_SEED - 1000)
